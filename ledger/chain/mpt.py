"""Reading one key out of a Merkle-Patricia proof (Ethereum's hexary trie, yellow paper,
appendix D): what ``eth_getProof`` returns and what a receipts-trie proof holds.

Our own, not py-trie's ``HexaryTrie.get_from_proof``: py-trie imports the ``rlp``
package, which imports ``eth_utils`` and pydantic (see :mod:`ledger.chain.rlp`);
walking a proof is forty lines. Building a trie, which only ``ledger export``
does, still uses py-trie. The tests hold this walk to py-trie's on random tries,
for keys present and absent.
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger.chain import rlp
from ledger.errors import InputError
from ledger.hashing.keccak import keccak256

__all__ = ["EMPTY_ROOT", "ProofError", "value_from_proof"]

EMPTY_ROOT = keccak256(rlp.encode(b""))
"""The root of a trie with no keys."""


class ProofError(InputError):
    """A proof that does not lead from its root to an answer for the key."""


def value_from_proof(root: bytes, key: bytes, nodes: Sequence[bytes]) -> bytes:
    """The value stored under ``key`` in the trie whose root hash is ``root``, as the
    RLP-encoded ``nodes`` prove it; ``b""`` when they prove the key is absent.

    Raises :class:`ProofError` when a node the walk needs is not among ``nodes``,
    or a node is not a trie node.
    """
    if root == EMPTY_ROOT:
        return b""
    by_hash = {keccak256(node): node for node in nodes}
    path = _nibbles(key)
    reference: rlp.Item = root
    while True:
        node = _resolve(reference, by_hash)
        if len(node) == 17:  # a branch: sixteen children and a value
            if not path:
                return _value(node[16])
            reference, path = node[path[0]], path[1:]
            if reference == b"":
                return b""
            continue
        if len(node) != 2:
            raise ProofError(f"a trie node with {len(node)} items")
        prefix, is_leaf = _compact(node[0])
        if path[: len(prefix)] != prefix or (is_leaf and len(path) != len(prefix)):
            return b""  # the key parts ways with the trie here: it is absent
        if is_leaf:
            return _value(node[1])
        reference, path = node[1], path[len(prefix) :]


def _resolve(reference: rlp.Item, by_hash: dict[bytes, bytes]) -> list[rlp.Item]:
    """The node a parent points at: by its hash, or embedded when its encoding is
    shorter than 32 bytes."""
    if isinstance(reference, list):
        if len(rlp.encode(reference)) >= 32:
            raise ProofError("a trie node of 32 bytes or more embedded in its parent")
        return reference
    if len(reference) != 32:
        raise ProofError(f"a trie reference of {len(reference)} bytes")
    raw = by_hash.get(reference)
    if raw is None:
        raise ProofError(f"the proof lacks node 0x{reference.hex()}")
    node = rlp.decode(raw)
    if not isinstance(node, list):
        raise ProofError(f"node 0x{reference.hex()} is not a list")
    return node


def _value(item: rlp.Item) -> bytes:
    if not isinstance(item, bytes):
        raise ProofError("a trie value that is a list")
    return item


def _nibbles(key: bytes) -> tuple[int, ...]:
    return tuple(half for byte in key for half in (byte >> 4, byte & 0x0F))


def _compact(item: rlp.Item) -> tuple[tuple[int, ...], bool]:
    """The nibbles of a hex-prefix (compact) encoded path, and whether it ends a leaf."""
    if not isinstance(item, bytes) or not item:
        raise ProofError("a trie path that is not a byte string")
    flag = item[0] >> 4
    if flag > 3:
        raise ProofError(f"a trie path with flag {flag}")
    nibbles = _nibbles(item)
    odd = flag & 1
    if not odd and nibbles[1] != 0:
        raise ProofError("an even trie path with padding that is not zero")
    return nibbles[1:] if odd else nibbles[2:], bool(flag & 2)
