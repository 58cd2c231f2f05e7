"""What the API shows: security headers on every answer, invisible characters escaped
in JSON, /docs from this server's own files (no CDN)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ledger.config import Secret
from ledger.index.indexer import Indexer
from ledger.store import LocalStore
from tests.conftest import Chain
from tests.runs import record_run

MakeClient = Callable[..., TestClient]
SPOOF = "invoice\u202egpj.exe\u200b"  # displays as "invoiceexe.jpg" without the escapes


@pytest.fixture
def index_url(tmp_path: Path) -> str:  # nothing here depends on the database
    return f"sqlite:///{tmp_path / 'index.sqlite'}"


def test_every_answer_carries_the_security_headers(make_client: MakeClient, chain: Chain) -> None:
    client = make_client(token=Secret("a-long-enough-test-token"))
    auth = {"Authorization": "Bearer a-long-enough-test-token"}
    for path, headers, status in (
        ("/", {}, 200),
        ("/runs/0x" + "ab" * 32, {}, 200),
        ("/static/app.js", {}, 200),
        ("/docs", {}, 200),
        ("/openapi.json", {}, 200),
        ("/healthz", {}, 200),
        ("/api/v1/runs", auth, 200),
        ("/api/v1/runs", {}, 401),
        ("/api/v1/runs?limit=0", auth, 422),
        ("/nowhere", {}, 404),
    ):
        response = client.get(path, headers=headers)
        assert response.status_code == status, (path, response.text)
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["x-frame-options"] == "DENY", path


def test_pages_run_no_inline_script(make_client: MakeClient, chain: Chain) -> None:
    client = make_client()
    for path in ("/", "/runs/0x" + "ab" * 32, "/docs"):
        html = client.get(path).text
        scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
        assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts)


def test_docs_need_no_cdn(make_client: MakeClient, chain: Chain) -> None:
    client = make_client()
    html = client.get("/docs").text
    assert "//" not in re.sub(r"<!--.*?-->", "", html).replace("http://www.w3.org", "")
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200 and len(response.content) > 100, asset
    assert client.get("/redoc").status_code == 404  # it would load from a CDN


def test_invisible_characters_are_escaped_in_json(
    chain: Chain, data_store: LocalStore, indexer: Indexer, make_client: MakeClient
) -> None:
    run = record_run(chain.registry, data_store, SPOOF, final={"loss\u2066": 0.5})
    chain.registry.revoke_run(run.run_id, "leak\u202e")
    indexer.run_once()
    client = make_client()
    for response in (
        client.get("/api/v1/runs", params={"metrics": "true"}),
        client.get(f"/api/v1/runs/{run.hex}"),
        client.get("/api/v1/runs", params={"q": "name:\u202e"}),
        client.get("/api/v1/runs", params={"q": "colour:\u202e"}),  # a problem's detail
    ):
        raw = response.content.decode()
        assert not re.search("[\u200b-\u200f\u202a-\u202e\u2066-\u2069]", raw), raw
    listed = client.get("/api/v1/runs", params={"metrics": "true"})
    assert "\\u202e" in listed.text and "\\u200b" in listed.text
    body = listed.json()["runs"][0]
    assert body["name"] == SPOOF and body["metrics"] == {"loss\u2066": 0.5}  # same values
    detail = client.get(f"/api/v1/runs/{run.hex}").json()
    assert detail["chain"]["revoked_reason"] == "leak\u202e"
    assert detail["manifest"]["name"] == SPOOF
