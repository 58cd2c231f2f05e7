"""IPFS content identifiers (CIDs) for files, equal to what ``ipfs add`` prints.

A CID names content by its hash. For a file, IPFS does not hash the bytes in one
go: the UnixFS importer cuts the file into 256 KiB chunks, hashes each as a leaf
block, and links the leaves into a balanced tree of dag-pb nodes (at most 174
links each); the CID is the hash of the tree's root block. So the CID depends on
the file's bytes *and* on those import settings, which is why ledger names the
settings it uses with a scheme string stored beside every CID:

* ``cidv1-raw-sha256-256k`` (:data:`CIDV1_SCHEME`, the default): what
  ``ipfs add --cid-version=1 --only-hash FILE`` prints, a ``bafy...`` (or, for a
  file of at most one chunk, ``bafk...``) CID. Leaves are raw blocks.
* ``cidv0-dagpb-sha256-256k`` (:data:`CIDV0_SCHEME`): what plain
  ``ipfs add --only-hash FILE`` prints with Kubo's default settings, a ``Qm...``
  CID. Leaves are dag-pb nodes wrapping the chunk.

These functions compute the very same blocks Kubo (formerly go-ipfs) would
build, byte for byte, and hash them with sha2-256, but store nothing and talk
to no IPFS node. They treat the file as opaque bytes: nothing is unpickled,
parsed or executed. :func:`file_cid` hashes the file with the engine in
:mod:`ledger.hashing._engine`: every core reads and hashes its own blocks into a
reused buffer, memory bounded whatever the file size; ``workers=1``
gives the single-threaded path, with the same result. The result
is checked against public test vectors from Kubo and other IPFS projects in
``tests/hashing/test_cid_vectors.py``.
"""

from __future__ import annotations

import os
import stat

from ledger.errors import FileMissingError, InputError
from ledger.hashing._engine import (
    READ_BLOCK,
    Progress,
    default_workers,
    hash_file_parallel,
    hash_stream_parallel,
)
from ledger.hashing._multiformats import DAG_PB, RAW, Cid
from ledger.hashing._unixfs import DEFAULT_CHUNK_SIZE, UnixFsHasher

__all__ = [
    "CIDV0_SCHEME",
    "CIDV1_SCHEME",
    "DAG_PB",
    "DEFAULT_CHUNK_SIZE",
    "RAW",
    "Cid",
    "Progress",
    "UnixFsHasher",
    "bytes_cid",
    "default_workers",
    "file_cid",
    "scheme_for",
]

CIDV1_SCHEME = "cidv1-raw-sha256-256k"
"""``ipfs add --cid-version=1``: CIDv1, raw leaves, sha2-256, 256 KiB chunks, balanced."""

CIDV0_SCHEME = "cidv0-dagpb-sha256-256k"
"""``ipfs add`` (Kubo defaults): CIDv0, dag-pb leaves, sha2-256, 256 KiB chunks, balanced."""

_SCHEMES = {1: CIDV1_SCHEME, 0: CIDV0_SCHEME}


def scheme_for(cid_version: int) -> str:
    """The scheme name recorded next to a CID computed with ``cid_version``."""
    try:
        return _SCHEMES[cid_version]
    except (KeyError, TypeError):
        raise InputError(
            f"cid_version must be 0 or 1, got {cid_version!r}",
            hint=f"1 gives {CIDV1_SCHEME}, 0 gives {CIDV0_SCHEME}",
        ) from None


def bytes_cid(data: bytes, *, cid_version: int = 1) -> Cid:
    """The CID ``ipfs add`` would give a file holding exactly ``data``."""
    hasher = UnixFsHasher(cid_version)
    hasher.update(data)
    return hasher.finalize()


def file_cid(
    path: str | os.PathLike[str],
    *,
    cid_version: int = 1,
    workers: int | None = None,
    progress: Progress | None = None,
) -> Cid:
    """The CID ``ipfs add --only-hash`` would give the regular file at ``path``.

    Blocks are read and hashed on ``workers`` threads (default: one per core;
    ``1`` reads and hashes on the calling thread, the reference path).
    ``progress``, if given, is called on the calling thread with the number
    of bytes hashed since its last call.

    Raises :class:`~ledger.errors.FileMissingError` if ``path`` does not exist or
    is not a regular file (e.g. a directory), and
    :class:`~ledger.errors.InputError` if it cannot be read.
    """
    scheme_for(cid_version)  # refuses an unknown version before touching the file
    shown = os.fspath(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FileMissingError(f"no file at {shown!r}") from None
    except OSError as exc:
        raise InputError(f"cannot read {shown!r}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise FileMissingError(
            f"{shown!r} is {kind}; a CID is computed for one regular file",
        )
    try:
        with open(path, "rb", buffering=0) as stream:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(stream.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            if workers == 1 or info.st_size <= READ_BLOCK:
                # the reference path; for one block, threads and a full-size buffer cost more
                chunks = max(1, -(-min(info.st_size, READ_BLOCK) // DEFAULT_CHUNK_SIZE))
                root = hash_stream_parallel(
                    stream,
                    cid_version,
                    workers=1 if workers is None or workers >= 1 else workers,
                    read_block=chunks * DEFAULT_CHUNK_SIZE,
                    progress=progress,
                )
            else:
                root = hash_file_parallel(
                    stream.fileno(), info.st_size, cid_version, workers=workers, progress=progress
                )
            if os.fstat(stream.fileno()).st_size != info.st_size:
                raise InputError(f"{shown!r} changed size while it was being hashed; try again")
    except FileNotFoundError:
        raise FileMissingError(f"{shown!r} disappeared while it was being read") from None
    except OSError as exc:
        raise InputError(f"cannot read {shown!r}: {exc.strerror or exc}") from exc
    return root.cid
