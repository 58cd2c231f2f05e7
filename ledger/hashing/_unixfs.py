"""The hashing half of the UnixFS file importer, as ``ipfs add --only-hash`` does it.

Written from the UnixFS and dag-pb specs (https://github.com/ipfs/specs,
https://ipld.io/specs/codecs/dag-pb/spec/) and checked against Kubo's published
test vectors. Parameters are Kubo's defaults: a fixed-size chunker of 256 KiB,
the *balanced* DAG layout with at most 174 links per node, and sha2-256.

The file is cut into chunks; each chunk becomes a leaf block. Leaves are grouped,
in order, 174 to a parent; parents are grouped the same way, level by level, until
one root is left. Every leaf sits at the same depth. A file of a single chunk is
that leaf alone (no parent), and an empty file is one empty leaf.

Two profiles:

* CIDv1 (``ipfs add --cid-version=1``): leaves are *raw* blocks (codec 0x55,
  the chunk bytes themselves); parents are dag-pb (0x70) nodes named by CIDv1.
* CIDv0 (``ipfs add``): leaves are dag-pb nodes whose UnixFS data carries the
  chunk; every block is named by a CIDv0.

A parent is a dag-pb ``PBNode``: its links (field 2) first, then its data
(field 1). Each ``PBLink`` holds the child's binary CID (field 1), an empty name
(field 2, written even though empty) and ``Tsize`` (field 3), the total size of
the child's serialized blocks, its own and all below it. The data is a UnixFS
``Data`` message: ``Type=File`` (field 1), the file size (field 3) and one
``blocksizes`` entry (field 4, unpacked) per child giving the file bytes under it.

Only the digests are computed; no block is stored and no bytes are interpreted.
Memory stays bounded: the hasher keeps at most one chunk of input and, per tree
level, the up to 174 links still waiting for their parent.

Folders (``ipfs add -r``) use two more node kinds, built by :func:`dag_node_link`:
a *directory* is a dag-pb node whose links name its entries (sorted by the
bytes of their names, as dag-pb requires) and whose data is
``UnixFS{Type: Directory}``; a *symlink* is a dag-pb node with no links and
``UnixFS{Type: Symlink, Data: target}``. Each directory link's ``Tsize`` is the
entry's whole subtree, as for files. Sharded (HAMT) directories are in
:mod:`ledger.hashing._hamt`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from ledger.errors import InputError
from ledger.hashing._multiformats import DAG_PB, RAW, Cid, varint_encode

DEFAULT_CHUNK_SIZE = 262144
"""Kubo's default fixed chunk size (``--chunker=size-262144``)."""

DEFAULT_MAX_LINKS = 174
"""Kubo's default number of links per file node (``Import.UnixFSFileMaxLinks``)."""

Chunk = bytes | bytearray | memoryview

_UNIXFS_FILE = 2  # UnixFS Data.DataType.File
_UNIXFS_DIRECTORY = 1  # UnixFS Data.DataType.Directory
_UNIXFS_SYMLINK = 4  # UnixFS Data.DataType.Symlink

# protobuf keys: (field number << 3) | wire type (0 varint, 2 length-delimited)
_PB_LINKS = 0x12  # PBNode.Links, field 2
_PB_DATA = 0x0A  # PBNode.Data, field 1
_LINK_HASH = 0x0A  # PBLink.Hash, field 1
_LINK_EMPTY_NAME = b"\x12\x00"  # PBLink.Name, field 2, always written, here empty
_LINK_TSIZE = 0x18  # PBLink.Tsize, field 3
_FS_TYPE_FILE = bytes((0x08, _UNIXFS_FILE))  # Data.Type, field 1
_FS_DATA = 0x12  # Data.Data, field 2
_FS_FILESIZE = 0x18  # Data.filesize, field 3
_FS_BLOCKSIZE = 0x20  # Data.blocksizes, field 4 (proto2, not packed)


@dataclass(frozen=True, slots=True)
class Link:
    """What a parent needs to know about one child block (leaf or subtree)."""

    cid: Cid
    tsize: int
    """Bytes of all serialized blocks in the child's subtree (the PBLink Tsize)."""
    filesize: int
    """File bytes the child's subtree holds (the parent's ``blocksizes`` entry)."""


