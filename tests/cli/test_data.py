"""``ledger data add|show|ls|revoke`` and ``ledger verify`` of a model trained on a
revoked dataset, as real processes against the session's Anvil."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ledger.hashing.cid import path_cid
from ledger.ids import Relation
from ledger.store import LocalStore
from tests.cli.test_cli import chain_env, ledger
from tests.conftest import OTHER_KEYS, Chain
from tests.runs import record_run


def _dataset(root: Path) -> Path:
    (root / "nested").mkdir(parents=True)
    (root / "a.csv").write_text("x,y\n1,2\n")
    (root / "nested" / "b.bin").write_bytes(bytes(range(256)) * 2000)
    return root


def test_add_prints_the_folder_cid_and_refuses_what_is_not_there(tmp_path: Path) -> None:
    folder = _dataset(tmp_path / "D")
    env = {"LEDGER_HOME": str(tmp_path / "data")}
    out = ledger("data", "add", str(folder), "--json", env=env)
    assert out.returncode == 0, out.stderr
    added = json.loads(out.stdout)
    assert added["cid"] == str(path_cid(folder)) and added["kind"] == "folder"
    assert added["digest"] == "0x" + path_cid(folder).digest.hex()
    plain = ledger("data", "add", str(folder), env=env)
    assert plain.stdout.split()[0] == added["cid"]
    glob = ledger("data", "add", str(tmp_path / "D" / "**" / "*.bin"), "--json", env=env)
    assert glob.returncode == 0, glob.stderr
    assert json.loads(glob.stdout)["kind"] == "files"
    missing = ledger("data", "add", str(tmp_path / "nope"), env=env)
    assert missing.returncode == 11 and "nope" in missing.stderr
    nothing = ledger("data", "add", str(tmp_path / "*.nothing"), env=env)
    assert nothing.returncode == 11 and "no file matches" in nothing.stderr
    stored = ledger("data", "add", str(folder), "--store", "--json", env=env)
    assert stored.returncode == 0, stored.stderr
    assert json.loads(stored.stdout)["stored"]


def test_show_ls_revoke_and_verify(chain: Chain, tmp_path: Path) -> None:
    env = chain_env(chain, tmp_path / "data")
    store = LocalStore(tmp_path / "data" / "store")
    d_folder = _dataset(tmp_path / "D")
    e_folder = _dataset(tmp_path / "E")
    (e_folder / "a.csv").write_text("other")
    d = json.loads(ledger("data", "add", str(d_folder), "--json", env=env).stdout)
    e = json.loads(ledger("data", "add", str(e_folder), "--json", env=env).stdout)
    reg = chain.registry
    trained = record_run(reg, store, "on-d", data={"train": d["fingerprint"]})
    tuned = record_run(reg, store, "tuned", parents=[(trained.run_id, Relation.FINE_TUNE)])
    other = record_run(reg, store, "on-e", data={"train": e["fingerprint"]})

    listed = ledger("data", "ls", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {r["cid"]: r for r in json.loads(listed.stdout)}
    assert rows[d["cid"]]["runs"] == 1 and rows[e["cid"]]["runs"] == 1
    assert not rows[d["cid"]]["revoked"]

    shown = ledger("data", "show", str(d_folder), "--json", env=env)  # by its path
    assert shown.returncode == 0, shown.stderr
    body = json.loads(shown.stdout)
    assert body["cid"] == d["cid"] and body["revoked"] is False
    assert [r["run_id"] for r in body["used_by"]] == [trained.hex]
    assert [r["run_id"] for r in body["descendants"]] == [tuned.hex]

    model = tmp_path / "tuned.bin"
    model.write_bytes(tuned.weights[-1])
    assert ledger("verify", str(model), env=env).returncode == 0

    not_admin = ledger(
        "data",
        "revoke",
        d["cid"],
        "--reason",
        "x",
        env={**env, "LEDGER_PRIVATE_KEY": OTHER_KEYS[0]},
    )
    assert not_admin.returncode == 30 and "admin" in not_admin.stderr
    bad = ledger("data", "revoke", "not-a-cid", "--reason", "x", env=env)
    assert bad.returncode == 11 and "not-a-cid" in bad.stderr

    revoked = ledger("data", "revoke", d["cid"], "--reason", "personal data", env=env)
    assert revoked.returncode == 0, revoked.stderr
    twice = ledger("data", "revoke", d["digest"], "--reason", "again", env=env)
    assert twice.returncode == 11 and "already revoked" in twice.stderr

    verdict = ledger("verify", str(model), "--json", env=env)
    assert verdict.returncode == 5, verdict.stdout + verdict.stderr
    report = json.loads(verdict.stdout)
    check = next(c for c in report["checks"] if c["name"] == "data not revoked")
    assert d["cid"] in check["detail"] and "personal data" in check["detail"]
    assert trained.hex in check["detail"]
    clean = tmp_path / "other.bin"
    clean.write_bytes(other.weights[-1])
    assert ledger("verify", str(clean), env=env).returncode == 0

    shown = json.loads(ledger("data", "show", d["cid"], "--json", env=env).stdout)
    assert shown["revoked"] is True and shown["revocation"]["reason"] == "personal data"
    rows = {r["cid"]: r for r in json.loads(ledger("data", "ls", "--json", env=env).stdout)}
    assert rows[d["cid"]]["revoked"] and not rows[e["cid"]]["revoked"]
    plain = ledger("data", "show", d["cid"], "--no-sync", env=env).stdout
    assert "REVOKED: personal data" in plain and trained.hex in plain and tuned.hex in plain
    lines = ledger("data", "ls", env=env).stdout.splitlines()
    assert any(d["cid"] in line and "REVOKED: personal data" in line for line in lines)
    assert any(e["cid"] in line and "REVOKED" not in line for line in lines)


@pytest.mark.parametrize("name", ["nope", "0x1234", "Qm"])
def test_show_refuses_what_is_not_a_dataset_name(tmp_path: Path, name: str) -> None:
    out = ledger("data", "show", name, "--no-sync", env={"LEDGER_HOME": str(tmp_path)})
    assert out.returncode == 11 and name in out.stderr


def test_add_a_saved_hugging_face_dataset(tmp_path: Path) -> None:
    import datasets

    splits = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"text": ["a", "bb"], "label": [0, 1]})}
    )
    splits.save_to_disk(str(tmp_path / "ds"))
    env = {"LEDGER_HOME": str(tmp_path / "data")}
    out = ledger("data", "add", f"hf:{tmp_path / 'ds'}", "--json", env=env)
    assert out.returncode == 0, out.stderr
    added = json.loads(out.stdout)
    assert added["kind"] == "hf-dataset-dict"
    from ledger.datasets import dataset_cid

    assert added["cid"] == str(dataset_cid(added["fingerprint"]))
    empty = ledger("data", "add", "hf:", env=env)
    assert empty.returncode == 11
