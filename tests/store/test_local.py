"""The content-addressed local store (``ledger.store.local``).

Every test builds its own :class:`LocalStore` in ``tmp_path``; nothing talks to a
chain or to IPFS. CIDs are checked against :mod:`ledger.hashing.cid`, which is in
turn checked against Kubo's published vectors in ``tests/test_cid_vectors.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import ledger.store
import ledger.store.local
from ledger.errors import (
    ArtifactNotFoundError,
    IntegrityError,
    LedgerError,
    StoreError,
)
from ledger.hashing._unixfs import DEFAULT_CHUNK_SIZE, encode_file_node, leaf_link
from ledger.hashing.cid import DAG_PB, RAW, Cid, bytes_cid, file_cid
from ledger.store import LocalStore, candidates_for_digest, find_by_digest

BIG = 2 * DEFAULT_CHUNK_SIZE + 17  # three chunks: a dag-pb root over raw leaves


def pattern(size: int, seed: int = 0) -> bytes:
    """Deterministic, non-repeating-per-chunk bytes (so chunks hash differently)."""
    block = bytes((seed + i * 7 + (i >> 8)) % 256 for i in range(65536 + 13))
    reps = size // len(block) + 1
    return (block * reps)[:size]


def blobs(store: LocalStore) -> list[str]:
    """Every entry in the store's blob directory, hidden files included."""
    directory = store.root / "blobs"
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# -- put / get ----------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 1000, DEFAULT_CHUNK_SIZE, BIG])
def test_put_bytes_returns_the_ipfs_cid_and_files_it_by_that_name(
    tmp_path: Path, size: int
) -> None:
    store = LocalStore(tmp_path / "store")
    data = pattern(size)
    cid = store.put_bytes(data)
    assert cid == bytes_cid(data)
    assert cid.version == 1
    assert cid.codec == (DAG_PB if size > DEFAULT_CHUNK_SIZE else RAW)
    assert store.path_for(cid) == tmp_path / "store" / "blobs" / str(cid)
    assert store.path_for(cid).read_bytes() == data
    assert store.has(cid)
    assert store.get_bytes(cid) == data


@pytest.mark.parametrize("size", [5, BIG])
def test_put_file_returns_the_file_cid_and_round_trips(tmp_path: Path, size: int) -> None:
    source = tmp_path / "weights.bin"
    source.write_bytes(pattern(size, seed=3))
    store = LocalStore(tmp_path / "store")
    cid = store.put_file(source)
    assert cid == file_cid(source)
    assert store.path_for(cid).name == str(cid)
    assert store.get_bytes(cid) == source.read_bytes()
    # the same bytes put as bytes land under the same CID
    assert store.put_bytes(source.read_bytes()) == cid


