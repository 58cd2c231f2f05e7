"""One read of a weights file for its CID, its tensor digests and the store's copy.

:func:`hash_and_copy` reads the file once, block by block, into a small ring
of reused page-aligned buffers. Each block, as it is read, is

* handed to ``sink`` on the calling thread, in file order (the store writes its
  temporary file from it: the copy is the very bytes hashed, so it needs no
  read-back to be checked);
* cut into UnixFS chunks whose leaves are hashed on a pool of threads and
  handed to the tree in order (the same leaves as :func:`ledger.hashing.cid.file_cid`);
* cut along the byte ranges (``spans``) of the tensors, each range fed to its
  own sha256 in order: a tensor's bytes always go to the same single-thread
  *lane*, so different tensors are hashed at once and one tensor in order.

A buffer goes back to the ring once its leaves and its tensor pieces are
hashed. ``hashlib`` and ``os.preadv`` release the GIL, so reading, writing and
both hashes run on every core. The CID and the digests are bit-identical to
those of :func:`~ledger.hashing.cid.file_cid` and
:func:`~ledger.hashing.tensors.tensor_digest` (the tests compare them).
"""

from __future__ import annotations

import hashlib
import mmap
import os
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ledger.errors import InputError
from ledger.hashing._engine import (
    MAX_RING,
    READ_BLOCK,
    _hash_block,
    buffers,
    default_workers,
    page_buffer,
    pread_into,
)
from ledger.hashing._unixfs import DEFAULT_CHUNK_SIZE, DEFAULT_MAX_LINKS, Link, UnixFsHasher

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

__all__ = ["Sink", "hash_and_copy"]

Sink = Callable[[memoryview], None]
"""Called on the calling thread with each block read, in file order."""

Span = tuple[int, int]
"""A tensor's bytes in the file: (offset, length)."""


class _Ranges:
    """The sha256 of each span, fed piece by piece in file order."""

    def __init__(self, spans: Sequence[Span], hashers: Sequence[Any] | None = None) -> None:
        self.spans = list(spans)
        if hashers is not None and len(hashers) != len(self.spans):
            raise InputError(f"{len(hashers)} hashers for {len(self.spans)} spans")
        self.hashes = list(hashers) if hashers is not None else [hashlib.sha256() for _ in spans]
        # spans fed to one hasher share a lane (the first such span's number), so
        # their pieces reach it in file order
        first: dict[int, int] = {}
        self.lane = [first.setdefault(id(h), i) for i, h in enumerate(self.hashes)]
        # spans by start, to find those a block overlaps without scanning them all
        self.order = sorted(range(len(self.spans)), key=lambda i: self.spans[i][0])
        self.first = 0  # no span before order[first] reaches the blocks still to come

    def pieces(self, offset: int, length: int) -> list[tuple[int, int, int]]:
        """(span index, start in block, stop in block) of every span overlapping the block."""
        end = offset + length
        found: list[tuple[int, int, int]] = []
        while self.first < len(self.order):
            start, size = self.spans[self.order[self.first]]
            if start + size > offset or (size == 0 and start >= offset):
                break
            self.first += 1
        for position in range(self.first, len(self.order)):
            index = self.order[position]
            start, size = self.spans[index]
            if start >= end:
                break
            stop = start + size
            if stop > offset:
                found.append((index, max(start, offset) - offset, min(stop, end) - offset))
        return found

    def update(self, view: memoryview, pieces: list[tuple[int, int, int]]) -> None:
        for index, start, stop in pieces:
            with view[start:stop] as piece:
                self.hashes[index].update(piece)


def _read_block(fd: int, buffer: mmap.mmap, offset: int, length: int) -> memoryview:
    view = memoryview(buffer)
    filled = 0
    while filled < length:
        with view[filled:length] as rest:
            got = pread_into(fd, rest, offset + filled)
        if not got:
            view.release()
            raise InputError("the file shrank while it was being read; try again")
        filled += got
    block = view[:length]
    view.release()
    return block


