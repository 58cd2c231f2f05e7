"""Crafted requests get a 4xx problem or a verdict, never a 5xx (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ledger.index.indexer import Indexer
from ledger.store import LocalStore
from tests.conftest import Chain
from tests.runs import record_run

MakeClient = Callable[..., TestClient]
PROBLEM = "application/problem+json"
RUN = "0x" + "ab" * 32


def _cursor(*items: object) -> str:
    raw = json.dumps(list(items)).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _problem(response: Any, status: int = 422) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert isinstance(body, dict)
    return body


@pytest.mark.parametrize(
    "cursor",
    [
        _cursor("-started_at", 2**64, RUN),
        _cursor("-started_at", -(2**70), RUN),
        _cursor("-started_at", 10**400, RUN),
        _cursor("-started_at", True, RUN),
        _cursor("-started_at", 1.5, RUN),
        _cursor("-started_at", "soon", RUN),
        _cursor("-name", 7, RUN),
        _cursor("-name", "a\x00b", RUN),
        _cursor("-started_at", 1, "not-a-run-id"),
        _cursor("-started_at", 1, RUN, "extra"),
        _cursor({"a": 1}),
        base64.urlsafe_b64encode(b"\xff\xfe" * 10).decode(),
        base64.urlsafe_b64encode(b"[" * 300 + b"]" * 300).decode(),
    ],
)
def test_crafted_cursors_are_422(make_client: MakeClient, cursor: str) -> None:
    sort = "-name" if "LW5hbW" in cursor else "-started_at"
    body = _problem(make_client().get("/api/v1/runs", params={"cursor": cursor, "sort": sort}))
    assert "cursor" in str(body["detail"])


@pytest.mark.parametrize(
    "q",
    [
        "(" * 400 + "status:running" + ")" * 400,
        "NOT " * 450 + "status:running",
        "(NOT " * 300 + "status:running" + ")" * 300,
        "(revoked:1|" * 150 + "status:failed" + ")" * 150,
    ],
    ids=["parens", "nots", "not-parens", "or-parens"],
)
def test_deeply_nested_queries_are_422(make_client: MakeClient, q: str) -> None:
    assert len(q) <= 2000
    body = _problem(make_client().get("/api/v1/runs", params={"q": q}))
    assert "nest" in str(body["detail"])


def test_moderate_nesting_still_works(make_client: MakeClient) -> None:
    q = "(" * 20 + "NOT status:running" + ")" * 20
    assert make_client().get("/api/v1/runs", params={"q": q}).status_code == 200


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"name": "a\x00b"}, "query.name"),
        ({"sweep": "\x00"}, "query.sweep"),
        ({"q": 'name:"x\x00"'}, "NUL"),
        ({"q": "metric:val\x00loss<1"}, "NUL"),
        ({"started_after": "9" * 12 + "9"}, "query.started_after"),
        ({"started_after": "99999-01-01"}, "query.started_after"),
        ({"metric": "val_loss<" + "9" * 400}, "query.metric"),
        ({"limit": str(2**64)}, "query.limit"),
        ({"limit": "-1"}, "query.limit"),
        ({"sort": "revoked_reason"}, "sort"),
    ],
)
def test_odd_parameters_are_422(
    make_client: MakeClient, params: dict[str, str], field: str
) -> None:
    body = _problem(make_client().get("/api/v1/runs", params=params))
    assert field in str(body["detail"])


def test_invalid_utf8_and_huge_numbers_anywhere_are_4xx(make_client: MakeClient) -> None:
    client = make_client()
    for url in (
        "/api/v1/runs?name=%ff%fe",
        "/api/v1/runs?name=%ed%a0%80",
        "/api/v1/runs?q=name:%c0%80",
        "/api/v1/runs?sweep=%f0%9f",
    ):  # undecodable bytes read as U+FFFD: a name that matches nothing
        response = client.get(url)
        assert response.status_code == 200 and response.json()["runs"] == [], url
    for url in (
        "/api/v1/runs?q=metric:%ed%a0%80<1",
        f"/api/v1/runs/{RUN}/lineage?depth={2**64}",
        f"/api/v1/runs/{RUN}/lineage?depth=-3",
        f"/api/v1/taint?limit={10**30}",
        "/api/v1/lookup?digest=%00",
        "/api/v1/lookup?cid=%ff",
        "/api/v1/runs/%00",
    ):
        response = client.get(url)
        assert 400 <= response.status_code < 500, (url, response.text)


UPLOADS = (
    "truncated-pickle.pt",
    "nested-pickle.pt",
    "nested-header.safetensors",
    "huge-storage.pt",
    "huge-tensor.safetensors",
    "random.pt",
)


@pytest.mark.parametrize("index_url", ["sqlite"], indirect=True)
def test_hostile_uploads_get_a_verdict_or_422(
    make_client: MakeClient, tmp_path: Path, chain: Chain
) -> None:
    from tests.hashing.test_hostile import HOSTILE

    client = make_client()
    for kind in UPLOADS:
        path = HOSTILE[kind](tmp_path)
        response = client.post(
            "/api/v1/verify", files={"file": (kind, path.read_bytes(), "application/octet-stream")}
        )
        assert response.status_code in (200, 422), (kind, response.text)
        text = response.text
        assert str(tmp_path) not in text
        assert "ledger-verify-" not in text and "/tmp" not in text, (kind, text)
        if response.status_code == 200:
            assert response.json()["outcome"] == "unknown", (kind, text)


@pytest.mark.parametrize("index_url", ["sqlite"], indirect=True)
def test_odd_upload_file_names(make_client: MakeClient, chain: Chain) -> None:
    client = make_client()
    for name in ("a\x00.pt", "x.\x00pt", "../../etc/passwd", "." * 300, "\u202e.pt", ""):
        response = client.post(
            "/api/v1/verify",
            files={"file": (name, b"not a model at all\n" * 4, "application/octet-stream")},
        )
        assert response.status_code in (200, 422), (name, response.text)
        assert "ledger-verify-" not in response.text


def test_a_nul_in_one_manifest_does_not_stop_indexing_the_others(
    chain: Chain, data_store: LocalStore, indexer: Indexer, make_client: MakeClient
) -> None:
    before = record_run(chain.registry, data_store, "before")
    evil = record_run(
        chain.registry,
        data_store,
        "evil\x00name",
        sweep={"id": "s\x00weep", "trial": 1},
        final={"val\x00loss": 0.1, "ok": 0.2},
    )
    chain.registry.mark_failed(
        record_run(chain.registry, data_store, "broken", finalize=False).run_id, "nan\x00loss"
    )
    after = record_run(chain.registry, data_store, "after")
    indexer.run_once()
    client = make_client()
    runs = {r["run_id"]: r for r in client.get("/api/v1/runs", params={"limit": 10}).json()["runs"]}
    assert runs[before.hex]["name"] == "before" and runs[after.hex]["name"] == "after"
    shown = runs[evil.hex]
    assert shown["name"] == "evil\ufffdname" and shown["sweep_id"] == "s\ufffdweep"
    detail = client.get(f"/api/v1/runs/{evil.hex}").json()
    assert detail["document_state"] == "loaded"
    assert detail["manifest"]["name"] == "evil\x00name"  # the store's document, as it is
    metrics = client.get("/api/v1/runs", params={"name": "evil*", "metrics": "true"}).json()
    assert metrics["runs"][0]["metrics"] == {"val\ufffdloss": 0.1, "ok": 0.2}
    failed = client.get("/api/v1/runs", params={"status": "failed"}).json()["runs"][0]
    reason = client.get(f"/api/v1/runs/{failed['run_id']}").json()["chain"]["failed_reason"]
    assert reason == "nan\ufffdloss"
