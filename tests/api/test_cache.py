"""The API's response cache: answers kept per index generation, never past a change
of the index (new events, a rollback, documents read), on SQLite and PostgreSQL."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine

from ledger.api.app import ApiConfig, create_app
from ledger.chain.anvil import rpc_call
from ledger.config import Secret, Settings
from ledger.index.indexer import Indexer
from ledger.store import LocalStore
from tests.conftest import Chain
from tests.runs import record_run

MakeClient = Callable[..., TestClient]


def _generation(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT generation FROM index_state")).scalar_one())


def _names(client: TestClient, how: str) -> set[str]:
    answer = client.get("/api/v1/runs")
    assert answer.status_code == 200
    assert answer.headers["x-ledger-cache"] == how
    return {r["name"] for r in answer.json()["runs"]}


def test_answers_are_kept_until_the_index_changes(
    chain: Chain,
    data_store: LocalStore,
    indexer: Indexer,
    engine: Engine,
    make_client: MakeClient,
) -> None:
    record_run(chain.registry, data_store, "first")
    indexer.run_once()
    client = make_client()
    assert _names(client, "miss") == {"first"}
    assert _names(client, "hit") == {"first"}

    before = _generation(engine)
    indexer.run_once()  # nothing new on chain: the same generation, still cached
    assert _generation(engine) == before
    assert _names(client, "hit") == {"first"}

    fork = rpc_call(chain.rpc_url, "evm_snapshot")
    record_run(chain.registry, data_store, "orphan")
    indexer.run_once()  # a new block with events
    assert _generation(engine) > before
    assert _names(client, "miss") == {"first", "orphan"}
    assert _names(client, "hit") == {"first", "orphan"}

    assert rpc_call(chain.rpc_url, "evm_revert", [fork]) is True
    rpc_call(chain.rpc_url, "evm_mine")
    rpc_call(chain.rpc_url, "evm_mine")  # the other branch is longer
    result = indexer.run_once()  # rolled back: the orphan is gone from the answer too
    assert result.rolled_back_to is not None
    assert _names(client, "miss") == {"first"}


def test_documents_read_later_replace_the_kept_answer(
    chain: Chain,
    indexer: Indexer,
    make_client: MakeClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    elsewhere = LocalStore(tmp_path_factory.mktemp("elsewhere"))
    late = record_run(chain.registry, elsewhere, "late")
    indexer.run_once()
    client = make_client()
    path = f"/api/v1/runs/{late.hex}"
    assert client.get(path).json()["document_state"] == "missing"
    assert client.get(path).headers["x-ledger-cache"] == "hit"
    for blob in elsewhere.root.joinpath("blobs").iterdir():  # the documents arrive
        indexer.store.put_bytes(blob.read_bytes())
    indexer.retry_missing()
    indexer.run_once()
    fresh = client.get(path)
    assert fresh.headers["x-ledger-cache"] == "miss"
    assert fresh.json()["document_state"] == "loaded" and fresh.json()["name"] == "late"


def test_etags_revalidate_and_change_with_the_answer(
    chain: Chain, data_store: LocalStore, indexer: Indexer, make_client: MakeClient
) -> None:
    record_run(chain.registry, data_store, "tagged")
    indexer.run_once()
    client = make_client()
    first = client.get("/api/v1/runs")
    tag = first.headers["etag"]
    assert first.headers["cache-control"] == "no-cache"
    same = client.get("/api/v1/runs", headers={"If-None-Match": tag})
    assert same.status_code == 304 and same.headers["etag"] == tag and same.content == b""
    record_run(chain.registry, data_store, "another")
    indexer.run_once()
    changed = client.get("/api/v1/runs", headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["etag"] != tag
    assert len(changed.json()["runs"]) == 2


def test_kept_answers_still_need_the_token(
    chain: Chain, data_store: LocalStore, indexer: Indexer, make_client: MakeClient
) -> None:
    record_run(chain.registry, data_store, "guarded")
    indexer.run_once()
    token = "a-token-long-enough-for-the-check"
    client = make_client(token=Secret(token), cors_origins=("https://audit.example",))
    bearer = {"Authorization": f"Bearer {token}", "Origin": "https://audit.example"}
    assert client.get("/api/v1/runs", headers=bearer).headers["x-ledger-cache"] == "miss"
    kept = client.get("/api/v1/runs", headers=bearer)
    assert kept.headers["x-ledger-cache"] == "hit"
    assert kept.headers["access-control-allow-origin"] == "https://audit.example"
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        denied = client.get("/api/v1/runs", headers=headers)
        assert denied.status_code == 401 and "x-ledger-cache" not in denied.headers


def test_an_answer_made_while_the_store_was_away_is_not_kept(
    chain: Chain, data_store: LocalStore, indexer: Indexer, settings: Settings
) -> None:
    run = record_run(chain.registry, data_store, "stored")
    indexer.run_once()
    with socket.socket() as sock:  # a port nothing listens on: the IPFS node is away
        sock.bind(("127.0.0.1", 0))
        away = replace(settings, ipfs_api=f"http://127.0.0.1:{sock.getsockname()[1]}")
    app = create_app(away, ApiConfig(follow=False), engine=indexer.engine, indexer=indexer)
    with TestClient(app) as client:
        for _ in range(2):
            answer = client.get(f"/api/v1/runs/{run.hex}")
            assert answer.status_code == 200 and answer.json()["manifest"] is None
            assert answer.headers["cache-control"] == "no-store"
            assert answer.headers["x-ledger-cache"] == "miss"
        assert client.get("/api/v1/runs").headers["x-ledger-cache"] == "miss"
        assert client.get("/api/v1/runs").headers["x-ledger-cache"] == "hit"  # no store read


def test_no_cache_when_turned_off(
    chain: Chain, data_store: LocalStore, indexer: Indexer, make_client: MakeClient
) -> None:
    record_run(chain.registry, data_store, "plain")
    indexer.run_once()
    client = make_client(cache_entries=0)
    for _ in range(2):
        answer = client.get("/api/v1/runs")
        assert answer.status_code == 200 and "x-ledger-cache" not in answer.headers
