"""One read of each weights file for its CID, its tensor root and the store's copy.

The bytes a process reads and writes are counted by the kernel
(``/proc/self/io``: ``rchar``, ``wchar``), so these tests measure what
:func:`~ledger.record.artifacts.store_weights` really reads, threads included.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from ledger.hashing.cid import file_cid
from ledger.hashing.tensors import tensor_digest, tensor_plan
from ledger.record.artifacts import store_weights
from ledger.store import LocalStore

torch = pytest.importorskip("torch")

MiB = 1 << 20


def io_counts() -> tuple[int, int]:
    """Bytes this process has read and written so far (every thread, page cache or not)."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["rchar"]), int(fields["wchar"])


def big_state_dict(megabytes: int = 40) -> dict[str, object]:
    generator = torch.Generator().manual_seed(megabytes)
    tensors = 8
    rows = megabytes * MiB // 4 // 1024 // tensors
    state = {
        f"layer{i}.weight": torch.rand(rows, 1024, generator=generator) for i in range(tensors)
    }
    state["layer0.bias"] = torch.arange(1024, dtype=torch.int64)
    state["view_of_layer1"] = state["layer1.weight"][3:7]  # shares its storage
    state["empty"] = torch.zeros(0, dtype=torch.bfloat16)
    return state


def save(state: dict[str, object], path: Path, container: str) -> Path:
    if container == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.clone().contiguous() for k, v in state.items()}, str(path))  # type: ignore[attr-defined]
    else:
        torch.save(state, path)
    return path


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs /proc/self/io (Linux)")
@pytest.mark.parametrize("container", ["pt", "safetensors"])
@pytest.mark.parametrize("mode", ["copy", "reference"])
def test_a_checkpoint_is_read_once_and_written_at_most_once(
    tmp_path: Path, container: str, mode: str
) -> None:
    path = save(big_state_dict(), tmp_path / f"step-1.{container}", container)
    size = path.stat().st_size
    expected_cid, expected_root = file_cid(path), tensor_digest(path).root
    store = LocalStore(tmp_path / "store", weights=mode)
    store.put_bytes(b"{}")  # the store exists already, as during a run

    read_before, written_before = io_counts()
    cid, tensors, _ = store_weights(store, "0x" + "11" * 32, path, {"loss": 0.5}, 1)
    read = io_counts()[0] - read_before
    written = io_counts()[1] - written_before

    assert cid == expected_cid
    assert tensors.root == expected_root
    assert tensors.index() == tensor_digest(path).index()
    # one pass: the file once, plus its header and pickle (not four times, as before)
    assert size <= read < size + 2 * MiB, f"read {read / size:.2f} times the file"
    if mode == "copy":
        assert size <= written < size + MiB  # the copy, never read back
        assert store.path_for(cid).read_bytes() == path.read_bytes()
    else:
        assert written < MiB  # the reference and the documents only
        assert not store.path_for(cid).exists()
        assert store.reference(cid) is not None
    assert store.has(cid)
    assert store.get_bytes(cid) == path.read_bytes()


def test_a_file_only_torch_reads_still_gets_its_tensor_root(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    torch.save(big_state_dict(1), path, _use_new_zipfile_serialization=False)
    assert tensor_plan(path) is None  # no header to plan from: torch decides
    store = LocalStore(tmp_path / "store")
    cid, tensors, _ = store_weights(store, "0x" + "22" * 32, path, {}, None)
    assert cid == file_cid(path)
    assert tensors.root == tensor_digest(path).root
    assert store.get_bytes(cid) == path.read_bytes()


def test_a_checkpoint_stored_twice_is_kept_once(tmp_path: Path) -> None:
    path = save(big_state_dict(2), tmp_path / "a.pt", "pt")
    store = LocalStore(tmp_path / "store")
    first = store_weights(store, "0x" + "33" * 32, path, {}, 1)
    again = store_weights(store, "0x" + "33" * 32, path, {}, 2)
    assert first[0] == again[0] and first[1] == again[1]
    blobs = sorted(p.name for p in (store.root / "blobs").iterdir())
    assert str(first[0]) in blobs
    assert not [name for name in blobs if name.startswith(".")]  # no clone or copy left over


@pytest.mark.parametrize("workers", [1, 2, 5])
@pytest.mark.parametrize("container", ["pt", "safetensors"])
def test_one_pass_gives_the_cid_and_tensor_root_of_the_separate_passes(
    tmp_path: Path, workers: int, container: str
) -> None:
    from ledger.hashing._onepass import hash_and_copy

    path = save(big_state_dict(3), tmp_path / f"w.{container}", container)
    plan = tensor_plan(path)
    assert plan is not None
    copied = bytearray()
    fd = os.open(path, os.O_RDONLY)
    try:  # blocks of three chunks: tensors straddle blocks, several per block
        link, digests = hash_and_copy(
            fd,
            path.stat().st_size,
            spans=plan.spans,
            sink=copied.extend,
            workers=workers,
            read_block=3 * 262144,
        )
    finally:
        os.close(fd)
    assert link.cid == file_cid(path)
    assert plan.digest(digests) == tensor_digest(path)
    assert bytes(copied) == path.read_bytes()


def test_reused_read_buffers_never_carry_bytes_from_an_earlier_file(tmp_path: Path) -> None:
    """Files of one block borrow kept buffers: a shorter file read after a longer
    one, and files read at once on several threads, each get their own CID and
    tensor digests, never the leftovers of another file's bytes."""
    from concurrent.futures import ThreadPoolExecutor

    from ledger.hashing._onepass import hash_and_copy

    def one_pass(path: Path) -> tuple[str, list[bytes]]:
        fd = os.open(path, os.O_RDONLY)
        try:
            size = path.stat().st_size
            link, digests = hash_and_copy(fd, size, spans=[(0, size)], workers=1)
        finally:
            os.close(fd)
        return str(link.cid), digests

    files = []
    for i, size in enumerate([3 << 20, 1 << 20, 300_000, 262_144, 17, 0, 2 << 20]):
        path = tmp_path / f"f{i}.bin"
        path.write_bytes(os.urandom(size))
        files.append(path)
    expected = [(str(file_cid(p)), [hashlib.sha256(p.read_bytes()).digest()]) for p in files]
    for _ in range(2):  # the second round reads every size into kept buffers
        assert [one_pass(p) for p in files] == expected
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(one_pass, files * 6)) == expected * 6


def test_read_buffers_are_private_to_a_forked_process() -> None:
    """A data loader's worker forked from the training process neither sees nor
    writes into the bytes being hashed, and starts with no kept buffers (nor a
    lock some thread of the parent held)."""
    from ledger.hashing._engine import buffers, page_buffer

    kept = buffers.take(1 << 20)
    kept[:4] = b"aaaa"
    buffers.give(kept)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write into the parent's buffer, report the pool's size
        try:
            kept[:4] = b"bbbb"
            fresh = buffers.take(1 << 20)
            os.write(write, bytes([fresh is kept]) + bytes(fresh[:4]))
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 5)
    os.waitpid(pid, 0)
    os.close(read)
    assert answer == b"\x00\x00\x00\x00\x00"  # the child took a new, zeroed buffer
    assert kept[:4] == b"aaaa"  # and its writes stayed its own
    assert buffers.take(1 << 20) is kept
    assert page_buffer(10)[:1] == b"\x00"
