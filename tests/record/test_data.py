"""Fingerprints of training data (``ledger.record.data``) and their cache.

Real files and folders under ``tmp_path``, real Hugging Face datasets built
locally (no download), real torch datasets. The cache tests count what the
cache answered: a hit means the file was not read.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset, TensorDataset

from ledger.documents import canonical_json
from ledger.errors import InputError
from ledger.hashing.cid import CIDV1_SCHEME, UNIXFS_V1_2025_SCHEME, file_cid, path_cid
from ledger.record import data
from ledger.record.data import CACHE_FILE, FingerprintCache, fingerprint
from ledger.record.manifest import build_manifest

datasets = pytest.importorskip("datasets")


def make_folder(root: Path, count: int = 6) -> Path:
    folder = root / "corpus"
    (folder / "shard").mkdir(parents=True)
    for i in range(count):
        (folder / ("shard" if i % 2 else "") / f"part-{i}.txt").write_text(f"row {i}\n" * (i + 1))
    (folder / ".hidden").write_text("not added by default")
    (folder / "empty").mkdir()
    return folder


def settle() -> None:
    """Let the files just written become older than the cache's racy window."""
    time.sleep(data.RACY_NS / 1e9 + 0.05)


# -- files, folders, lists and globs ---------------------------------------------


def test_a_folder_is_its_ipfs_add_r_cid_with_scheme_count_and_bytes(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    found = fingerprint(folder)
    sizes = [len(f"row {i}\n" * (i + 1)) for i in range(6)]
    assert found == {
        "kind": "folder",
        "name": "corpus",
        "cid": str(path_cid(folder)),
        "scheme": CIDV1_SCHEME,
        "files": 6,  # the hidden file is skipped, as 'ipfs add -r' does
        "bytes": sum(sizes),
    }
    hidden = fingerprint(folder, hidden=True)
    assert hidden["files"] == 7 and hidden["hidden"] is True
    assert hidden["cid"] == str(path_cid(folder, hidden=True)) != found["cid"]


def test_a_folder_under_the_2025_profile_names_that_scheme(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    found = fingerprint(folder, profile="unixfs-v1-2025")
    assert found["scheme"] == UNIXFS_V1_2025_SCHEME
    assert found["cid"] == str(path_cid(folder, profile="unixfs-v1-2025"))
    file = fingerprint(folder / "part-0.txt", profile="unixfs-v1-2025")
    assert file["scheme"] == UNIXFS_V1_2025_SCHEME


def test_a_list_of_files_names_each_below_their_common_folder(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    paths = [folder / "part-0.txt", folder / "shard" / "part-1.txt", folder / "shard"]
    found = fingerprint(paths)
    assert found["kind"] == "files" and found["count"] == 3
    names = [entry["name"] for entry in found["files"]]
    assert names == ["part-0.txt", "shard/part-1.txt", "shard"]
    assert found["files"][0]["cid"] == str(file_cid(paths[0]))
    assert found["files"][2]["kind"] == "folder"
    assert found["bytes"] == sum(entry["bytes"] for entry in found["files"])
    assert str(tmp_path) not in canonical_json(found).decode()  # no machine paths


def test_a_glob_is_its_sorted_matches(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    found = fingerprint(str(folder / "**" / "*.txt"))
    assert found["kind"] == "files" and found["pattern"] == "*.txt"
    assert [e["name"] for e in found["files"]] == sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*.txt") if ".hidden" not in p.name
    )
    with pytest.raises(InputError, match="no file matches"):
        fingerprint(str(folder / "*.parquet"))


def test_a_glob_does_not_walk_linked_folders(tmp_path: Path) -> None:
    """Python's glob follows links to folders: two links back to the folder make
    2**40 paths under ``**``, and a link can lead out of the dataset. Matches
    reached through a linked folder are left out; a file link is data."""
    folder = make_folder(tmp_path / "d", count=2)
    (folder / "loop-a").symlink_to(".")
    (folder / "loop-b").symlink_to(".")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not the dataset's")
    (folder / "away").symlink_to(outside)
    (folder / "linked.txt").symlink_to(folder / "part-0.txt")
    matches = data.glob_matches(str(folder / "**" / "*.txt"))
    names = sorted(Path(m).relative_to(folder).as_posix() for m in matches)
    assert "linked.txt" in names and not any("loop" in n or "away" in n for n in names)
    assert names == sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*.txt")
        if not any(part in ("loop-a", "loop-b", "away") for part in p.relative_to(folder).parts)
    )
    assert fingerprint(str(folder / "**" / "*.txt"))["count"] == len(names)


def test_a_folder_nested_past_pythons_recursion_gets_its_cid(tmp_path: Path) -> None:
    """The walk and the build of a folder's nodes keep their own stacks: a tree
    nested 1,200 deep (past Python's recursion limit of 1,000) gets a CID."""
    root = tmp_path / "deep"
    folder = root
    for _ in range(1200):  # os.makedirs recurses too
        folder = folder / "d"
        folder.mkdir(parents=folder.parent == root)
    (root / "top.txt").write_text("x")
    try:
        first = path_cid(root)
        assert first == path_cid(root) and first != path_cid(root / "d")
    finally:  # bottom up: shutil.rmtree (pytest's cleanup of old runs) recurses too
        while folder != root:
            folder.rmdir()
            folder = folder.parent


def test_a_missing_data_path_names_its_key(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"data 'train': no file at .*gone"):
        build_manifest(name="r", config={}, data={"train": tmp_path / "gone"}, code_root=tmp_path)


# -- the cache ------------------------------------------------------------------------


def cached(path: Path | str, cache: FingerprintCache, **kwargs: Any) -> dict[str, Any]:
    cache.hits = cache.misses = 0
    return fingerprint(path, cache=cache, **kwargs)


def test_an_unchanged_folder_is_not_read_again(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    settle()
    with FingerprintCache(tmp_path / "cache" / CACHE_FILE) as cache:
        first = cached(folder, cache)
        assert (cache.hits, cache.misses) == (0, 6)
    with FingerprintCache(tmp_path / "cache" / CACHE_FILE) as cache:  # a later process
        assert cached(folder, cache) == first
        assert (cache.hits, cache.misses) == (6, 0)
        assert cached(folder / "part-0.txt", cache)["cid"] == str(file_cid(folder / "part-0.txt"))
        assert cache.hits == 1
        # another profile is another CID: not taken from the CIDv1 rows
        assert cached(folder, cache, profile="unixfs-v0-2015")["cid"] == str(
            path_cid(folder, cid_version=0)
        )
        assert cache.misses == 6


def test_a_touched_file_is_hashed_again(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    settle()
    with FingerprintCache(tmp_path / CACHE_FILE) as cache:
        first = cached(folder, cache)
        os.utime(folder / "part-2.txt")  # same bytes, new times
        again = cached(folder, cache)
        assert (cache.hits, cache.misses) == (5, 1)
        assert again == first


def test_a_file_rewritten_with_its_old_size_and_mtime_is_hashed_again(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    target = folder / "part-4.txt"
    settle()
    with FingerprintCache(tmp_path / CACHE_FILE) as cache:
        first = cached(folder, cache)
        before = target.stat()
        target.write_text(target.read_text().upper())  # same size
        os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime put back
        assert target.stat().st_ino == before.st_ino
        again = cached(folder, cache)
        assert cache.misses == 1  # the change time gave it away, as in git's index
        assert again["cid"] == str(path_cid(folder)) != first["cid"]


def test_a_replaced_file_is_hashed_again(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    target = folder / "shard" / "part-3.txt"
    settle()
    with FingerprintCache(tmp_path / CACHE_FILE) as cache:
        first = cached(folder, cache)
        before = target.stat()
        swap = tmp_path / "swap.txt"
        swap.write_text(target.read_text().replace("row", "ROW"))
        os.utime(swap, ns=(before.st_atime_ns, before.st_mtime_ns))
        os.replace(swap, target)  # same name, size and mtime; a new inode
        again = cached(folder, cache)
        assert cache.misses == 1
        assert again["cid"] == str(path_cid(folder)) != first["cid"]


def test_a_renamed_file_is_hashed_again_and_changes_the_folder(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    settle()
    with FingerprintCache(tmp_path / CACHE_FILE) as cache:
        first = cached(folder, cache)
        (folder / "part-0.txt").rename(folder / "part-00.txt")
        again = cached(folder, cache)
        assert cache.misses == 1 and cache.hits == 5
        assert again["cid"] == str(path_cid(folder)) != first["cid"]


def test_a_file_written_just_now_is_not_kept(tmp_path: Path) -> None:
    path = tmp_path / "fresh.bin"
    path.write_bytes(b"x" * 1000)
    with FingerprintCache(tmp_path / CACHE_FILE) as cache:
        cached(path, cache)
        path.write_bytes(b"y" * 1000)  # may share the clock tick of the first write
        assert cached(path, cache)["cid"] == str(file_cid(path))
        assert cache.hits == 0


def test_a_damaged_cache_only_loses_the_shortcut(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = make_folder(tmp_path)
    store = tmp_path / CACHE_FILE
    store.write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.WARNING), FingerprintCache(store) as cache:
        assert cached(folder, cache)["cid"] == str(path_cid(folder))
    assert "unusable" in caplog.text


def test_build_manifest_keeps_the_cache_in_cache_dir(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    settle()
    manifest = build_manifest(
        name="r", config={}, data={"corpus": folder}, code_root=tmp_path, cache_dir=tmp_path / "c"
    )
    assert manifest["data"]["corpus"]["cid"] == str(path_cid(folder))
    with FingerprintCache(tmp_path / "c" / CACHE_FILE) as cache:
        cached(folder, cache)
        assert cache.hits == 6


# -- Hugging Face datasets ------------------------------------------------------------


def table() -> Any:
    return datasets.Dataset.from_dict({"text": ["a", "bb", "ccc", "dd"], "label": [0, 1, 1, 0]})


def test_an_in_memory_hf_dataset_is_its_arrow_content(tmp_path: Path) -> None:
    found = fingerprint(table())
    assert found["kind"] == "hf-dataset" and found["rows"] == 4
    assert found["features"]["text"] == {"dtype": "string", "_type": "Value"}
    assert found == fingerprint(table())  # the same content, the same fingerprint
    other = datasets.Dataset.from_dict({"text": ["a", "bb", "ccc", "de"], "label": [0, 1, 1, 0]})
    assert fingerprint(other)["arrow_sha256"] != found["arrow_sha256"]
    reordered = fingerprint(table().select([3, 2, 1, 0]))
    assert reordered["arrow_sha256"] != found["arrow_sha256"]


def test_a_saved_hf_dataset_dict_is_its_arrow_files(tmp_path: Path) -> None:
    splits = datasets.DatasetDict(train=table(), test=table().select([0]))
    splits.save_to_disk(str(tmp_path / "ds"))
    loaded = datasets.load_from_disk(str(tmp_path / "ds"))
    found = fingerprint(loaded)
    assert found["kind"] == "hf-dataset-dict" and set(found["splits"]) == {"train", "test"}
    train = found["splits"]["train"]
    arrow = tmp_path / "ds" / "train" / "data-00000-of-00001.arrow"
    assert train["rows"] == 4 and found["splits"]["test"]["rows"] == 1
    assert train["files"] == [
        {
            "kind": "file",
            "name": arrow.name,
            "cid": str(file_cid(arrow)),
            "bytes": arrow.stat().st_size,
        }
    ]
    assert "arrow_sha256" not in train
    # a shuffle keeps the files and adds the order (an indices file, or in memory)
    assert list(loaded["train"].shuffle(seed=0)["text"]) != list(loaded["train"]["text"])
    shuffled = fingerprint(loaded["train"].shuffle(seed=0))
    assert shuffled != train
    in_memory = fingerprint(loaded["train"].shuffle(seed=0, keep_in_memory=True))
    assert in_memory["files"] == train["files"] and "indices_sha256" in in_memory
    canonical_json(found)  # a manifest can hold it


# -- torch datasets -------------------------------------------------------------------


def test_a_tensor_dataset_and_its_loader_are_its_tensors() -> None:
    x, y = torch.arange(12.0).reshape(6, 2), torch.tensor([0, 1, 0, 1, 1, 0])
    found = fingerprint(TensorDataset(x, y))
    assert found == {
        "kind": "tensor-dataset",
        "rows": 6,
        "tensors": [fingerprint(x), fingerprint(y)],
    }
    assert fingerprint(DataLoader(TensorDataset(x, y), batch_size=2)) == found
    sub = fingerprint(Subset(TensorDataset(x, y), [0, 2]))
    assert sub["kind"] == "subset" and sub["of"] == found and sub["rows"] == 2
    assert fingerprint(ConcatDataset([TensorDataset(x), TensorDataset(y)]))["kind"] == "concat"


class Images(Dataset[int]):
    def __init__(self, root: Path) -> None:
        self.root = root

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> int:
        return i

    def ledger_fingerprint(self) -> Path:
        return self.root


class Opaque(Dataset[int]):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> int:
        return i


def test_a_dataset_gives_its_own_fingerprint_or_is_refused_saying_how(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    assert fingerprint(DataLoader(Images(folder))) == fingerprint(folder)
    with pytest.raises(InputError) as info:
        build_manifest(name="r", config={}, data={"train": Opaque()}, code_root=tmp_path)
    assert "'train'" in info.value.message and "Opaque" in info.value.message
    assert info.value.hint is not None and "ledger_fingerprint()" in info.value.hint


def test_arrays_and_bytes_are_as_before() -> None:
    array = np.arange(6, dtype=np.int32)
    assert fingerprint(array)["sha256"] == fingerprint(torch.from_numpy(array))["sha256"]
    assert fingerprint(b"abc")["bytes"] == 3


def test_a_folder_is_not_refused_any_more(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    shutil.copytree(folder, tmp_path / "copy")
    assert fingerprint(folder)["cid"] == fingerprint(tmp_path / "copy")["cid"]