def _check_cid_version(cid_version: int) -> None:
    if cid_version not in (0, 1):
        raise InputError(
            f"cid_version must be 0 or 1, got {cid_version!r}",
            hint="1 matches 'ipfs add --cid-version=1', 0 matches plain 'ipfs add'",
        )


def _field(key: int, payload: bytes) -> bytes:
    return bytes((key,)) + varint_encode(len(payload)) + payload


def leaf_link(chunk: Chunk, cid_version: int = 1) -> Link:
    """Hash one chunk as a leaf block. Pure and thread-safe (hashlib drops the GIL).

    CIDv1: a raw block, the chunk itself. CIDv0: a dag-pb node with no links whose
    data is ``UnixFS{Type: File, Data: chunk, filesize: len(chunk)}``; an empty
    chunk (the empty file) has no ``Data`` field but still ``filesize: 0``.
    """
    size = len(chunk)
    if cid_version == 1:
        return Link(Cid.from_digest(hashlib.sha256(chunk).digest(), RAW, 1), size, size)
    _check_cid_version(cid_version)
    data_field = bytes((_FS_DATA,)) + varint_encode(size) if size else b""
    unixfs_head = _FS_TYPE_FILE + data_field
    unixfs_tail = bytes((_FS_FILESIZE,)) + varint_encode(size)
    unixfs_len = len(unixfs_head) + size + len(unixfs_tail)
    node_head = bytes((_PB_DATA,)) + varint_encode(unixfs_len) + unixfs_head
    digest = hashlib.sha256(node_head)
    digest.update(chunk)
    digest.update(unixfs_tail)
    block_size = len(node_head) + size + len(unixfs_tail)
    return Link(Cid.from_digest(digest.digest(), DAG_PB, 0), block_size, size)


def encode_file_node(children: Sequence[Link]) -> bytes:
    """Serialize the dag-pb node that is the parent of ``children`` (byte-exact with Kubo)."""
    filesize = sum(child.filesize for child in children)
    unixfs = bytearray(_FS_TYPE_FILE)
    unixfs.append(_FS_FILESIZE)
    unixfs += varint_encode(filesize)
    for child in children:
        unixfs.append(_FS_BLOCKSIZE)
        unixfs += varint_encode(child.filesize)
    node = bytearray()
    for child in children:
        pb_link = (
            _field(_LINK_HASH, child.cid.to_bytes())
            + _LINK_EMPTY_NAME
            + bytes((_LINK_TSIZE,))
            + varint_encode(child.tsize)
        )
        node += _field(_PB_LINKS, pb_link)
    node += _field(_PB_DATA, bytes(unixfs))
    return bytes(node)


def node_link(children: Sequence[Link], cid_version: int = 1) -> Link:
    """Build and hash the parent of ``children``; return the link to it."""
    _check_cid_version(cid_version)
    block = encode_file_node(children)
    cid = Cid.from_digest(hashlib.sha256(block).digest(), DAG_PB, cid_version)
    tsize = len(block) + sum(child.tsize for child in children)
    return Link(cid, tsize, sum(child.filesize for child in children))


DIRECTORY_DATA = bytes((0x08, _UNIXFS_DIRECTORY))
"""The UnixFS data of a plain directory: ``Type=Directory`` and nothing else."""


def encode_pb_node(links: Sequence[tuple[bytes, Link]], data: bytes) -> bytes:
    """A dag-pb node with named ``links`` (sorted here by name bytes) and ``data``."""
    node = bytearray()
    for name, child in sorted(links, key=lambda entry: entry[0]):
        pb_link = (
            _field(_LINK_HASH, child.cid.to_bytes())
            + _field(0x12, name)
            + bytes((_LINK_TSIZE,))
            + varint_encode(child.tsize)
        )
        node += _field(_PB_LINKS, pb_link)
    node += _field(_PB_DATA, data)
    return bytes(node)


