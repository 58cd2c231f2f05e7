"""The file hashing engine: UnixFS leaves hashed on every core, the file read once.

Two entry points build the same tree from the same leaves (:func:`leaf_link`),
handed in file order to a :class:`UnixFsHasher`:

* :func:`hash_file_parallel`, for regular files (what :func:`ledger.hashing.cid.file_cid`
  uses): each worker thread reads its own blocks of :data:`READ_BLOCK` bytes with
  positional reads into a buffer it reuses, and hashes their chunks. ``preadv`` and
  ``hashlib`` both release the GIL, so the page-cache copy and the hashing run on
  every core at once. Memory is one block per worker.
* :func:`hash_stream_parallel`, for anything with ``readinto`` (pipes included):
  one thread reads into a small ring of reused buffers (``2 * workers + 1``
  blocks, at most :data:`MAX_RING`) and a pool hashes them. With ``workers=1``
  the same blocks are hashed on the calling thread, with no pool: the
  single-threaded reference path that tests compare against.

The result does not depend on the number of workers or the block size: the
tree only sees the leaves, in order.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ledger.errors import InputError
from ledger.hashing._unixfs import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_LINKS,
    Link,
    UnixFsHasher,
    leaf_link,
)

if TYPE_CHECKING:
    from concurrent.futures import Future

READ_BLOCK = 32 * DEFAULT_CHUNK_SIZE
"""Bytes read at a time (8 MiB): large reads, and enough chunks per task to keep
the per-task overhead negligible."""

MAX_RING = 12
"""Most read buffers in flight: bounds memory on machines with many cores."""

Progress = Callable[[int], None]
"""Called on the calling thread with the number of bytes just hashed."""


class Whole(Protocol):
    """A hash of the whole file (``hashlib.sha256()``), fed its blocks in file order."""

    def update(self, data: memoryview, /) -> None: ...


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


def _block_size(read_block: int | None, chunk_size: int) -> int:
    block = read_block or max(chunk_size, READ_BLOCK // chunk_size * chunk_size)
    if block % chunk_size:
        raise InputError(
            f"read_block ({block}) must be a multiple of the chunk size ({chunk_size})"
        )
    return block


def page_buffer(size: int) -> mmap.mmap:
    """A writable buffer of ``size`` bytes that starts on a page boundary.

    Read buffers are page-aligned on purpose: the kernel copies page-cache pages
    into a buffer that starts mid-page (as a large ``bytearray`` from ``malloc``
    does, 16 bytes past a page) up to five times slower on the AMD cores of this
    project's machines (1 GiB: 0.5 s of system time instead of 0.1 s).

    Private, not Python's default shared mapping: a process forked from this one
    (a data loader's worker) gets a copy-on-write snapshot at most, and nothing it
    writes reaches the bytes being hashed here.
    """
    return mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE)


class BufferPool:
    """Page buffers kept for reuse, at most ``keep`` of each size.

    A fresh anonymous mapping costs a page fault, and the kernel's zeroing, for
    every 4 KiB the first read touches: for a 1 MiB checkpoint that, with the
    unmapping, was more CPU than hashing it (docs/benchmarks.md, small runs:
    where a checkpoint's CPU goes). The worker hashes every
    checkpoint, most of them small, so its reads of files of one block borrow
    buffers instead (a big file's ring is allocated per file: its faults are
    nothing beside its hashing). At most ``keep`` buffers of a size, and of them
    only the pages once read into, stay resident between calls.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.reset()

    def reset(self) -> None:
        """Forget every kept buffer (in a forked child: its lock may have been held
        by a thread of the parent that the child does not have)."""
        self._free: dict[int, list[mmap.mmap]] = {}
        self._lock = threading.Lock()

    def take(self, size: int) -> mmap.mmap:
        """A buffer of ``size`` bytes (size at least 1): a kept one, else a new one."""
        with self._lock:
            kept = self._free.get(size)
            if kept:
                return kept.pop()
        return page_buffer(size)

    def give(self, buffer: mmap.mmap) -> None:
        """Return ``buffer`` (no view of it may outlive this call's caller's use)."""
        with self._lock:
            kept = self._free.setdefault(len(buffer), [])
            if len(kept) < self.keep:
                kept.append(buffer)
                return
        buffer.close()


buffers = BufferPool(keep=4)
"""The read buffers :func:`~ledger.hashing._onepass.hash_and_copy` borrows for files of
one block (at most 4 x 8 MiB resident: the outbox stores on up to 8 threads)."""
os.register_at_fork(after_in_child=buffers.reset)


def _read_full(stream: ReadsInto, buffer: mmap.mmap) -> int:
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
    max_links: int = DEFAULT_MAX_LINKS,
    whole: Whole | None = None,
) -> Link:
    """The root link of everything ``stream`` yields (an unbuffered binary file is best).

    ``workers`` threads hash (default: one per core); ``workers=1`` hashes on
    the calling thread. ``read_block`` must be a multiple of ``chunk_size``.
    ``whole``, if given, is fed every byte in order (e.g. the file's sha256).
    """
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    block_size = _block_size(read_block, chunk_size)
    hasher = UnixFsHasher(cid_version, chunk_size, max_links=max_links)
    if workers == 1:
        buffer = page_buffer(block_size)
        view = memoryview(buffer)
        while filled := _read_full(stream, buffer):
            for link in _hash_block(view[:filled], cid_version, chunk_size):
                hasher.add_leaf(link)
            if whole is not None:
                whole.update(view[:filled])
            if progress is not None:
                progress(filled)
        return hasher.finalize_link()

    from concurrent.futures import ThreadPoolExecutor

    ring = min(2 * workers + 1, MAX_RING)
    free: list[mmap.mmap] = []
    allocated = 0
    pending: deque[tuple[Future[list[Link]], mmap.mmap, int]] = deque()

    def collect() -> None:
        future, buffer, filled = pending.popleft()
        for link in future.result():
            hasher.add_leaf(link)
        if whole is not None:
            whole.update(memoryview(buffer)[:filled])
        free.append(buffer)
        if progress is not None:
            progress(filled)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ledger-hash") as pool:
        try:
            while True:
                if not free and allocated < ring:
                    free.append(page_buffer(block_size))
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


AHEAD_PER_WORKER = 3
"""Blocks queued per worker by :func:`hash_file_parallel`, so no worker waits for work."""


class _Truncated(Exception):
    """A positional read hit the end of the file before the size seen at the start."""


def hash_file_parallel(
    fd: int,
    size: int,
    cid_version: int = 1,
    *,
    workers: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    read_block: int | None = None,
    progress: Progress | None = None,
    max_links: int = DEFAULT_MAX_LINKS,
    whole: Whole | None = None,
) -> Link:
    """The root link of the first ``size`` bytes of the regular file open as ``fd``.

    Every worker thread takes the next block, reads it with positional reads
    (``os.preadv``, which releases the GIL) into a buffer it reuses, and hashes
    it: both the page-cache copy and the hashing are spread over the cores, and
    no thread waits on a single reader. The calling thread hands the links to
    the tree in file order; workers stay at most :data:`AHEAD_PER_WORKER`
    blocks each ahead of it. Memory is one block per worker plus a few links
    per block done ahead, whatever the file size. A file that shrinks while it
    is read raises :class:`~ledger.errors.InputError` (positional reads cannot
    fault, unlike a memory map). Plain threads, not an executor:
    ``concurrent.futures`` would load ``logging`` before the first block is
    read, at the start of every ``ledger verify``.

    ``whole``, if given, is fed every block in file order by the worker that read
    it, once its leaves are hashed and the block before has been fed: the file's
    sha256 runs on one lane at a time but beside the other workers' reads and
    leaves, with no second read of the file.
    """
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    block = _block_size(read_block, chunk_size)
    hasher = UnixFsHasher(cid_version, chunk_size, max_links=max_links)
    blocks = -(-size // block)
    ahead = AHEAD_PER_WORKER * workers
    done: dict[int, list[Link] | BaseException] = {}
    state = threading.Condition()
    handed_out = 0  # blocks given to workers
    collected = 0  # blocks whose links went to the tree
    fed = 0  # blocks fed to ``whole``
    stop = False

    def read_and_hash(view: memoryview, offset: int, length: int) -> list[Link]:
        filled = 0
        while filled < length:
            with view[filled:length] as rest:
                got = pread_into(fd, rest, offset + filled)
            if not got:
                raise _Truncated
            filled += got
        with view[:length] as data:
            return _hash_block(data, cid_version, chunk_size)

    def feed(view: memoryview, index: int, length: int) -> None:
        nonlocal fed
        with state:
            while not stop and fed < index:
                state.wait()
            if stop:
                return
        assert whole is not None
        with view[:length] as data:
            whole.update(data)  # outside the lock: hashlib releases the GIL
        with state:
            fed = index + 1
            state.notify_all()

    def work() -> None:
        nonlocal handed_out
        with memoryview(page_buffer(block)) as view:
            while True:
                with state:
                    while not stop and handed_out < blocks and handed_out >= collected + ahead:
                        state.wait()
                    if stop or handed_out >= blocks:
                        return
                    index = handed_out
                    handed_out += 1
                offset = index * block
                result: list[Link] | BaseException
                length = min(block, size - offset)
                try:
                    result = read_and_hash(view, offset, length)
                    if whole is not None:
                        feed(view, index, length)
                except BaseException as exc:  # noqa: BLE001  raised on the calling thread
                    result = exc
                with state:
                    done[index] = result
                    state.notify_all()

    threads = [
        threading.Thread(target=work, name=f"ledger-hash-{n}", daemon=True)
        for n in range(min(workers, blocks))
    ]
    for thread in threads:
        thread.start()
    try:
        for index in range(blocks):
            with state:
                while index not in done:
                    state.wait()
                result = done.pop(index)
                collected = index + 1
                state.notify_all()
            if isinstance(result, BaseException):
                raise result
            for link in result:
                hasher.add_leaf(link)
            if progress is not None:
                progress(min(block, size - index * block))
    except _Truncated:
        raise InputError("the file shrank while it was being hashed; try again") from None
    finally:
        with state:
            stop = True
            state.notify_all()
        for thread in threads:
            thread.join()
    return hasher.finalize_link()


def pread_into(fd: int, buffer: memoryview, offset: int) -> int:
    """Read into ``buffer`` from ``offset`` of ``fd`` (the GIL released); bytes read."""
    if hasattr(os, "preadv"):
        return os.preadv(fd, [buffer], offset)
    data = os.pread(fd, len(buffer), offset)  # no preadv (e.g. Windows): one copy more
    buffer[: len(data)] = data
    return len(data)