def hash_and_copy(
    fd: int,
    size: int,
    *,
    spans: Sequence[Span] = (),
    sink: Sink | None = None,
    cid_version: int = 1,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_links: int = DEFAULT_MAX_LINKS,
    workers: int | None = None,
    read_block: int | None = None,
    hashers: Sequence[Any] | None = None,
) -> tuple[Link, list[bytes]]:
    """The UnixFS root link of the first ``size`` bytes of ``fd`` and the sha256 of
    each of ``spans`` (offset, length), from one read; ``sink`` sees every block.

    ``hashers`` (hashlib objects, one per span) replaces the fresh sha256 of
    each span: several spans may share one, which is then fed their pieces in
    file order (a tensor whose rows lie in several places), and the caller may
    keep feeding it after the call (the same tensor in the next file). The
    returned digests are then those hashers' digests so far.

    Spans must lie inside the ``size`` bytes (a span past them is an
    :class:`~ledger.errors.InputError`); they may overlap. ``workers`` threads
    hash (default: one per core); ``workers=1`` does everything on the calling
    thread, as do files of one block.
    """
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    block_size = read_block or max(chunk_size, READ_BLOCK // chunk_size * chunk_size)
    if block_size % chunk_size:
        raise InputError(f"read_block ({block_size}) must be a multiple of {chunk_size}")
    for start, length in spans:
        if start < 0 or length < 0 or start + length > size:
            raise InputError(f"a tensor's bytes ({start}+{length}) lie past the file's {size}")
    ranges = _Ranges(spans, hashers)
    hasher = UnixFsHasher(cid_version, chunk_size, max_links=max_links)
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    if workers == 1 or size <= block_size:
        buffer = buffers.take(block_size)  # reused: a small file costs no page faults
        offset = 0
        while offset < size:
            length = min(len(buffer), size - offset)
            with _read_block(fd, buffer, offset, length) as block:
                if sink is not None:
                    sink(block)
                for link in _hash_block(block, cid_version, chunk_size):
                    hasher.add_leaf(link)
                ranges.update(block, ranges.pieces(offset, length))
            offset += length
        buffers.give(buffer)
        return hasher.finalize_link(), [h.digest() for h in ranges.hashes]
    return _parallel(fd, size, ranges, hasher, sink, workers, block_size)


def _parallel(
    fd: int,
    size: int,
    ranges: _Ranges,
    hasher: UnixFsHasher,
    sink: Sink | None,
    workers: int,
    block_size: int,
) -> tuple[Link, list[bytes]]:
    from concurrent.futures import ThreadPoolExecutor

    cid_version, chunk_size = hasher.cid_version, hasher.chunk_size
    lanes: list[ThreadPoolExecutor] = [
        ThreadPoolExecutor(1, thread_name_prefix="ledger-tensor")
        for _ in range(min(workers, len(ranges.spans)))
    ]
    ring = min(2 * workers + 2, MAX_RING)
    free: list[mmap.mmap] = []
    allocated = 0
    pending: deque[tuple[Future[list[Link]], list[Future[None]], memoryview, mmap.mmap]] = deque()

    def collect() -> None:
        leaves, tensor_work, block, buffer = pending.popleft()
        for link in leaves.result():
            hasher.add_leaf(link)
        for work in tensor_work:
            work.result()
        block.release()
        free.append(buffer)

    pool = ThreadPoolExecutor(workers, thread_name_prefix="ledger-hash")
    try:
        offset = 0
        while offset < size:
            if not free and allocated < ring:
                free.append(page_buffer(block_size))
                allocated += 1
            if not free:
                collect()
            buffer = free.pop()
            length = min(block_size, size - offset)
            block = _read_block(fd, buffer, offset, length)
            if sink is not None:
                sink(block)
            leaves = pool.submit(_hash_block, block, cid_version, chunk_size)
            by_lane: dict[int, list[tuple[int, int, int]]] = {}
            for piece in ranges.pieces(offset, length):
                by_lane.setdefault(ranges.lane[piece[0]] % len(lanes), []).append(piece)
            tensor_work = [
                lanes[lane].submit(ranges.update, block, pieces) for lane, pieces in by_lane.items()
            ]
            pending.append((leaves, tensor_work, block, buffer))
            offset += length
        while pending:
            collect()
    except BaseException:
        for leaves, tensor_work, _, _ in pending:
            leaves.cancel()
            for work in tensor_work:
                work.cancel()
        raise
    finally:
        pool.shutdown(wait=True)
        for lane in lanes:
            lane.shutdown(wait=True)
    return hasher.finalize_link(), [h.digest() for h in ranges.hashes]
