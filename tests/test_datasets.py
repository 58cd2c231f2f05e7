"""Dataset identities from manifests' data fingerprints (ledger.datasets)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ledger.datasets import MAX_PARTS, dataset_cid, parse_dataset, run_datasets
from ledger.documents import canonical_json
from ledger.errors import BadIdError
from ledger.hashing.cid import Cid, bytes_cid, path_cid
from ledger.record.data import fingerprint


def _folder(root: Path) -> Path:
    (root / "d" / "sub").mkdir(parents=True)
    (root / "d" / "a.txt").write_bytes(b"a" * 10)
    (root / "d" / "sub" / "b.txt").write_bytes(b"b" * 300_000)
    return root / "d"


def test_a_folder_is_named_by_its_ipfs_add_r_cid(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    found = fingerprint(folder)
    cid = dataset_cid(found)
    assert cid == path_cid(folder)
    refs = run_datasets({"data": {"train": found}})
    assert [(r.key, r.cid, r.kind, r.part_of) for r in refs] == [
        ("train", str(cid), "folder", None)
    ]
    assert refs[0].digest == "0x" + cid.digest.hex()


def test_other_fingerprints_are_named_by_their_document_and_hold_parts(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    files = fingerprint([folder / "a.txt", folder / "sub" / "b.txt"])
    cid = dataset_cid(files)
    assert cid == bytes_cid(canonical_json(files))
    refs = run_datasets({"data": {"train": files}})
    assert refs[0].cid == str(cid) and refs[0].kind == "files" and refs[0].part_of is None
    parts = refs[1:]
    assert {p.cid for p in parts} == {
        str(path_cid(folder / "a.txt")),
        str(path_cid(folder / "sub" / "b.txt")),
    }
    assert all(p.part_of == str(cid) and p.key == "train" for p in parts)
    # the same content under another key is the same dataset
    again = run_datasets({"data": {"eval": dict(files)}})
    assert again[0].cid == refs[0].cid


def test_a_changed_file_is_another_dataset(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    before = dataset_cid(fingerprint(folder))
    (folder / "a.txt").write_bytes(b"poison")
    assert dataset_cid(fingerprint(folder)) != before


def test_cidv0_and_cidv1_of_a_folder_are_one_dataset(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    v0 = path_cid(folder, cid_version=0)
    refs = run_datasets({"data": {"x": {"kind": "folder", "cid": str(v0)}}})
    assert refs[0].digest == "0x" + v0.digest.hex()
    assert refs[0].cid == str(v0.to_v1())
    assert parse_dataset(str(v0)).digest == parse_dataset(refs[0].cid).digest
    assert parse_dataset(refs[0].digest).digest == v0.digest


@pytest.mark.parametrize(
    "data",
    [
        None,
        "text",
        [1, 2],
        {"a": "not a mapping"},
        {"a": {"kind": "folder", "cid": "not a cid"}},  # named by its document instead
        {"a": {"kind": "files", "files": [{"kind": "file", "cid": 7}, "x", None]}},
        {"a": {"kind": "bad", "v": float("nan")}},  # not canonical JSON: left out
        {"a": {"kind": ["folder"], "cid": 1, "x": [{"kind": {"k": 1}, "cid": "c"}]}},
        {"a": {"kind": None, "files": [{"kind": ["file"], "cid": str(bytes_cid(b"x"))}]}},
    ],
)
def test_hostile_data_sections_never_raise(data: object) -> None:
    refs = run_datasets({"data": data})
    for ref in refs:
        Cid.parse(ref.cid)


def test_deep_and_wide_fingerprints_are_bounded() -> None:
    deep: dict[str, object] = {"kind": "file", "cid": str(bytes_cid(b"leaf"))}
    for _ in range(200):
        deep = {"kind": "list", "items": [deep]}
    assert len(run_datasets({"data": {"deep": deep}})) == 1  # the leaf is too deep to see
    wide = {
        "kind": "files",
        "files": [
            {"kind": "file", "cid": str(bytes_cid(str(i).encode()))} for i in range(MAX_PARTS + 50)
        ],
    }
    assert len(run_datasets({"data": {"wide": wide}})) <= MAX_PARTS + 2


@pytest.mark.parametrize(
    "text", ["", " ", "bafy", "0x12", "Qm" + "1" * 44, "x" * 300, "0x" + "g" * 64]
)
def test_bad_dataset_names_are_input_errors_naming_the_field(text: str) -> None:
    with pytest.raises(BadIdError) as caught:
        parse_dataset(text, field="query.cid")
    assert caught.value.field == "query.cid"


def test_a_fingerprint_nested_as_deep_as_json_allows_is_left_out() -> None:
    import json

    text = '{"kind": "x", "v": ' + "[" * 5000 + "]" * 5000 + "}"
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # as a process that imported py_ecc has it
    try:
        deep = json.loads(text)
        refs = run_datasets({"data": {"deep": deep, "ok": {"kind": "bytes", "sha256": "a"}}})
    finally:
        sys.setrecursionlimit(limit)
    assert [r.key for r in refs] == ["ok"] or [r.key for r in refs] == ["deep", "ok"]
