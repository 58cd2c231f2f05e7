"""Sharded UnixFS directories (HAMT), as Kubo builds them for large folders.

A directory whose node would be too large is stored as a hash array mapped
trie instead of one dag-pb node (UnixFS spec, "HAMTDirectory"; Kubo's
implementation is boxo's ``ipld/unixfs/hamt``). Every entry name is hashed
with murmur3-x64-64 (multihash code 0x22: the first 64-bit half of
MurmurHash3_x64_128, seed 0, read big-endian). With a fanout of 256 each level
of the trie consumes the next 8 bits of that hash, most significant first, to
pick one of 256 slots:

* a slot holding one entry is a link named ``XX`` + the entry's name, where
  ``XX`` is the slot in upper-case hexadecimal, padded to the width of
  ``fanout - 1``, pointing at the entry itself;
* a slot holding several entries is a link named ``XX`` to a child shard that
  places them by the next bits.

A shard node's data is ``UnixFS{Type: HAMTShard, Data: bitfield, hashType:
0x22, fanout}``; the bitfield is the number with bit ``i`` set for each used
slot ``i``, written big-endian in as few bytes as it needs (leading zero bytes
dropped, as Go's ``big.Int.Bytes`` does: Kubo's sharness vector t0260 holds
only with that form). The trie depends only on the set of names, not on the order they were
added, so it can be built in one go from the full listing.

Whether a directory is sharded at all is decided in :mod:`ledger.hashing.cid`
(Kubo's size estimate against its threshold).
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger.errors import InputError
from ledger.hashing._multiformats import varint_encode
from ledger.hashing._unixfs import Link, dag_node_link

MURMUR3_X64_64 = 0x22
"""The multihash code of the HAMT's name hash, written in every shard node."""

DEFAULT_FANOUT = 256
"""Kubo's ``Import.UnixFSHAMTDirectoryMaxFanout`` (boxo's ``DefaultShardWidth``)."""

_HASH_BITS = 64


def name_hash(name: bytes) -> int:
    """murmur3-x64-64 of ``name`` as a 64-bit integer (the bits the trie consumes)."""
    import mmh3  # loaded only for sharded folders

    high, _ = mmh3.hash64(name, seed=0, x64arch=True, signed=False)
    return int(high) & 0xFFFF_FFFF_FFFF_FFFF  # unsigned even where ``signed`` is not honoured


def shard_data(bitfield: int, fanout: int) -> bytes:
    """The UnixFS data of a shard node with the used slots in ``bitfield``."""
    bits = bitfield.to_bytes((bitfield.bit_length() + 7) // 8, "big")
    return (
        bytes((0x08, 5))  # Type = HAMTShard
        + bytes((0x12,))
        + varint_encode(len(bits))
        + bits
        + bytes((0x28,))  # hashType, field 5
        + varint_encode(MURMUR3_X64_64)
        + bytes((0x30,))  # fanout, field 6
        + varint_encode(fanout)
    )


def shard_link(
    entries: Sequence[tuple[bytes, Link]],
    cid_version: int,
    *,
    fanout: int = DEFAULT_FANOUT,
) -> Link:
    """The root of the sharded directory holding ``entries`` (name bytes, link)."""
    if fanout < 8 or fanout & (fanout - 1) or fanout % 8:
        raise InputError(f"HAMT fanout must be a power of two of at least 8, got {fanout}")
    hashed = [(name_hash(name), name, link) for name, link in entries]
    return _shard(hashed, 0, cid_version, fanout)


def _shard(
    entries: list[tuple[int, bytes, Link]], depth: int, cid_version: int, fanout: int
) -> Link:
    bits = fanout.bit_length() - 1
    shift = _HASH_BITS - bits * (depth + 1)
    if shift < 0:
        names = ", ".join(repr(name) for _, name, _ in entries[:3])
        raise InputError(
            f"the entries {names} have the same HAMT hash: the folder cannot be sharded"
        )
    width = len(f"{fanout - 1:X}")
    slots: dict[int, list[tuple[int, bytes, Link]]] = {}
    for entry in entries:
        slots.setdefault((entry[0] >> shift) & (fanout - 1), []).append(entry)
    links: list[tuple[bytes, Link]] = []
    bitfield = 0
    for slot, group in slots.items():
        bitfield |= 1 << slot
        prefix = f"{slot:0{width}X}".encode("ascii")
        if len(group) == 1:
            _, name, link = group[0]
            links.append((prefix + name, link))
        else:
            links.append((prefix, _shard(group, depth + 1, cid_version, fanout)))
    return dag_node_link(links, shard_data(bitfield, fanout), cid_version)
