"""The file hashing engine: UnixFS leaves hashed on every core, the file read once.

One thread reads the file in large blocks (:data:`READ_BLOCK` bytes, a whole
number of chunks) into a small ring of reused buffers; a pool of worker threads
hashes the chunks of each block into leaf links (:func:`leaf_link`); the calling
thread hands the links, in file order, to a :class:`UnixFsHasher`, which builds
the tree. ``hashlib`` releases the GIL while it hashes a large buffer and
``readinto`` releases it while it reads, so reading and hashing overlap and the
workers run in parallel. Memory is bounded by the ring of buffers:
``2 * workers + 1`` blocks, at most :data:`MAX_RING` (96 MiB), whatever the
file size. With ``workers=1`` the same blocks are hashed
on the calling thread, with no pool: the reference path that tests compare
against.

The result does not depend on the number of workers or the block size: the
tree only sees the leaves, in order.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from ledger.errors import InputError
from ledger.hashing._unixfs import DEFAULT_CHUNK_SIZE, Link, UnixFsHasher, leaf_link

READ_BLOCK = 32 * DEFAULT_CHUNK_SIZE
"""Bytes read at a time (8 MiB): large reads, and enough chunks per task to keep
the per-task overhead negligible."""

MAX_RING = 12
"""Most read buffers in flight: bounds memory on machines with many cores."""

Progress = Callable[[int], None]
"""Called on the calling thread with the number of bytes just hashed."""


class ReadsInto(Protocol):
    """A binary stream that can fill a caller's buffer (e.g. ``open(path, "rb", buffering=0)``)."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _hash_block(block: memoryview, cid_version: int, chunk_size: int) -> list[Link]:
    return [
        leaf_link(block[start : start + chunk_size], cid_version)
        for start in range(0, len(block), chunk_size)
    ]


def _read_full(stream: ReadsInto, buffer: bytearray) -> int:
    """Fill ``buffer`` from ``stream``; fewer bytes only at the end of the file."""
    view = memoryview(buffer)
    filled = 0
    while filled < len(buffer):
        got = stream.readinto(view[filled:])
        if not got:
            break
        filled += got
    return filled


def hash_stream_parallel(
    stream: ReadsInto,
    cid_version: int = 1,
    *,
    workers: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    read_block: int | None = None,
    progress: Progress | None = None,
) -> Link:
    """The root link of everything ``stream`` yields (an unbuffered binary file is best).

    ``workers`` threads hash (default: one per core); ``workers=1`` hashes on
    the calling thread. ``read_block`` must be a multiple of ``chunk_size``.
    """
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    block_size = read_block or max(chunk_size, READ_BLOCK // chunk_size * chunk_size)
    if block_size % chunk_size:
        raise InputError(
            f"read_block ({block_size}) must be a multiple of the chunk size ({chunk_size})"
        )
    hasher = UnixFsHasher(cid_version, chunk_size)
    if workers == 1:
        buffer = bytearray(block_size)
        view = memoryview(buffer)
        while filled := _read_full(stream, buffer):
            for link in _hash_block(view[:filled], cid_version, chunk_size):
                hasher.add_leaf(link)
            if progress is not None:
                progress(filled)
        return hasher.finalize_link()

    ring = min(2 * workers + 1, MAX_RING)
    free: list[bytearray] = []
    allocated = 0
    pending: deque[tuple[Future[list[Link]], bytearray, int]] = deque()

    def collect() -> None:
        future, buffer, filled = pending.popleft()
        for link in future.result():
            hasher.add_leaf(link)
        free.append(buffer)
        if progress is not None:
            progress(filled)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ledger-hash") as pool:
        try:
            while True:
                if not free and allocated < ring:
                    free.append(bytearray(block_size))
                    allocated += 1
                if not free:
                    collect()
                buffer = free.pop()
                filled = _read_full(stream, buffer)
                if not filled:
                    free.append(buffer)
                    break
                task = pool.submit(
                    _hash_block, memoryview(buffer)[:filled], cid_version, chunk_size
                )
                pending.append((task, buffer, filled))
                if filled < block_size:
                    break
            while pending:
                collect()
        except BaseException:
            for future, _, _ in pending:
                future.cancel()
            raise
    return hasher.finalize_link()


MAP_WINDOW = 4 * READ_BLOCK
"""Bytes mapped at a time (32 MiB) by :func:`hash_file_mapped`."""

MAPPED_WINDOWS = 2
"""Windows mapped at once: one being hashed while the next is queued."""


def hash_file_mapped(
    fd: int,
    size: int,
    cid_version: int = 1,
    *,
    workers: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Progress | None = None,
) -> Link:
    """The root link of a file hashed straight from its page-cache pages.

    The file is mapped :data:`MAP_WINDOW` bytes at a time (at most
    :data:`MAPPED_WINDOWS` windows, so resident memory stays bounded) and the
    workers hash the mapped chunks in place: no copy into buffers, which on a
    small machine costs as much CPU as a hash pass. Only for files nobody
    truncates meanwhile: touching a page past a new end of file is a SIGBUS, so
    the library's own writers use :func:`hash_stream_parallel` instead.
    """
    import mmap

    # prefault each window in one go: far cheaper than a fault per page
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
    workers = default_workers() if workers is None else workers
    window = max(chunk_size, MAP_WINDOW // chunk_size * chunk_size)
    if window % mmap.ALLOCATIONGRANULARITY:
        raise InputError(f"map window {window} is not a multiple of the page size")
    hasher = UnixFsHasher(cid_version, chunk_size)
    pending: deque[tuple[mmap.mmap, memoryview, list[Future[list[Link]]], int]] = deque()

    def collect() -> None:
        mapped, view, tasks, length = pending.popleft()
        for task in tasks:
            for link in task.result():
                hasher.add_leaf(link)
        view.release()
        mapped.close()
        if progress is not None:
            progress(length)

    block = READ_BLOCK // chunk_size * chunk_size or chunk_size
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ledger-hash") as pool:
        try:
            for offset in range(0, size, window):
                length = min(window, size - offset)
                mapped = mmap.mmap(fd, length, flags=flags, offset=offset, prot=mmap.PROT_READ)
                view = memoryview(mapped)
                tasks = [
                    pool.submit(_hash_block, view[start : start + block], cid_version, chunk_size)
                    for start in range(0, length, block)
                ]
                pending.append((mapped, view, tasks, length))
                while len(pending) > MAPPED_WINDOWS:
                    collect()
            while pending:
                collect()
        except BaseException:
            for _, _, tasks, _ in pending:
                for task in tasks:
                    task.cancel()
            raise
    return hasher.finalize_link()
