"""Datasets end to end on the real chain, store and index (SQLite and PostgreSQL):
runs trained on D and E, a fine-tune and a distillation of a D-run; D is revoked on
chain; verify, the index and the API agree on which models it taints."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ledger.chain.admin import RegistryAdmin
from ledger.chain.reader import RegistryReader
from ledger.config import Settings
from ledger.datasets import dataset_cid
from ledger.errors import LedgerError
from ledger.hashing.cid import Cid, path_cid
from ledger.ids import Relation, to_hex
from ledger.index.indexer import Indexer
from ledger.record.data import fingerprint
from ledger.store import LocalStore
from ledger.verify import Outcome, Verifier
from tests.conftest import Chain
from tests.runs import Recorded, record_run

MakeClient = Callable[..., TestClient]
PROBLEM = "application/problem+json"


def _folder(path: Path, seed: bytes) -> Path:
    (path / "shards").mkdir(parents=True)
    (path / "shards" / "0.bin").write_bytes(seed * 1000)
    (path / "labels.csv").write_bytes(b"x,y\n" + seed)
    return path


@pytest.fixture
def trained(
    chain: Chain, data_store: LocalStore, indexer: Indexer, tmp_path: Path
) -> dict[str, Any]:
    reg = chain.registry
    d = fingerprint(_folder(tmp_path / "D", b"d"))
    e = fingerprint(_folder(tmp_path / "E", b"e"))
    (tmp_path / "x.bin").write_bytes(os.urandom(1000))
    (tmp_path / "y.bin").write_bytes(os.urandom(1000))
    shards = fingerprint([tmp_path / "x.bin", tmp_path / "y.bin"])
    d1 = record_run(reg, data_store, "d-one", data={"train": d})
    d2 = record_run(reg, data_store, "d-two", data={"train": d, "eval": e})
    e1 = record_run(reg, data_store, "e-one", data={"train": e})
    tuned = record_run(reg, data_store, "tuned", parents=[(d1.run_id, Relation.FINE_TUNE)], data={})
    small = record_run(reg, data_store, "small", parents=[(tuned.run_id, Relation.DISTILLATION)])
    sharded = record_run(reg, data_store, "sharded", data={"train": shards})
    indexer.run_once()
    return {
        "D": dataset_cid(d),
        "E": dataset_cid(e),
        "S": dataset_cid(shards),
        "x": path_cid(tmp_path / "x.bin"),
        "d1": d1,
        "d2": d2,
        "e1": e1,
        "tuned": tuned,
        "small": small,
        "sharded": sharded,
    }


def _revoke(settings: Settings, cid: Cid, reason: str) -> None:
    RegistryAdmin.connect(settings).revoke_artifact(cid.digest, reason)


def _verify(settings: Settings, store: LocalStore, run: Recorded) -> Any:
    assert run.final_cid is not None
    return Verifier(RegistryReader.connect(settings), store).verify_cid(run.final_cid)


def test_datasets_are_indexed_and_listed(make_client: MakeClient, trained: dict[str, Any]) -> None:
    client = make_client()
    body = client.get("/api/v1/datasets").json()
    by_cid = {d["cid"]: d for d in body["datasets"]}
    assert set(by_cid) == {str(trained["D"]), str(trained["E"]), str(trained["S"])}
    assert by_cid[str(trained["D"])]["runs"] == 2
    assert by_cid[str(trained["D"])]["kind"] == "folder"
    assert by_cid[str(trained["E"])]["runs"] == 2
    assert not any(d["revoked"] for d in body["datasets"])
    one = client.get("/api/v1/datasets", params={"limit": 1}).json()
    two = client.get("/api/v1/datasets", params={"limit": 5, "cursor": one["next_cursor"]})
    assert [one["datasets"][0]["cid"]] + [d["cid"] for d in two.json()["datasets"]] == [
        d["cid"] for d in body["datasets"]
    ]

    detail = client.get(f"/api/v1/datasets/{trained['D']}").json()
    assert {r["run_id"] for r in detail["used_by"]} == {trained["d1"].hex, trained["d2"].hex}
    assert {(r["run_id"], r["via"], r["generation"]) for r in detail["descendants"]} == {
        (trained["tuned"].hex, trained["d1"].hex, 1),
        (trained["small"].hex, trained["d1"].hex, 2),
    }
    assert all(r["final_weights_digest"] for r in detail["used_by"])
    # the same dataset by its 0x digest, and a part by its own CID
    by_digest = client.get(f"/api/v1/datasets/{to_hex(trained['D'].digest)}").json()
    assert by_digest["used_by"] == detail["used_by"]
    part = client.get(f"/api/v1/datasets/{trained['x']}").json()
    assert part["part_of"] == [str(trained["S"])]
    assert [r["run_id"] for r in part["used_by"]] == [trained["sharded"].hex]

    direct = client.get(f"/api/v1/datasets/{trained['D']}/runs").json()["runs"]
    assert {r["run_id"] for r in direct} == {trained["d1"].hex, trained["d2"].hex}
    every = client.get(f"/api/v1/datasets/{trained['D']}/runs", params={"transitive": "true"})
    assert {r["run_id"] for r in every.json()["runs"]} == {
        trained[n].hex for n in ("d1", "d2", "tuned", "small")
    }
    runs = client.get("/api/v1/runs", params={"q": f"data:{trained['D']}"}).json()
    assert {r["run_id"] for r in runs["runs"]} == {trained["d1"].hex, trained["d2"].hex}
    either = client.get(
        "/api/v1/runs", params={"q": f"data:{trained['E']} OR data:{trained['x']}"}
    ).json()
    assert {r["run_id"] for r in either["runs"]} == {
        trained["d2"].hex,
        trained["e1"].hex,
        trained["sharded"].hex,
    }
    run = client.get(f"/api/v1/runs/{trained['d2'].hex}").json()
    assert {(d["key"], d["cid"]) for d in run["datasets"]} == {
        ("train", str(trained["D"])),
        ("eval", str(trained["E"])),
    }
    assert run["data_taint"] == [] and run["revoked_data"] == []


@pytest.mark.parametrize(
    "bad",
    ["nope", "0x12", "Qm" + "1" * 44, "bafy" + "z" * 200, "%00", "0x" + "f" * 64 + "00"],
)
def test_bad_dataset_names_are_4xx_problems(
    make_client: MakeClient, trained: dict[str, Any], bad: str
) -> None:
    client = make_client()
    response = client.get(f"/api/v1/datasets/{bad}")
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    listed = client.get("/api/v1/runs", params={"q": f"data:{bad}"})
    assert listed.status_code == 422 and listed.headers["content-type"].startswith(PROBLEM)
    cursor = client.get("/api/v1/datasets", params={"cursor": bad})
    assert cursor.status_code == 422
    assert 400 <= client.get(f"/api/v1/datasets/{bad}/runs").status_code < 500
    unknown = client.get(f"/api/v1/datasets/{to_hex(os.urandom(32))}")
    assert unknown.status_code == 404 and unknown.headers["content-type"].startswith(PROBLEM)


def test_revoking_d_taints_every_model_trained_on_it_or_derived(
    make_client: MakeClient,
    trained: dict[str, Any],
    settings: Settings,
    data_store: LocalStore,
    indexer: Indexer,
) -> None:
    t = trained
    assert _verify(settings, data_store, t["small"]).outcome is Outcome.VERIFIED
    _revoke(settings, t["D"], "licence withdrawn")
    for name in ("d1", "d2", "tuned", "small"):
        report = _verify(settings, data_store, t[name])
        assert report.outcome is Outcome.REVOKED, (name, report.checks)
        check = next(c for c in report.checks if c.name == "data not revoked")
        assert not check.ok
        assert str(t["D"]) in check.detail and "licence withdrawn" in check.detail
        trainer = t["d1"] if name in ("tuned", "small") else t[name]
        if name in ("tuned", "small"):
            assert f"ancestor run {trainer.hex}" in check.detail
        else:
            assert "this run" in check.detail
    small = _verify(settings, data_store, t["small"])
    detail = next(c for c in small.checks if c.name == "data not revoked").detail
    assert "distillation" in detail and "fine-tune" in detail  # the path to the D-run
    for name in ("e1", "sharded"):
        report = _verify(settings, data_store, t[name])
        assert report.outcome is Outcome.VERIFIED, (name, report.checks)
        assert any(c.name == "data not revoked" and c.ok for c in report.checks)

    indexer.run_once()
    client = make_client()
    listed = {d["cid"]: d for d in client.get("/api/v1/datasets").json()["datasets"]}
    assert listed[str(t["D"])]["revoked"] is True
    assert listed[str(t["D"])]["revocation"]["reason"] == "licence withdrawn"
    assert listed[str(t["E"])]["revoked"] is False
    runs = {r["run_id"]: r for r in client.get("/api/v1/runs").json()["runs"]}
    for name in ("d1", "d2", "tuned", "small"):
        assert runs[t[name].hex]["revoked_data"] == [str(t["D"])]
    for name in ("e1", "sharded"):
        assert runs[t[name].hex]["revoked_data"] == []
    small_run = client.get(f"/api/v1/runs/{t['small'].hex}").json()
    assert [(x["dataset"], x["run_id"], x["reason"]) for x in small_run["data_taint"]] == [
        (str(t["D"]), t["d1"].hex, "licence withdrawn")
    ]
    taint = client.get(f"/api/v1/runs/{t['small'].hex}/taint").json()
    assert taint["tainted"] is True and taint["revoked_sources"] == []
    assert taint["revoked_data"][0]["dataset"] == str(t["D"])
    e_taint = client.get(f"/api/v1/runs/{t['e1'].hex}/taint").json()
    assert e_taint["tainted"] is False

    # one poisoned shard: the dataset holding it taints its run, nothing else changes
    _revoke(settings, t["x"], "poisoned shard")
    report = _verify(settings, data_store, t["sharded"])
    assert report.outcome is Outcome.REVOKED
    detail = next(c for c in report.checks if c.name == "data not revoked").detail
    assert f"part of dataset {t['S']}" in detail and "poisoned shard" in detail
    assert _verify(settings, data_store, t["e1"]).outcome is Outcome.VERIFIED

    # revoking twice is refused by the registry, and nothing changes
    with pytest.raises(LedgerError) as caught:
        _revoke(settings, t["D"], "again")
    assert "revoked" in caught.value.message.lower()
    indexer.run_once()
    again = client.get(f"/api/v1/datasets/{t['D']}").json()
    assert again["revocation"]["reason"] == "licence withdrawn"


def test_a_reorg_forgets_a_revocation(
    make_client: MakeClient,
    trained: dict[str, Any],
    settings: Settings,
    chain: Chain,
    indexer: Indexer,
) -> None:
    from ledger.chain.anvil import rpc_call

    snapshot = rpc_call(chain.rpc_url, "evm_snapshot")
    _revoke(settings, trained["E"], "mislabelled")
    indexer.run_once()
    client = make_client()
    assert client.get(f"/api/v1/datasets/{trained['E']}").json()["revoked"] is True
    assert rpc_call(chain.rpc_url, "evm_revert", [snapshot]) is True
    rpc_call(chain.rpc_url, "anvil_mine", ["0x3"])  # the same heights, other blocks
    indexer.run_once()
    assert client.get(f"/api/v1/datasets/{trained['E']}").json()["revoked"] is False
    runs = client.get("/api/v1/runs", params={"q": f"data:{trained['E']}"}).json()["runs"]
    assert all(r["revoked_data"] == [] for r in runs) and len(runs) == 2


def test_a_claimant_trained_on_a_revoked_dataset_taints_the_weights(
    chain: Chain, data_store: LocalStore, settings: Settings, tmp_path: Path
) -> None:
    """Another run recording the same weights, trained on D: revoking D makes those
    weights REVOKED for everyone, as a revoked claimant run does."""
    from ledger.chain.records import FinalRecord
    from ledger.documents import canonical_json
    from tests.runs import manifest

    reg = chain.registry
    d = fingerprint(_folder(tmp_path / "D", b"d"))
    e = fingerprint(_folder(tmp_path / "E", b"e"))
    origin = record_run(reg, data_store, "origin", data={"train": e})
    final = reg.final_record(origin.run_id)
    assert final is not None and final.final is not None
    document = canonical_json(manifest("claimant", data={"train": d}))
    claimant, _ = reg.start_run(data_store.put_bytes(document).digest, [])
    reg.finalize_run(claimant, FinalRecord(*final.final.as_tuple()))
    assert _verify(settings, data_store, origin).outcome is Outcome.VERIFIED
    _revoke(settings, dataset_cid(d), "scraped without consent")
    report = _verify(settings, data_store, origin)
    assert report.outcome is Outcome.REVOKED
    check = next(c for c in report.checks if c.name == "claimants")
    assert not check.ok and to_hex(claimant) in check.detail
    assert str(dataset_cid(d)) in check.detail and "scraped without consent" in check.detail
    assert next(c for c in report.checks if c.name == "data not revoked").ok  # its own data


def test_hostile_data_sections_are_indexed_without_harm(
    make_client: MakeClient, chain: Chain, data_store: LocalStore, indexer: Indexer
) -> None:
    """Keys with NUL, overlong keys and names, bad CIDs, odd kinds: what a
    committer writes into a manifest must neither stop the indexer nor reach a 5xx."""
    from ledger.hashing.cid import bytes_cid

    leaf = str(bytes_cid(b"leaf"))
    data = {
        "nul\x00key" + "k" * 400: {"kind": "folder", "cid": leaf, "name": "n" * 5000},
        "bad-cid": {"kind": "folder", "cid": "Qm-not-a-cid", "bytes": -5},
        "huge-bytes": {"kind": "file", "cid": leaf, "bytes": 2**53 - 1},
        "odd": {"kind": ["not", "text"], "files": [{"kind": "file", "cid": leaf}] * 3},
        "not-a-mapping": "x",
    }
    run = record_run(chain.registry, data_store, "hostile", data=data)
    indexer.run_once()
    client = make_client()
    detail = client.get(f"/api/v1/runs/{run.hex}")
    assert detail.status_code == 200, detail.text
    keys = {d["key"] for d in detail.json()["datasets"]}
    assert "bad-cid" in keys and "huge-bytes" in keys and "odd" in keys
    assert "not-a-mapping" not in keys
    assert all(len(k) <= 200 and "\x00" not in k for k in keys)
    listed = client.get("/api/v1/datasets")
    assert listed.status_code == 200
    assert all(d["bytes"] is None or d["bytes"] >= 0 for d in listed.json()["datasets"])
    found = client.get("/api/v1/runs", params={"q": f"data:{leaf}"}).json()["runs"]
    assert [r["run_id"] for r in found] == [run.hex]
    assert client.get(f"/api/v1/datasets/{leaf}").status_code == 200
