"""The parallel file hashing engine (``ledger.hashing._engine``) against the reference paths.

The single-threaded ``UnixFsHasher.update`` path is what the cited vectors in
``test_cid_vectors.py`` pin down; here the threaded engine must agree with it
(and with one of those vectors) for multi-level trees, every worker count and
read size, and both CID versions.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.errors import InputError
from ledger.hashing._engine import hash_file_parallel, hash_stream_parallel
from ledger.hashing._unixfs import DEFAULT_CHUNK_SIZE, UnixFsHasher
from ledger.hashing.cid import file_cid
from tests.hashing.test_cid_vectors import DEADBEEF_VECTORS, repeated

MiB = 1024 * 1024


def patterned(size: int, piece: int = MiB) -> Iterator[bytes]:
    """``size`` bytes that differ chunk to chunk (so equal leaves cannot hide a mix-up)."""
    done = 0
    counter = 0
    while done < size:
        n = min(piece, size - done)
        stamp = counter.to_bytes(8, "big")
        yield (stamp * (n // 8 + 1))[:n]
        done += n
        counter += 1


def write_streaming(path: Path, pieces: Iterator[bytes]) -> None:
    with open(path, "wb") as handle:
        for piece in pieces:
            handle.write(piece)


def reference_cid(pieces: Iterator[bytes], cid_version: int) -> str:
    hasher = UnixFsHasher(cid_version)
    for piece in pieces:
        hasher.update(piece)
    return str(hasher.finalize())


@pytest.fixture(scope="module")
def fifty_mib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 50 MiB + 3 bytes: 201 chunks, so two levels of parents and a short last leaf.
    path = tmp_path_factory.mktemp("engine") / "fifty.bin"
    write_streaming(path, patterned(50 * MiB + 3))
    return path


@pytest.mark.parametrize("cid_version", [0, 1])
def test_parallel_and_single_threaded_agree_on_a_multi_level_tree(
    fifty_mib: Path, cid_version: int
) -> None:
    expected = reference_cid(patterned(50 * MiB + 3), cid_version)
    assert str(file_cid(fifty_mib, cid_version=cid_version, workers=1)) == expected
    for workers in (2, 3, 8):
        assert str(file_cid(fifty_mib, cid_version=cid_version, workers=workers)) == expected
    assert str(file_cid(fifty_mib, cid_version=cid_version)) == expected  # default workers


@pytest.mark.parametrize("read_chunks", [1, 3, 174, 175])
def test_read_size_does_not_change_the_cid(fifty_mib: Path, read_chunks: int) -> None:
    expected = str(file_cid(fifty_mib, workers=1))
    with open(fifty_mib, "rb", buffering=0) as stream:
        root = hash_stream_parallel(
            stream, 1, workers=2, read_block=read_chunks * DEFAULT_CHUNK_SIZE
        )
    assert str(root.cid) == expected
    assert root.filesize == 50 * MiB + 3


@pytest.mark.slow
@pytest.mark.parametrize(("cid_version", "expected", "source"), DEADBEEF_VECTORS)
def test_parallel_engine_reproduces_a_cited_multi_level_vector(
    tmp_path: Path, cid_version: int, expected: str, source: str
) -> None:
    path = tmp_path / "deadbeef.bin"
    write_streaming(path, repeated(b"deadbeef", 16 * MiB))
    assert str(file_cid(path, cid_version=cid_version, workers=2)) == expected, source
    assert str(file_cid(path, cid_version=cid_version, workers=1)) == expected, source


def test_short_reads_from_a_stream_are_filled_before_hashing() -> None:
    class Trickle(io.RawIOBase):
        """Hands out at most 1000 bytes per read, like a pipe might."""

        def __init__(self, data: bytes) -> None:
            self.data = memoryview(data)
            self.pos = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            n = min(1000, len(buffer), len(self.data) - self.pos)
            buffer[:n] = self.data[self.pos : self.pos + n]
            self.pos += n
            return n

    data = b"".join(patterned(3 * DEFAULT_CHUNK_SIZE + 5, piece=4096))
    expected = reference_cid(iter([data]), 1)
    for workers in (1, 2):
        root = hash_stream_parallel(
            Trickle(data), 1, workers=workers, read_block=2 * DEFAULT_CHUNK_SIZE
        )
        assert str(root.cid) == expected


@pytest.mark.parametrize("workers", [1, 2])
def test_progress_reports_every_byte_once(fifty_mib: Path, workers: int) -> None:
    seen: list[int] = []
    file_cid(fifty_mib, workers=workers, progress=seen.append)
    assert sum(seen) == 50 * MiB + 3
    assert all(n > 0 for n in seen)


def test_empty_file_and_bad_settings(tmp_path: Path) -> None:
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    for workers in (1, 2):
        assert str(file_cid(empty, workers=workers)) == (
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        )
    with pytest.raises(InputError, match="workers"):
        file_cid(empty, workers=0)
    with open(empty, "rb", buffering=0) as stream, pytest.raises(InputError, match="multiple"):
        hash_stream_parallel(stream, 1, read_block=DEFAULT_CHUNK_SIZE + 1)
    with pytest.raises(InputError, match="cid_version"):
        file_cid(empty, cid_version=2)


@pytest.mark.parametrize("cid_version", [0, 1])
@pytest.mark.parametrize(("workers", "read_chunks"), [(2, 32), (3, 1), (2, 7), (8, 175)])
def test_positional_reads_agree_across_blocks(
    fifty_mib: Path, cid_version: int, workers: int, read_chunks: int
) -> None:
    # 50 MiB + 3 bytes in blocks of 1 to 175 chunks: whole blocks, a short last one.
    expected = file_cid(fifty_mib, cid_version=cid_version, workers=1)
    with open(fifty_mib, "rb", buffering=0) as handle:
        root = hash_file_parallel(
            handle.fileno(),
            50 * MiB + 3,
            cid_version,
            workers=workers,
            read_block=read_chunks * DEFAULT_CHUNK_SIZE,
        )
    assert root.cid == expected
    assert root.filesize == 50 * MiB + 3


@pytest.mark.parametrize("size", [0, 1, DEFAULT_CHUNK_SIZE - 1, DEFAULT_CHUNK_SIZE, 3 * MiB + 5])
def test_positional_reads_agree_on_small_files(tmp_path: Path, size: int) -> None:
    path = tmp_path / "blob"
    write_streaming(path, patterned(size))
    with open(path, "rb", buffering=0) as handle:
        root = hash_file_parallel(handle.fileno(), size, 1, workers=2)
    assert root.cid == file_cid(path, workers=1)


def test_a_file_shorter_than_its_size_is_an_error_not_a_wrong_cid(fifty_mib: Path) -> None:
    # as if the file shrank between the size check and the reads
    with (
        open(fifty_mib, "rb", buffering=0) as handle,
        pytest.raises(InputError, match="shrank"),
    ):
        hash_file_parallel(handle.fileno(), 60 * MiB, 1, workers=2)


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("size", [0, 1, 262_145, 3 * (8 << 20) + 12_345])
def test_cid_and_sha256_in_one_read(tmp_path: Path, size: int, workers: int) -> None:
    """The sha256 fed from the CID's own blocks is the file's, in any thread count."""
    import hashlib

    from ledger.hashing.cid import file_cid, file_cid_and_sha256

    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(size))
    cid, sha = file_cid_and_sha256(path, workers=workers)
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    assert cid == file_cid(path, workers=1)
