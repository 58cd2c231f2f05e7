"""The audit API over the real chain, store and database (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ledger.chain.records import FinalRecord
from ledger.config import Secret
from ledger.documents import REPLAY_REPORT_SCHEMA, canonical_json
from ledger.ids import Relation
from ledger.index.indexer import Indexer
from ledger.store import LocalStore
from ledger.verify import Outcome
from tests.conftest import Chain
from tests.runs import Recorded, record_run

MakeClient = Callable[..., TestClient]
PROBLEM = "application/problem+json"


@pytest.fixture
def family(chain: Chain, data_store: LocalStore, indexer: Indexer) -> dict[str, Recorded]:
    """grandparent → parent (fine-tune) → child (distillation), plus a sweep and a failed run."""
    reg = chain.registry
    grand = record_run(reg, data_store, "grand", curve=[{"val_loss": 0.9}, {"val_loss": 0.5}])
    parent = record_run(
        reg,
        data_store,
        "parent",
        parents=[(grand.run_id, Relation.FINE_TUNE)],
        final={"val_loss": 0.08},
    )
    child = record_run(
        reg,
        data_store,
        "child",
        parents=[(parent.run_id, Relation.DISTILLATION)],
        final={"val_loss": 0.3},
    )
    trial = record_run(
        reg,
        data_store,
        "trial-1",
        sweep={"id": "lr-sweep", "trial": 1},
        final={"val_loss": 0.2},
    )
    failed = record_run(reg, data_store, "broken", finalize=False)
    reg.mark_failed(failed.run_id, "nan loss")
    indexer.run_once()
    return {"grand": grand, "parent": parent, "child": child, "trial": trial, "failed": failed}


def _ids(body: dict[str, Any]) -> set[str]:
    return {r["run_id"] for r in body["runs"]}


def test_list_filters_and_or_not(make_client: MakeClient, family: dict[str, Recorded]) -> None:
    client = make_client()
    f = family
    assert _ids(client.get("/api/v1/runs").json()) == {r.hex for r in f.values()}
    assert _ids(client.get("/api/v1/runs", params={"status": "failed"}).json()) == {f["failed"].hex}
    assert _ids(client.get("/api/v1/runs", params={"sweep": "lr-sweep"}).json()) == {f["trial"].hex}
    assert _ids(client.get("/api/v1/runs", params={"parent": f["grand"].hex}).json()) == {
        f["parent"].hex
    }
    assert _ids(client.get("/api/v1/runs", params={"metric": "val_loss<0.1"}).json()) == {
        f["parent"].hex
    }
    both = client.get(
        "/api/v1/runs", params=[("metric", "val_loss>0.1"), ("metric", "val_loss<0.4")]
    )
    assert _ids(both.json()) == {f["child"].hex, f["trial"].hex}
    either = client.get("/api/v1/runs", params={"q": "metric:val_loss<0.1 OR sweep:lr-sweep"})
    assert _ids(either.json()) == {f["parent"].hex, f["trial"].hex}
    grouped = client.get(
        "/api/v1/runs",
        params={"q": 'status:finalized (name:"gr*" OR name:child) NOT metric:val_loss<0.4'},
    )
    assert _ids(grouped.json()) == {f["grand"].hex}
    assert client.get("/api/v1/runs", params={"committer": "0xzz"}).status_code == 422
    committer = client.get("/api/v1/runs", params={"q": "status:failed"}).json()["runs"][0]
    by_committer = client.get(
        "/api/v1/runs", params={"committer": committer["committer"].lower()}
    ).json()
    assert len(by_committer["runs"]) == 5
    started = min(r["started_at"] for r in by_committer["runs"])
    after = client.get("/api/v1/runs", params={"started_after": str(started + 10_000)}).json()
    assert after["runs"] == []
    before = client.get("/api/v1/runs", params={"started_before": "2100-01-01T00:00:00Z"}).json()
    assert len(before["runs"]) == 5
    with_metrics = client.get("/api/v1/runs", params={"sweep": "lr-sweep", "metrics": "true"})
    assert with_metrics.json()["runs"][0]["metrics"] == {"val_loss": 0.2}


def test_sorting_and_cursor_pagination(
    make_client: MakeClient, family: dict[str, Recorded]
) -> None:
    client = make_client()
    names = [r["name"] for r in client.get("/api/v1/runs", params={"sort": "name"}).json()["runs"]]
    assert names == sorted(names) and len(names) == 5
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"sort": "-name", "limit": "2", **({"cursor": cursor} if cursor else {})}
        body = client.get("/api/v1/runs", params=params).json()
        seen += [r["name"] for r in body["runs"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(names, reverse=True) and pages == 3
    wrong = client.get("/api/v1/runs", params={"sort": "name", "cursor": body_cursor(client)})
    assert wrong.status_code == 422 and "sort" in wrong.json()["detail"]


def body_cursor(client: TestClient) -> str:
    cursor = client.get("/api/v1/runs", params={"sort": "-started_at", "limit": "1"}).json()[
        "next_cursor"
    ]
    assert isinstance(cursor, str)
    return cursor


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"q": "colour:red"}, "unknown filter 'colour'"),
        ({"q": "(status:running"}, "not closed"),
        ({"q": "status:finalized OR"}, "ends where a filter was expected"),
        ({"metric": "val_loss<<0.1"}, "not a number"),
        ({"metric": "val_loss"}, "not a metric threshold"),
        ({"status": "done"}, "use one of running, finalized, failed"),
        ({"started_after": "yesterday"}, "is not a time"),
        ({"parent": "0x12"}, "not 32 bytes of hex"),
        ({"cursor": "!!!"}, "cursor"),
        ({"sort": "colour"}, "sort"),
        ({"limit": "0"}, "query.limit"),
        ({"limit": "many"}, "query.limit"),
    ],
)
def test_bad_queries_are_4xx_problems(
    make_client: MakeClient, params: dict[str, str], needle: str
) -> None:
    response = make_client().get("/api/v1/runs", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == 422 and needle in body["detail"]


def test_one_run_with_documents_and_chain_facts(
    chain: Chain, make_client: MakeClient, family: dict[str, Recorded]
) -> None:
    client = make_client()
    grand = family["grand"]
    body = client.get(f"/api/v1/runs/{grand.hex.upper().replace('0X', '0x')}").json()
    assert body["run_id"] == grand.hex and body["name"] == "grand"
    assert body["manifest"]["name"] == "grand" and body["manifest_cid"] == str(grand.manifest_cid)
    assert [c["step"] for c in body["checkpoints"]] == [0, 1]
    assert [c["metrics"]["val_loss"] for c in body["checkpoints"]] == [0.9, 0.5]
    assert body["final"]["weights_cid"] == str(grand.final_cid)
    started = chain.registry.events("RunStarted", grand.run_id)[0]
    assert body["chain"]["started_tx"] == started["transactionHash"]
    assert body["chain"]["started_block"] == started["blockNumber"]
    assert body["chain"]["committer"] == chain.admin.address
    assert body["metrics"] == {"val_loss": 0.5}
    missing = client.get("/api/v1/runs/0x" + "ab" * 32)
    assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM
    assert client.get("/api/v1/runs/nope").status_code == 422


def test_lineage_and_taint(
    chain: Chain, make_client: MakeClient, family: dict[str, Recorded], indexer: Indexer
) -> None:
    client = make_client()
    f = family
    graph = client.get(f"/api/v1/runs/{f['parent'].hex}/lineage").json()
    generations = {n["run_id"]: n["generation"] for n in graph["nodes"]}
    assert generations == {f["grand"].hex: -1, f["parent"].hex: 0, f["child"].hex: 1}
    edges = {(e["child"], e["parent"], e["relation"]) for e in graph["edges"]}
    assert edges == {
        (f["parent"].hex, f["grand"].hex, "fine-tune"),
        (f["child"].hex, f["parent"].hex, "distillation"),
    }
    shallow = client.get(f"/api/v1/runs/{f['child'].hex}/lineage", params={"depth": 1}).json()
    assert {n["run_id"] for n in shallow["nodes"]} == {f["child"].hex, f["parent"].hex}
    assert client.get(f"/api/v1/runs/{f['child'].hex}/taint").json()["tainted"] is False

    chain.registry.revoke_run(f["grand"].run_id, "data leak")
    indexer.run_once()
    taint = client.get(f"/api/v1/runs/{f['child'].hex}/taint").json()
    assert taint == {
        "run_id": f["child"].hex,
        "tainted": True,
        "revoked_sources": [f["grand"].hex],
        "revoked_data": [],
    }
    tainted = client.get("/api/v1/taint").json()
    assert {r["run_id"] for r in tainted["runs"]} == {f["parent"].hex, f["child"].hex}
    assert client.get("/api/v1/runs", params={"revoked": "true"}).json()["runs"][0]["run_id"] == (
        f["grand"].hex
    )


def test_replay_attestations_of_a_run(
    chain: Chain,
    make_client: MakeClient,
    family: dict[str, Recorded],
    indexer: Indexer,
    data_store: LocalStore,
) -> None:
    client = make_client()
    grand = family["grand"]
    report = {"schema": REPLAY_REPORT_SCHEMA, "run_id": grand.hex, "outcome": "reproduced"}
    stored = data_store.put_bytes(canonical_json(report))
    chain.as_(chain.bob).attest_replay(grand.run_id, 0, 1, True, stored.digest)
    chain.as_(chain.alice).attest_replay(grand.run_id, 1, 2, False, b"\x09" * 32)
    indexer.run_once()

    body = client.get(f"/api/v1/runs/{grand.hex}").json()
    newest, oldest = body["replays"]
    assert (newest["attester"], newest["from_step"], newest["to_step"]) == (
        chain.alice.address,
        1,
        2,
    )
    assert newest["reproduced"] is False and newest["report_cid"] is None  # not in the store
    assert oldest["attester"] == chain.bob.address and oldest["reproduced"] is True
    assert oldest["report_digest"] == "0x" + stored.digest.hex()
    assert oldest["report_cid"] == str(stored)
    event = chain.registry.events("ReplayAttested", grand.run_id)[0]
    assert (oldest["block"], oldest["tx"]) == (event["blockNumber"], event["transactionHash"])
    fetched = client.get(f"/api/v1/documents/{oldest['report_cid']}")
    assert fetched.status_code == 200 and fetched.json()["outcome"] == "reproduced"

    listed = client.get(f"/api/v1/runs/{grand.hex}/replays").json()
    assert listed["total"] == 2 and listed["reproduced"] == 1
    assert listed["replays"] == body["replays"]
    bobs = client.get(
        f"/api/v1/runs/{grand.hex}/replays", params={"attester": chain.bob.address.lower()}
    ).json()
    assert bobs["total"] == 1 and [r["attester"] for r in bobs["replays"]] == [chain.bob.address]
    assert client.get(f"/api/v1/runs/{family['child'].hex}").json()["replays"] == []
    one = client.get(f"/api/v1/runs/{grand.hex}/replays", params={"limit": 1}).json()
    assert one["total"] == 2 and len(one["replays"]) == 1
    for params in ({"attester": "0x123"}, {"attester": "bob"}, {"limit": 0}, {"limit": 1001}):
        refused = client.get(f"/api/v1/runs/{grand.hex}/replays", params=params)
        assert refused.status_code == 422 and refused.headers["content-type"] == PROBLEM
    assert client.get("/api/v1/runs/0x" + "ab" * 32 + "/replays").status_code == 404


def test_lookup_by_cid_digest_and_tensor_root(
    make_client: MakeClient, family: dict[str, Recorded]
) -> None:
    client = make_client()
    child = family["child"]
    assert child.final_cid is not None and child.tensor_root is not None
    by_cid = client.get("/api/v1/lookup", params={"cid": str(child.final_cid)}).json()
    assert [(r["run_id"], r["is_final"]) for r in by_cid["records"]] == [(child.hex, True)]
    digest = "0x" + child.final_cid.digest.hex()
    assert (
        client.get("/api/v1/lookup", params={"digest": digest}).json()["records"]
        == by_cid["records"]
    )
    by_root = client.get("/api/v1/lookup", params={"tensor_root": "0x" + child.tensor_root.hex()})
    assert by_root.json()["records"] == by_cid["records"]
    assert client.get("/api/v1/lookup").status_code == 422
    assert client.get("/api/v1/lookup", params={"cid": "not-a-cid"}).status_code == 422


def test_verify_rechecks_the_chain_not_the_index(
    chain: Chain, make_client: MakeClient, family: dict[str, Recorded], indexer: Indexer
) -> None:
    client = make_client()
    child = family["child"]
    assert child.final_cid is not None
    answer = client.post("/api/v1/verify/digest", json={"cid": str(child.final_cid)}).json()
    assert answer["outcome"] == "verified" and answer["run_id"] == child.hex
    assert answer["source"] == "chain"
    upload = client.post(
        "/api/v1/verify",
        files={"file": ("model.bin", child.weights[-1], "application/octet-stream")},
    ).json()
    assert upload["outcome"] == "verified" and upload["file_cid"] == str(child.final_cid)

    # Revoked on chain but not indexed yet: verify still says revoked (the ancestor's).
    chain.registry.revoke_run(family["grand"].run_id, "poisoned data")
    again = client.post(
        "/api/v1/verify/digest", json={"digest": "0x" + child.final_cid.digest.hex()}
    ).json()
    assert again["outcome"] == "revoked"
    assert client.get(f"/api/v1/runs/{family['grand'].hex}").json()["revoked"] is False

    unknown = client.post("/api/v1/verify/digest", json={"digest": "0x" + "11" * 32}).json()
    assert unknown["outcome"] == "unknown"
    for bad in ({}, {"cid": "x", "digest": "0x" + "11" * 32}, {"cid": "nope"}, {"colour": 1}):
        response = client.post("/api/v1/verify/digest", json=bad)
        assert response.status_code == 422 and response.headers["content-type"] == PROBLEM
    garbage = client.post(
        "/api/v1/verify", files={"file": ("stray.pt", b"U", "application/octet-stream")}
    )  # schemathesis found this one: a byte the weights-only unpickler tripped over
    assert garbage.status_code == 200 and garbage.json()["outcome"] == "unknown"
    empty = client.post("/api/v1/verify", files={"file": ("x.pt", b"", "application/octet-stream")})
    assert empty.status_code == 422
    too_big = make_client(max_upload=100).post(
        "/api/v1/verify", files={"file": ("x.bin", b"\x00" * 101, "application/octet-stream")}
    )
    assert too_big.status_code == 413 and too_big.headers["content-type"] == PROBLEM


def test_health_readiness_auth_and_cors(
    make_client: MakeClient, family: dict[str, Recorded]
) -> None:
    open_client = make_client()
    assert open_client.get("/healthz").json() == {"status": "ok"}
    ready = open_client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert ready.json()["lag_blocks"] == 0

    token = "s3cret-token-of-some-length"
    guarded = make_client(token=Secret(token), cors_origins=("https://audit.example",))
    denied = guarded.get("/api/v1/runs")
    assert denied.status_code == 401 and denied.headers["content-type"] == PROBLEM
    assert denied.headers["www-authenticate"] == "Bearer"
    wrong = guarded.get("/api/v1/runs", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    allowed = guarded.get("/api/v1/runs", headers={"Authorization": f"Bearer {token}"})
    assert allowed.status_code == 200 and len(allowed.json()["runs"]) == 5
    assert guarded.get("/healthz").status_code == 200  # probes need no token
    preflight = guarded.options(
        "/api/v1/runs",
        headers={"Origin": "https://audit.example", "Access-Control-Request-Method": "GET"},
    )
    assert preflight.headers["access-control-allow-origin"] == "https://audit.example"
    other = guarded.options(
        "/api/v1/runs",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in other.headers


def test_verify_answers_origin_and_claimants_as_documented(
    chain: Chain, make_client: MakeClient, family: dict[str, Recorded], data_store: LocalStore
) -> None:
    """A later run recording the child's weights as its own: the API names the origin
    and the claimant, and its OpenAPI documents every outcome and those fields."""
    child = family["child"]
    assert child.final_cid is not None and child.tensor_root is not None
    copycat = record_run(chain.registry, data_store, "copycat", finalize=False)
    metrics = data_store.put_bytes(b'{"copied": true}')
    chain.registry.finalize_run(
        copycat.run_id,
        FinalRecord(child.final_cid.digest, child.tensor_root, metrics.digest, b"\0" * 32, 0),
    )
    client = make_client()
    answer = client.post("/api/v1/verify/digest", json={"cid": str(child.final_cid)}).json()
    assert answer["run_id"] == child.hex
    assert answer["origin"]["run_id"] == child.hex
    assert [c["run_id"] for c in answer["claimants"]] == [copycat.hex]
    assert {"committer", "block", "log_index", "tx"} <= set(answer["claimants"][0])
    assert all("unchecked" in check for check in answer["checks"])

    schema = client.get("/openapi.json").json()["components"]["schemas"]
    verify_out = schema["VerifyOut"]["properties"]
    assert set(verify_out["outcome"]["enum"]) == {o.value for o in Outcome}
    assert {"origin", "claimants"} <= set(verify_out)
    assert "unchecked" in schema["CheckOut"]["properties"]


def test_openapi_documents_problems_and_examples(make_client: MakeClient) -> None:
    schema = make_client().get("/openapi.json").json()
    runs = schema["paths"]["/api/v1/runs"]["get"]
    assert "application/problem+json" in runs["responses"]["422"]["content"]
    q = next(p for p in runs["parameters"] if p["name"] == "q")
    assert "and-or-not" in q["examples"]
    assert "examples" in schema["components"]["schemas"]["RunSummary"]


def test_runs_list_carries_end_time_params_and_datasets_bounded(
    chain: Chain, make_client: MakeClient, data_store: LocalStore, indexer: Indexer
) -> None:
    reg = chain.registry
    wide = {f"k{i:03}": i for i in range(100)}  # more keys than a table wants
    done = record_run(
        reg,
        data_store,
        "tabled",
        config={"lr": 0.01, "opt": {"name": "adam", "betas": [0.9, 0.99]},
                "note": "z" * 500, "flag": True, "none": None},
        data={"train": {"kind": "file", "name": "t.csv", "cid": "bafkreiabc", "bytes": 3},
              "odd": "not a fingerprint"},
    )  # fmt: skip
    many = record_run(reg, data_store, "wide", config=wide)
    running = record_run(reg, data_store, "open", finalize=False, config=[1, 2])
    indexer.run_once()
    client = make_client()
    plain = {r["run_id"]: r for r in client.get("/api/v1/runs").json()["runs"]}
    assert plain[done.hex]["params"] is None and plain[done.hex]["data_sources"] is None
    assert plain[done.hex]["ended_at"] >= plain[done.hex]["started_at"]
    assert plain[running.hex]["ended_at"] is None

    body = client.get("/api/v1/runs", params={"params": "true", "data": "true"}).json()
    runs = {r["run_id"]: r for r in body["runs"]}
    params = runs[done.hex]["params"]
    assert params["lr"] == 0.01 and params["opt.name"] == "adam"
    assert params["opt.betas"] == "[0.9, 0.99]"  # a list is one cell, as JSON
    assert params["note"] == "z" * 200 and params["flag"] is True and params["none"] is None
    assert runs[done.hex]["data_sources"] == [  # in the canonical manifest's key order
        {"key": "odd", "kind": None, "name": None, "id": None},
        {"key": "train", "kind": "file", "name": "t.csv", "id": "bafkreiabc"},
    ]
    assert len(runs[many.hex]["params"]) == 64  # bounded
    assert runs[running.hex]["params"] == {}  # a config that is not a mapping: no columns

    detail = client.get(f"/api/v1/runs/{done.hex}").json()
    assert detail["params"] == params and detail["ended_at"] == runs[done.hex]["ended_at"]
    assert detail["data_sources"] == runs[done.hex]["data_sources"]


def test_checkpoint_proof_is_read_from_the_chain(
    make_client: MakeClient, family: dict[str, Recorded], chain: Chain
) -> None:
    client = make_client()
    grand, failed = family["grand"], family["failed"]
    answer = client.get(f"/api/v1/runs/{grand.hex}/checkpoints/1/proof")
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["run_id"] == grand.hex and body["root_matches"] is True
    (entry,) = body["checkpoints"]
    assert entry["step"] == 1 and entry["verified_by_registry"] is True
    assert len(entry["proof"]) == 1  # two checkpoints: the other leaf is the path
    prefix = client.get(f"/api/v1/runs/{grand.hex[:12]}/checkpoints/0/proof").json()
    assert (
        prefix["checkpoints"][0]["step"] == 0
        and prefix["checkpoint_root"] == body["checkpoint_root"]
    )

    missing = client.get(f"/api/v1/runs/{grand.hex}/checkpoints/7/proof")
    assert missing.status_code == 404 and "steps: 0, 1" in missing.json()["detail"]
    assert missing.headers["content-type"] == PROBLEM
    open_run = client.get(f"/api/v1/runs/{failed.hex}/checkpoints/0/proof")
    assert open_run.status_code == 422 and "not finalized" in open_run.json()["detail"]
    for bad in ("0xzz", "0x" + "ab" * 40, "%00"):
        assert client.get(f"/api/v1/runs/{bad}/checkpoints/0/proof").status_code == 422, bad
    unknown = client.get(f"/api/v1/runs/0x{'12' * 32}/checkpoints/0/proof")
    assert unknown.status_code in (404, 422) and unknown.headers["content-type"] == PROBLEM
    huge = client.get(f"/api/v1/runs/{grand.hex}/checkpoints/{2**64}/proof")
    assert huge.status_code == 422
