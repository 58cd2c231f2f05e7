"""Run manifests (``ledger.record.manifest``); canonical JSON is in test_documents.py.

Git state is tested in throw-away repositories made with ``git init`` under
``tmp_path``; global and system git configuration is switched off so the
machine's settings cannot leak in.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ledger.documents import canonical_json
from ledger.errors import InputError
from ledger.hashing.cid import file_cid
from ledger.record.manifest import (
    DIGEST_SCHEMES,
    MANIFEST_SCHEMA,
    build_manifest,
    code_version,
    environment,
    fingerprint,
    start_code_version,
)

FIXED_TIME = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user/system git config; never discover a repository above ``tmp_path``."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-global-gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Test")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "test@example.invalid")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Test")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "test@example.invalid")


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-c", "commit.gpgsign=false", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q")
    (root / "train.py").write_text("lr = 0.1\n")
    git(root, "add", "train.py")
    git(root, "commit", "-q", "-m", "first")
    return root


# -- code version ---------------------------------------------------------------------


def test_a_clean_repo_has_its_commit_and_no_digest(repo: Path) -> None:
    code = code_version(repo)
    assert code == {
        "vcs": "git",
        "commit": git(repo, "rev-parse", "HEAD"),
        "dirty": False,
        "uncommitted_sha256": None,
    }
    assert len(code["commit"]) == 40


def test_uncommitted_changes_are_dirty_and_digested(repo: Path) -> None:
    (repo / "train.py").write_text("lr = 0.2\n")
    first = code_version(repo)
    assert first["dirty"] is True
    assert isinstance(first["uncommitted_sha256"], str)
    assert len(first["uncommitted_sha256"]) == 64
    assert first["commit"] == git(repo, "rev-parse", "HEAD")

    # same diff, same digest
    assert code_version(repo)["uncommitted_sha256"] == first["uncommitted_sha256"]

    (repo / "train.py").write_text("lr = 0.3\n")
    second = code_version(repo)
    assert second["dirty"] is True
    assert second["uncommitted_sha256"] != first["uncommitted_sha256"]

    (repo / "train.py").write_text("lr = 0.1\n")  # back to the committed content
    assert code_version(repo) == {**first, "dirty": False, "uncommitted_sha256": None}


def test_staged_changes_count_as_uncommitted(repo: Path) -> None:
    (repo / "train.py").write_text("lr = 0.5\n")
    git(repo, "add", "train.py")
    code = code_version(repo)
    assert code["dirty"] is True
    assert code["uncommitted_sha256"] is not None


def test_an_untracked_file_makes_the_repo_dirty(repo: Path) -> None:
    (repo / "model.py").write_text("LAYERS = 2\n")
    code = code_version(repo)
    assert code["dirty"] is True
    assert code["uncommitted_sha256"] is not None
    # an ignored file does not
    (repo / "model.py").unlink()
    (repo / ".gitignore").write_text("*.log\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-q", "-m", "ignore logs")
    (repo / "run.log").write_text("noise\n")
    assert code_version(repo)["dirty"] is False


def test_editing_an_untracked_file_changes_the_digest(repo: Path) -> None:
    (repo / "model.py").write_text("LAYERS = 2\n")
    before = code_version(repo)["uncommitted_sha256"]
    (repo / "model.py").write_text("LAYERS = 200\n")
    after = code_version(repo)["uncommitted_sha256"]
    assert before is not None
    assert after != before


def test_outside_any_repository_there_is_no_vcs(tmp_path: Path) -> None:
    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    assert code_version(outside) == {"vcs": None}


def test_a_repository_without_commits_has_no_vcs(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    git(fresh, "init", "-q")
    assert code_version(fresh) == {"vcs": None}


# -- environment and data fingerprints ------------------------------------------------


def test_environment_names_python_and_a_package_digest() -> None:
    env = environment()
    assert env["python"] == platform.python_version()
    assert env["implementation"] == "cpython"
    assert len(env["packages_sha256"]) == 64
    int(env["packages_sha256"], 16)
    assert env["packages_count"] > 10
    assert env["torch"] == torch.__version__  # torch is imported by this test module
    assert environment() == env


def test_fingerprint_of_a_numpy_array() -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert fingerprint(array) == {
        "kind": "array",
        "dtype": "float32",
        "shape": [2, 3],
        "sha256": hashlib.sha256(array.tobytes()).hexdigest(),
    }
    assert fingerprint(array.astype(np.float64))["sha256"] != fingerprint(array)["sha256"]
    assert fingerprint(array.reshape(3, 2))["shape"] == [3, 2]


def test_fingerprint_of_a_tensor_equals_that_of_its_array() -> None:
    tensor = torch.arange(12, dtype=torch.int64).reshape(3, 4).t()  # non-contiguous
    result = fingerprint(tensor)
    assert result == fingerprint(np.ascontiguousarray(tensor.numpy()))
    assert result["dtype"] == "int64"
    assert result["shape"] == [4, 3]
    grad = torch.ones(3, requires_grad=True)
    expected = hashlib.sha256(np.ones(3, np.float32).tobytes()).hexdigest()
    assert fingerprint(grad)["sha256"] == expected


def test_fingerprint_of_a_bfloat16_tensor() -> None:
    tensor = torch.tensor([1.0, 2.0, 3.0], dtype=torch.bfloat16)
    result = fingerprint(tensor)
    assert result["shape"] == [3]
    assert result["sha256"] != fingerprint(tensor.to(torch.float16))["sha256"]


def test_fingerprint_of_a_file_is_its_cid(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text("x,y\n1,2\n")
    expected = {"kind": "file", "name": "train.csv", "cid": str(file_cid(path)), "bytes": 8}
    assert fingerprint(path) == expected
    assert fingerprint(str(path)) == expected


def test_fingerprint_of_bytes() -> None:
    assert fingerprint(b"abc") == {
        "kind": "bytes",
        "sha256": hashlib.sha256(b"abc").hexdigest(),
        "bytes": 3,
    }


def test_fingerprint_of_a_missing_path_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no file at"):
        fingerprint(tmp_path / "missing.csv")
    assert fingerprint(tmp_path)["kind"] == "folder"  # folders: tests/record/test_data.py


def test_fingerprint_of_something_else_is_an_input_error() -> None:
    with pytest.raises(InputError, match="cannot fingerprint a set"):
        fingerprint({1, 2})


# -- build_manifest -------------------------------------------------------------------


def test_build_manifest_describes_the_whole_run(repo: Path, tmp_path: Path) -> None:
    data_file = tmp_path / "prices.csv"
    data_file.write_bytes(b"t,p\n0,1.5\n1,1.6\n")
    array = np.linspace(0, 1, 5, dtype=np.float64)
    tensor = torch.ones(2, 2)
    parents = [{"run": "0xabc", "relation": "finetune"}]
    manifest = build_manifest(
        name="price-forecast",
        config={"lr": 0.001, "epochs": 3, "layers": [16, 8]},
        data={
            "train": data_file,
            "features": array,
            "mask": tensor,
            "external": {"kind": "url", "href": "https://example.invalid/x"},
        },
        seed=1234,
        parents=parents,
        code_root=repo,
        world_size=4,
        extra={"note": "hi"},
        created_at=FIXED_TIME,
    )
    assert manifest["schema"] == MANIFEST_SCHEMA == "ledger.manifest/v1"
    assert manifest["name"] == "price-forecast"
    assert manifest["created_at"] == "2024-05-06T07:08:09.123456+00:00"
    assert manifest["config"] == {"lr": 0.001, "epochs": 3, "layers": [16, 8]}
    assert manifest["code"] == {
        "vcs": "git",
        "commit": git(repo, "rev-parse", "HEAD"),
        "dirty": False,
        "uncommitted_sha256": None,
    }
    assert manifest["environment"]["python"] == platform.python_version()
    assert len(manifest["environment"]["packages_sha256"]) == 64
    assert manifest["data"]["train"] == {
        "kind": "file",
        "name": "prices.csv",
        "cid": str(file_cid(data_file)),
        "bytes": 16,
    }
    assert manifest["data"]["features"]["sha256"] == hashlib.sha256(array.tobytes()).hexdigest()
    assert manifest["data"]["features"]["dtype"] == "float64"
    assert manifest["data"]["features"]["shape"] == [5]
    assert manifest["data"]["mask"] == fingerprint(tensor.numpy())
    assert manifest["data"]["external"] == {"kind": "url", "href": "https://example.invalid/x"}
    assert manifest["seed"] == 1234
    assert manifest["parents"] == parents
    assert manifest["distributed"] == {"world_size": 4}
    assert manifest["digests"] == DIGEST_SCHEMES
    assert manifest["digests"] == {
        "file": "cidv1-raw-sha256-256k",
        "tensors": "tensors-sha256-v1",
        "documents": "jcs-rfc8785",
    }
    assert manifest["extra"] == {"note": "hi"}
    # it is a canonical-JSON document
    assert json.loads(canonical_json(manifest)) == manifest


def test_build_manifest_records_a_dirty_tree(repo: Path) -> None:
    (repo / "train.py").write_text("lr = 0.7\n")
    manifest = build_manifest(name="r", config={}, code_root=repo, created_at=FIXED_TIME)
    assert manifest["code"]["dirty"] is True
    assert manifest["code"]["uncommitted_sha256"] == code_version(repo)["uncommitted_sha256"]


def test_git_asked_ahead_gives_the_same_code_version(repo: Path, tmp_path: Path) -> None:
    """The hook starts git before its other start-up work (start_code_version);
    the manifest's code field is the one code_version gives, clean or dirty,
    and outside a repository."""
    clean = start_code_version(repo)
    assert build_manifest(name="r", config={}, code=clean)["code"] == code_version(repo)
    (repo / "train.py").write_text("lr = 0.9\n")
    dirty = build_manifest(name="r", config={}, code=start_code_version(repo))["code"]
    assert dirty["dirty"] is True and dirty == code_version(repo)
    outside = tmp_path / "plain"
    outside.mkdir()
    assert start_code_version(outside)() == {"vcs": None}


def test_build_manifest_outside_a_repository(tmp_path: Path) -> None:
    outside = tmp_path / "plain"
    outside.mkdir()
    manifest = build_manifest(name="r", config={}, code_root=outside, created_at=FIXED_TIME)
    assert manifest["code"] == {"vcs": None}
    assert manifest["seed"] is None
    assert manifest["parents"] == []
    assert manifest["data"] == {}
    assert "extra" not in manifest


def test_build_manifest_with_a_missing_data_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        build_manifest(
            name="r", config={}, data={"train": tmp_path / "gone.csv"}, code_root=tmp_path
        )
    assert "gone.csv" in str(info.value)


def test_build_manifest_refuses_nan_in_the_config_by_path(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        build_manifest(
            name="r",
            config={"optim": {"lr": float("nan")}},
            code_root=tmp_path,
        )
    assert "manifest.config.optim.lr" in str(info.value)


def test_manifests_differ_only_by_created_at(tmp_path: Path) -> None:
    later = FIXED_TIME + timedelta(microseconds=1)
    args: dict[str, Any] = {"name": "r", "config": {"lr": 0.1}, "seed": 7, "code_root": tmp_path}
    one = build_manifest(**args, created_at=FIXED_TIME)
    same = build_manifest(**args, created_at=FIXED_TIME)
    two = build_manifest(**args, created_at=later)
    assert canonical_json(one) == canonical_json(same)
    assert canonical_json(one) != canonical_json(two)
    assert {k for k in one if one[k] != two[k]} == {"created_at"}


def test_created_at_defaults_to_an_utc_timestamp_with_microseconds(tmp_path: Path) -> None:
    manifest = build_manifest(name="r", config={}, code_root=tmp_path)
    text = manifest["created_at"]
    assert text.endswith("+00:00")
    assert len(text.split("T")[1].split("+")[0]) == len("07:08:09.123456")
    assert datetime.fromisoformat(text).utcoffset() == timedelta(0)


def test_the_package_list_equals_the_full_metadata_parse() -> None:
    from importlib import metadata

    from ledger.record.manifest import installed_packages

    parsed = sorted(
        f"{(d.metadata['Name'] or '').lower()}=={d.version}" for d in metadata.distributions()
    )
    assert installed_packages() == parsed and len(parsed) > 20


def test_the_kept_package_list_follows_installs_upgrades_and_removals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ledger.record.manifest import installed_packages

    site = tmp_path / "site"

    def install(version: str) -> Path:
        folder = site / f"fakepkg-{version}.dist-info"
        folder.mkdir(parents=True)
        metadata = f"Metadata-Version: 2.1\nName: FakePkg\nVersion: {version}\n"
        (folder / "METADATA").write_text(metadata)
        return folder

    first = install("1.0")
    monkeypatch.syspath_prepend(str(site))
    cache = tmp_path / "cache"
    assert "fakepkg==1.0" in installed_packages(cache)
    assert (cache / "packages.json").is_file()
    assert installed_packages(cache) == installed_packages()  # kept == read afresh

    shutil.rmtree(first)  # an upgrade: the old metadata folder goes, a new one comes
    install("2.0")
    listed = installed_packages(cache)
    assert "fakepkg==2.0" in listed and "fakepkg==1.0" not in listed

    (cache / "packages.json").write_text("{not json")  # a damaged cache is rebuilt
    assert installed_packages(cache) == listed
    shutil.rmtree(site / "fakepkg-2.0.dist-info")  # a removal
    assert not any(p.startswith("fakepkg==") for p in installed_packages(cache))


def test_the_platform_text_is_kept_and_recomputed_when_its_key_changes(tmp_path: Path) -> None:
    from ledger.record.manifest import _platform_text, environment

    cache = tmp_path / "cache"
    assert _platform_text(cache) == platform.platform()
    kept = json.loads((cache / "platform.json").read_text())
    assert kept["value"] == platform.platform()

    # what is read back is the kept text while the key holds ...
    (cache / "platform.json").write_text(json.dumps({**kept, "value": "kept-text"}))
    assert environment(cache)["platform"] == "kept-text"
    # ... and computed anew when the key differs (another kernel or interpreter)
    (cache / "platform.json").write_text(json.dumps({"key": "another", "value": "stale"}))
    assert _platform_text(cache) == platform.platform()
    (cache / "platform.json").write_text("{not json")  # a damaged cache is rebuilt
    assert _platform_text(cache) == platform.platform()
    assert json.loads((cache / "platform.json").read_text())["value"] == platform.platform()
