"""torch.distributed.checkpoint folders read without torch and without unpickling:
the logical tensor root, hostile metadata refused, and one read per file when stored.

Folders are written by ``dcp.save`` in this process (no process group: one rank);
tests/training/test_sharded.py covers tensors whose rows are split across ranks.
Variants of ``.metadata`` are made with torch's own classes (the test trusts
them; ledger never loads them).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest

from ledger.errors import FileMissingError, InputError, UnsupportedFormatError
from ledger.hashing._onepass import hash_and_copy
from ledger.hashing.cid import path_cid
from ledger.hashing.dcp import dcp_digest, dcp_plan, is_dcp_folder, read_metadata
from ledger.hashing.tensors import state_dict_digest, tensor_digest
from ledger.record.artifacts import store_weights
from ledger.store import LocalStore
from tests.record.test_store_weights import io_counts

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
dcp = pytest.importorskip("torch.distributed.checkpoint")

MiB = 1 << 20


def state(megabytes: int = 1) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(7)
    rows = max(1, megabytes * MiB // 4 // 256)
    return {
        "encoder.weight": torch.rand(rows, 256, generator=generator),
        "encoder.bias": torch.arange(256, dtype=torch.int64),
        "half": torch.rand(3, 5, generator=generator).to(torch.bfloat16),
        "scale": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
    }


def save(folder: Path, tensors: dict[str, Any]) -> Path:
    dcp.save(tensors, checkpoint_id=folder, no_dist=True)
    return folder


def rewrite_metadata(folder: Path, change: Any) -> None:
    with open(folder / ".metadata", "rb") as handle:
        metadata = pickle.load(handle)  # the test's own file, written by torch just now
    change(metadata)
    with open(folder / ".metadata", "wb") as handle:
        pickle.dump(metadata, handle)


def test_the_root_is_the_state_dicts_root(tmp_path: Path) -> None:
    tensors = state()
    folder = save(tmp_path / "ckpt", tensors)
    assert is_dcp_folder(folder) and not is_dcp_folder(tmp_path)
    expected = state_dict_digest(tensors).root
    assert dcp_digest(folder).root == expected
    assert dcp_digest(folder, workers=1).root == expected
    assert tensor_digest(folder).root == expected  # the public entry point dispatches
    torch.save(tensors, tmp_path / "one.pt")
    assert tensor_digest(tmp_path / "one.pt").root == expected


def test_non_tensor_entries_are_outside_the_root(tmp_path: Path) -> None:
    tensors = state()
    folder = save(tmp_path / "ckpt", {**tensors, "step": 12, "note": "epoch end"})
    plan = dcp_plan(folder)
    assert sorted(plan.other_entries) == ["note", "step"]
    assert dcp_digest(folder).root == state_dict_digest(tensors).root


def test_metadata_that_would_run_code_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    folder = save(tmp_path / "ckpt", state())
    original = (folder / ".metadata").read_bytes()
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    rewrite_metadata(folder, lambda m: setattr(m, "planner_data", Payload()))
    with pytest.raises(UnsupportedFormatError, match=r"posix\.system|os\.system") as caught:
        dcp_plan(folder)
    assert ".metadata" in caught.value.message
    assert not marker.exists()
    # the neighbours: another class, an old protocol, a truncated pickle, garbage
    (folder / ".metadata").write_bytes(original)
    rewrite_metadata(folder, lambda m: setattr(m, "planner_data", {"x": Path("p")}))
    (folder / ".metadata").write_bytes(
        (folder / ".metadata").read_bytes().replace(b"PosixPath", b"PosixPatx")
    )
    with pytest.raises(UnsupportedFormatError, match="PosixPatx"):
        dcp_plan(folder)
    for broken in (pickle.dumps({"a": 1}, protocol=1), b"\x80\x04\x95", b"not a pickle"):
        (folder / ".metadata").write_bytes(broken)
        with pytest.raises(UnsupportedFormatError):
            dcp_plan(folder)


def test_shard_names_must_stay_in_the_folder(tmp_path: Path) -> None:
    folder = save(tmp_path / "ckpt", state())
    (tmp_path / "outside").write_bytes(b"x" * 4096)

    def escape(metadata: Any) -> None:
        for info in metadata.storage_data.values():
            info.relative_path = "../outside"

    rewrite_metadata(folder, escape)
    with pytest.raises(UnsupportedFormatError, match="not a shard file of the folder"):
        dcp_plan(folder)


@pytest.mark.parametrize(
    "name",
    ["a\x00b", "\ud800.distcp", "a" * 300, "zz\n\x1b[32mVERIFIED\x1b[0m", "sub\\x", ""],
    ids=["nul", "surrogate", "too-long", "terminal-escapes", "backslash", "empty"],
)
def test_shard_names_a_folder_cannot_hold_or_a_terminal_should_not_print(
    tmp_path: Path, name: str
) -> None:
    folder = save(tmp_path / "ckpt", state())

    def rename(metadata: Any) -> None:
        for info in metadata.storage_data.values():
            info.relative_path = name

    rewrite_metadata(folder, rename)
    with pytest.raises(UnsupportedFormatError, match="not a shard file of the folder") as caught:
        dcp_plan(folder)
    assert "\x1b" not in caught.value.message and "\n" not in caught.value.message


def test_pickles_nested_past_dcps_own_are_refused_not_crashed_on(tmp_path: Path) -> None:
    """A tuple nested a million deep, as a dict key (hashed) or a call (printed),
    would overflow the C stack (a crash no except catches): refused while read."""
    folder = save(tmp_path / "ckpt", state())
    deep = b"\x80\x04)" + b"\x85" * 1_000_000  # (), then TUPLE1 a million times
    for pickled in (b"\x80\x04}" + deep[2:] + b"Ns.", deep + b")\x81."):
        (folder / ".metadata").write_bytes(pickled)
        with pytest.raises(UnsupportedFormatError, match="nested deeper"):
            dcp_plan(folder)


def test_chunks_naming_the_same_bytes_are_refused(tmp_path: Path) -> None:
    """DCP writes each item once: a layout naming one item for many tensors would
    have it hashed as many times (2,000 names of a 64 MiB item: 128 GiB)."""
    import copy

    from torch.distributed.checkpoint.metadata import MetadataIndex

    folder = save(tmp_path / "ckpt", {"w": torch.zeros(1000)})

    def repeat(metadata: Any) -> None:
        entry = metadata.state_dict_metadata["w"]
        ((_, info),) = metadata.storage_data.items()
        for i in range(3):
            metadata.state_dict_metadata[f"w{i}"] = copy.deepcopy(entry)
            metadata.storage_data[MetadataIndex(f"w{i}", torch.Size([0]))] = copy.deepcopy(info)

    rewrite_metadata(folder, repeat)
    with pytest.raises(UnsupportedFormatError, match="two chunks name the same bytes"):
        dcp_plan(folder)


def test_a_metadata_file_that_is_a_link_or_not_a_file_is_refused(tmp_path: Path) -> None:
    """The folder's CID holds a link's target path, not the layout behind it: a
    ``.metadata`` link is refused, naming it (and a FIFO is not waited on)."""
    folder = save(tmp_path / "ckpt", state())
    (folder / ".metadata").rename(tmp_path / "layout")
    (folder / ".metadata").symlink_to(tmp_path / "layout")
    assert is_dcp_folder(folder)
    with pytest.raises(UnsupportedFormatError, match="symbolic link"):
        dcp_plan(folder)
    (folder / ".metadata").unlink()
    os.mkfifo(folder / ".metadata")
    with pytest.raises(UnsupportedFormatError, match="not a regular file"):
        read_metadata(folder / ".metadata")


def test_a_shard_that_is_a_link_is_refused(tmp_path: Path) -> None:
    folder = save(tmp_path / "ckpt", state())
    (shard,) = dcp_plan(folder).files
    (folder / shard).rename(tmp_path / "elsewhere")
    (folder / shard).symlink_to(tmp_path / "elsewhere")  # the folder CID keeps only the link
    with pytest.raises(UnsupportedFormatError, match="not a regular file"):
        dcp_plan(folder)


def test_a_missing_or_truncated_shard_is_named(tmp_path: Path) -> None:
    folder = save(tmp_path / "ckpt", state())
    (shard,) = dcp_plan(folder).files
    data = (folder / shard).read_bytes()
    (folder / shard).write_bytes(data[: len(data) // 2])
    with pytest.raises(UnsupportedFormatError, match=f"{shard}.*truncated"):
        dcp_plan(folder)
    (folder / shard).unlink()
    with pytest.raises(FileMissingError, match=f"shard file '{shard}' is missing"):
        dcp_plan(folder)


def test_chunks_must_tile_rows(tmp_path: Path) -> None:
    folder = save(tmp_path / "ckpt", state())
    original = (folder / ".metadata").read_bytes()

    def split_columns(metadata: Any) -> None:
        chunk = metadata.state_dict_metadata["encoder.weight"].chunks[0]
        chunk.sizes = torch.Size([chunk.sizes[0], 128])

    rewrite_metadata(folder, split_columns)
    with pytest.raises(UnsupportedFormatError, match=r"'encoder\.weight' is split along"):
        dcp_plan(folder)

    (folder / ".metadata").write_bytes(original)

    def claim_more_rows(metadata: Any) -> None:
        entry = metadata.state_dict_metadata["encoder.bias"]
        entry.size = torch.Size([512])
        entry.chunks[0].sizes = torch.Size([256])

    rewrite_metadata(folder, claim_more_rows)
    with pytest.raises(UnsupportedFormatError, match=r"'encoder\.bias' cover 256 of its 512"):
        dcp_plan(folder)

    (folder / ".metadata").write_bytes(original)

    def lie_about_dtype(metadata: Any) -> None:
        metadata.state_dict_metadata["encoder.bias"].properties.dtype = torch.int32

    rewrite_metadata(folder, lie_about_dtype)
    with pytest.raises(UnsupportedFormatError, match=r"holds I64.*metadata says I32"):
        dcp_plan(folder)


def test_read_metadata_gives_plain_records(tmp_path: Path) -> None:
    folder = save(tmp_path / "ckpt", state())
    metadata = read_metadata(folder / ".metadata")
    entry = metadata.attrs["state_dict_metadata"]["encoder.weight"]
    assert entry.attrs["size"] == (1024, 256)


def test_shared_hashers_hash_spans_in_order_across_files(tmp_path: Path) -> None:
    first, second = os.urandom(3 * MiB), os.urandom(2 * MiB)
    (tmp_path / "a").write_bytes(first)
    (tmp_path / "b").write_bytes(second)
    tensor, other = hashlib.sha256(), hashlib.sha256()
    for name, spans, hashers in (
        ("a", [(10, MiB), (2 * MiB, MiB)], [tensor, other]),
        ("b", [(0, 5), (MiB, 100)], [tensor, tensor]),
    ):
        fd = os.open(tmp_path / name, os.O_RDONLY)
        try:
            hash_and_copy(fd, os.fstat(fd).st_size, spans=spans, hashers=hashers, workers=2)
        finally:
            os.close(fd)
    assert (
        tensor.digest()
        == hashlib.sha256(first[10 : 10 + MiB] + second[:5] + second[MiB : MiB + 100]).digest()
    )
    assert other.digest() == hashlib.sha256(first[2 * MiB : 3 * MiB]).digest()
    with pytest.raises(InputError, match="1 hashers for 2 spans"):
        hash_and_copy(0, 0, spans=[(0, 0), (0, 0)], hashers=[tensor])


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs /proc/self/io (Linux)")
@pytest.mark.parametrize("mode", ["copy", "reference"])
def test_storing_a_folder_reads_each_file_once(tmp_path: Path, mode: str) -> None:
    tensors = state(megabytes=24)
    folder = save(tmp_path / "ckpt", tensors)
    size = sum(p.stat().st_size for p in folder.iterdir())
    store = LocalStore(tmp_path / "store", weights=mode)
    read_before, _ = io_counts()
    cid, digest, _ = store_weights(store, "0x" + "11" * 32, folder, {"loss": 1.0}, 0)
    read = io_counts()[0] - read_before
    assert cid == path_cid(folder, hidden=True)
    assert digest.root == state_dict_digest(tensors).root
    assert size <= read < 1.1 * size, (read, size)


def test_rows_met_out_of_order_are_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ledger.hashing.dcp as module

    tensors = state()
    folder = save(tmp_path / "ckpt", tensors)
    monkeypatch.setattr(module, "one_pass_ok", lambda plan: [False] * len(plan.tensors))
    store = LocalStore(tmp_path / "store")
    _, digest, _ = store_weights(store, "0x" + "11" * 32, folder, {}, 0)
    assert digest.root == state_dict_digest(tensors).root


def test_verify_names_a_folder_cid_over_hidden_files(tmp_path: Path) -> None:
    folder = save(tmp_path / "ckpt", state())
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    assert path_cid(copy, hidden=True) == path_cid(folder, hidden=True)
    rewrite_metadata(copy, lambda m: setattr(m, "version", "9.9.9"))
    # the layout changed: the CID over hidden files sees it, plain `ipfs add -r` would not
    assert path_cid(copy, hidden=True) != path_cid(folder, hidden=True)
    assert path_cid(copy) == path_cid(folder)