def dag_node_link(links: Sequence[tuple[bytes, Link]], data: bytes, cid_version: int) -> Link:
    """Build and hash a dag-pb node (directory, shard or symlink); return the link to it.

    The link's ``tsize`` is the node's block plus everything below it;
    ``filesize`` is 0 (a directory has no file bytes of its own).
    """
    _check_cid_version(cid_version)
    block = encode_pb_node(links, data)
    cid = Cid.from_digest(hashlib.sha256(block).digest(), DAG_PB, cid_version)
    return Link(cid, len(block) + sum(child.tsize for _, child in links), 0)


def symlink_link(target: bytes, cid_version: int) -> Link:
    """The UnixFS symlink node ``ipfs add -r`` makes for a link pointing at ``target``."""
    data = bytes((0x08, _UNIXFS_SYMLINK)) + _field(_FS_DATA, target)
    return dag_node_link((), data, cid_version)


class UnixFsHasher:
    """Streaming UnixFS hasher: feed bytes with :meth:`update`, get the CID from :meth:`finalize`.

    Chunks are hashed as soon as they are complete, and a parent as soon as it has
    its full set of links, so memory stays at one chunk plus ``max_links`` links
    per level. Code that hashes leaves elsewhere (e.g. on threads, with
    :func:`leaf_link`) can hand the results, in file order, to :meth:`add_leaf`
    instead of calling :meth:`update`; the two must not be mixed.
    """

    def __init__(
        self,
        cid_version: int = 1,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        *,
        max_links: int = DEFAULT_MAX_LINKS,
    ) -> None:
        _check_cid_version(cid_version)
        if chunk_size < 1:
            raise InputError(f"chunk_size must be a positive number of bytes, got {chunk_size}")
        if max_links < 2:
            raise InputError(f"max_links must be at least 2, got {max_links}")
        self.cid_version = cid_version
        self.chunk_size = chunk_size
        self.max_links = max_links
        self._buffer = bytearray()
        self._levels: list[list[Link]] = [[]]
        self._leaves = 0
        self._result: Link | None = None

    def update(self, data: Chunk) -> None:
        """Append ``data`` to the file being hashed."""
        self._check_open()
        view = memoryview(data).cast("B")
        size = self.chunk_size
        pos = 0
        if self._buffer:
            take = min(size - len(self._buffer), len(view))
            self._buffer += view[:take]
            pos = take
            if len(self._buffer) < size:
                return
            self.add_leaf(leaf_link(self._buffer, self.cid_version))
            self._buffer = bytearray()
        end = len(view)
        while end - pos >= size:
            self.add_leaf(leaf_link(view[pos : pos + size], self.cid_version))
            pos += size
        if pos < end:
            self._buffer += view[pos:]

    def add_leaf(self, link: Link) -> None:
        """Append an already hashed leaf (from :func:`leaf_link`) to the file."""
        self._check_open()
        self._leaves += 1
        self._push(0, link)

    def finalize(self) -> Cid:
        """Finish the file and return its root CID (idempotent)."""
        return self.finalize_link().cid

    def finalize_link(self) -> Link:
        """Like :meth:`finalize`, with the root's total block size and file size."""
        if self._result is None:
            if self._buffer:
                self.add_leaf(leaf_link(self._buffer, self.cid_version))
                self._buffer = bytearray()
            self._result = self._collapse()
        return self._result

    def _check_open(self) -> None:
        if self._result is not None:
            raise InputError("this UnixFsHasher was already finalized; start a new one")

    def _push(self, level: int, link: Link) -> None:
        # A level that reaches max_links is complete: its parent can be built now.
        while True:
            pending = self._levels[level]
            pending.append(link)
            if len(pending) < self.max_links:
                return
            link = node_link(pending, self.cid_version)
            self._levels[level] = []
            level += 1
            if level == len(self._levels):
                self._levels.append([])

    def _collapse(self) -> Link:
        if self._leaves == 0:
            return leaf_link(b"", self.cid_version)
        level = 0
        while True:
            pending = self._levels[level]
            is_top = not any(self._levels[level + 1 :])
            if is_top and len(pending) == 1:
                return pending[0]
            if pending:
                # A partial group still gets its own parent, so all leaves keep one depth.
                self._levels[level] = []
                if level + 1 == len(self._levels):
                    self._levels.append([])
                self._push(level + 1, node_link(pending, self.cid_version))
            level += 1