def test_puts_are_idempotent(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    source = tmp_path / "a.txt"
    source.write_bytes(b"hello ledger\n")
    first = store.put_bytes(b"hello ledger\n")
    assert store.put_bytes(b"hello ledger\n") == first
    assert store.put_file(source) == first
    assert store.put_file(source) == first
    assert blobs(store) == [str(first)]
    assert store.get_bytes(first) == b"hello ledger\n"


def test_different_content_gets_different_cids(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    a = store.put_bytes(b"a")
    b = store.put_bytes(b"b")
    assert a != b
    assert blobs(store) == sorted([str(a), str(b)])
    assert store.get_bytes(a) == b"a"
    assert store.get_bytes(b) == b"b"


# -- integrity ------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, BIG])
def test_a_stored_file_changed_on_disk_is_an_integrity_error(tmp_path: Path, size: int) -> None:
    store = LocalStore(tmp_path / "store")
    data = pattern(size, seed=1)
    cid = store.put_bytes(data)
    changed = bytearray(data)
    changed[size // 2] ^= 0x01
    store.path_for(cid).write_bytes(bytes(changed))
    with pytest.raises(IntegrityError) as info:
        store.get_bytes(cid)
    assert str(cid) in str(info.value)
    assert isinstance(info.value, StoreError)
    assert info.value.hint is not None
    assert str(store.path_for(cid)) in info.value.hint


def test_a_truncated_stored_file_is_an_integrity_error(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    cid = store.put_bytes(b"0123456789")
    store.path_for(cid).write_bytes(b"012345678")
    with pytest.raises(IntegrityError, match=str(cid)):
        store.get_bytes(cid)


def test_a_blob_replaced_by_its_root_block_is_an_integrity_error(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    data = pattern(BIG, seed=2)
    cid = store.put_bytes(data)
    assert cid.codec == DAG_PB
    # The dag-pb root block of the file: its sha256 *is* the CID's digest.
    chunks = [data[i : i + DEFAULT_CHUNK_SIZE] for i in range(0, BIG, DEFAULT_CHUNK_SIZE)]
    root_block = encode_file_node([leaf_link(chunk) for chunk in chunks])
    assert bytes_cid(root_block).digest == cid.digest  # the precondition of the attack
    store.path_for(cid).write_bytes(root_block)
    with pytest.raises(IntegrityError):
        store.get_bytes(cid)  # returns root_block (wrong content) instead of raising


# -- missing artifacts ------------------------------------------------------------


def test_a_missing_cid_is_artifact_not_found(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.put_bytes(b"something else")
    missing = bytes_cid(b"never stored")
    assert not store.has(missing)
    with pytest.raises(ArtifactNotFoundError) as info:
        store.get_bytes(missing)
    error = info.value
    assert isinstance(error, KeyError)
    assert isinstance(error, LedgerError)
    assert isinstance(error, StoreError)
    assert str(missing) in str(error)
    # str() is the message, not KeyError's quoted repr of it
    assert str(error).startswith("artifact ")
    assert error.hint is not None


def test_artifact_not_found_is_caught_by_except_key_error(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "empty")
    try:
        store.get_bytes(bytes_cid(b"x"))
    except KeyError as exc:
        assert isinstance(exc, ArtifactNotFoundError)
    else:
        pytest.fail("get_bytes of a missing CID did not raise")


# -- atomic writes ------------------------------------------------------------------


def _failing_write(written: list[int]) -> object:
    """A write to the store's temporary file that writes part of a block, then
    finds the disk full."""

    def write_all(fd: int, block: memoryview) -> None:
        os.write(fd, block[:1000])
        written.append(1000)
        raise OSError(28, "No space left on device")

    return write_all


@pytest.fixture
def no_clone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A filesystem without copy-on-write clones: the copy is written block by block."""
    monkeypatch.setattr(ledger.store.local, "_clone", lambda dst, src: False)


@pytest.mark.usefixtures("no_clone")
def test_put_file_failing_midway_leaves_nothing_under_the_cid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "weights.bin"
    source.write_bytes(pattern(50_000, seed=4))
    store = LocalStore(tmp_path / "store")
    store.put_bytes(b"an earlier artifact")  # the blob directory already exists
    before = blobs(store)
    written: list[int] = []
    monkeypatch.setattr(ledger.store.local, "_write_all", _failing_write(written))

    with pytest.raises(StoreError) as info:
        store.put_file(source)

    assert written == [1000]  # the writer really did write part of the file
    assert "No space left on device" in str(info.value)
    cid = file_cid(source)
    assert not store.path_for(cid).exists()
    assert not store.has(cid)
    assert not [name for name in blobs(store) if name.startswith(".incoming-")]
    assert blobs(store) == before
    with pytest.raises(ArtifactNotFoundError):
        store.get_bytes(cid)


@pytest.mark.usefixtures("no_clone")
def test_put_file_works_again_after_a_failed_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "weights.bin"
    source.write_bytes(pattern(50_000, seed=5))
    store = LocalStore(tmp_path / "store")
    with monkeypatch.context() as patch:
        patch.setattr(ledger.store.local, "_write_all", _failing_write([]))
        with pytest.raises(StoreError):
            store.put_file(source)
    cid = store.put_file(source)
    assert store.get_bytes(cid) == source.read_bytes()
    assert blobs(store) == [str(cid)]


def test_put_bytes_failing_before_the_rename_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path / "store")
    calls: list[int] = []

    def failing_fsync(fd: int) -> None:
        calls.append(fd)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(ledger.store.local.os, "fsync", failing_fsync)
    with pytest.raises(StoreError, match="Input/output error"):
        store.put_bytes(b"payload that never lands")
    assert calls  # the failure happened inside the write
    assert blobs(store) == []
    assert not store.has(bytes_cid(b"payload that never lands"))


@pytest.mark.parametrize("mode", ["copy", "reference"])
def test_a_source_that_changes_while_stored_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    source = tmp_path / "weights.bin"
    source.write_bytes(pattern(3 * DEFAULT_CHUNK_SIZE, seed=8))
    real = ledger.store.local.hash_and_copy

    def rewritten_meanwhile(fd: int, size: int, **kwargs: object) -> object:
        result = real(fd, size, **kwargs)  # type: ignore[arg-type]
        with open(source, "ab") as handle:  # the trainer appends while ledger reads
            handle.write(b"more")
        return result

    monkeypatch.setattr(ledger.store.local, "_clone", lambda dst, src: False)
    monkeypatch.setattr(ledger.store.local, "hash_and_copy", rewritten_meanwhile)
    store = LocalStore(tmp_path / "store", weights=mode)
    with pytest.raises(StoreError, match="changed while it was being stored"):
        store.put_file(source)
    assert store.cids() == []
    assert blobs(store) == []


# -- lookup by the on-chain digest ------------------------------------------------


def test_candidates_for_digest_are_the_raw_and_dag_pb_cidv1() -> None:
    digest = bytes(range(32))
    raw, dag = candidates_for_digest(digest)
    assert raw == Cid(version=1, codec=RAW, digest=digest)
    assert dag == Cid(version=1, codec=DAG_PB, digest=digest)


def test_find_by_digest_finds_raw_leaf_and_dag_pb_cids(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    small_file = tmp_path / "small.bin"
    small_file.write_bytes(pattern(1234, seed=6))
    big_file = tmp_path / "big.bin"
    big_file.write_bytes(pattern(DEFAULT_CHUNK_SIZE + 1, seed=7))
    small = store.put_file(small_file)
    big = store.put_file(big_file)
    assert small.codec == RAW
    assert big.codec == DAG_PB
    assert len(small.digest) == len(big.digest) == 32

    assert find_by_digest(store, small.digest) == small
    assert find_by_digest(store, big.digest) == big
    assert find_by_digest(store, bytes(32)) is None
    assert find_by_digest(store, bytes_cid(b"not stored").digest) is None


def test_writes_in_a_batch_sync_their_folder_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    real = ledger.store.local._fsync_dir
    monkeypatch.setattr(ledger.store.local, "_fsync_dir", lambda p: (synced.append(p), real(p)))
    store = LocalStore(tmp_path / "store")
    store.put_bytes(b"alone")
    assert len(synced) == 1  # outside a batch: each artifact syncs its folder
    with ledger.store.synced_together(store):
        cids = [store.put_bytes(b"artifact %d" % i) for i in range(5)]
        with store.synced_together():  # nested: the outer block syncs
            cids.append(store.put_bytes(b"inner"))
        assert len(synced) == 1  # not yet
    assert synced[1:] == [store.root / "blobs"]  # once, for the six
    assert [store.get_bytes(c) for c in cids[:2]] == [b"artifact 0", b"artifact 1"]
    with pytest.raises(RuntimeError), store.synced_together():
        store.put_bytes(b"kept")
        raise RuntimeError("the caller fails after a write")
    assert len(synced) == 3  # what was written is still made durable
    assert not [p for p in (store.root / "blobs").iterdir() if p.name.startswith(".")]
