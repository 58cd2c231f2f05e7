"""``GET /api/v1/runs/{id}/bundle``: the bundle ``ledger export RUN`` writes, over HTTP.

Built from the real chain and the server's store; checked here offline with no
store, as a third party would. Unknown runs are 404; a chain or store that fails
is a 503 problem, never a 500.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ledger.bundle.check import verify_bundle
from ledger.config import Settings
from ledger.hashing.cid import bytes_cid, file_cid
from ledger.ids import Relation
from ledger.index.indexer import Indexer
from ledger.store import LocalStore
from ledger.verify import Outcome
from tests.conftest import Chain
from tests.runs import Recorded, record_run

MakeClient = Callable[..., TestClient]
PROBLEM = "application/problem+json"


@pytest.fixture
def index_url(tmp_path: Path) -> str:  # the route reads the index only to resolve the id
    return f"sqlite:///{tmp_path / 'index.sqlite'}"


@pytest.fixture
def pair(chain: Chain, data_store: LocalStore, indexer: Indexer) -> tuple[Recorded, Recorded]:
    base = record_run(chain.registry, data_store, "base")
    child = record_run(
        chain.registry, data_store, "child", parents=[(base.run_id, Relation.FINE_TUNE)]
    )
    indexer.run_once()
    return base, child


def test_bundle_by_id_and_prefix_verifies_offline(
    make_client: MakeClient, pair: tuple[Recorded, Recorded], tmp_path: Path
) -> None:
    _, child = pair
    client = make_client()
    full = "0x" + child.run_id.hex()
    answer = client.get(f"/api/v1/runs/{full}/bundle")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    disposition = answer.headers["content-disposition"]
    assert disposition == f'attachment; filename="run-{child.run_id.hex()[:12]}.provenance.json"'
    bundle = answer.json()
    assert bundle["bundleType"] == "ledger.bundle/v1"
    model = tmp_path / "model.bin"
    model.write_bytes(child.weights[-1])
    subject = bundle["statement"]["subject"][0]
    assert subject["digest"]["ledgerCid"] == file_cid(model).digest.hex()
    assert subject["digest"]["sha256"] == hashlib.sha256(child.weights[-1]).hexdigest()
    report = verify_bundle(model, bundle, cid=file_cid(model), sha256=subject["digest"]["sha256"])
    assert report.outcome is Outcome.PROVEN, report.failed
    assert report.run_id == full
    prefix = client.get(f"/api/v1/runs/{full[:10]}/bundle")
    assert prefix.status_code == 200
    assert prefix.json()["statement"] == bundle["statement"]


def test_unknown_and_unfinished_runs(
    make_client: MakeClient, chain: Chain, data_store: LocalStore, indexer: Indexer
) -> None:
    open_run = record_run(chain.registry, data_store, "open", finalize=False)
    indexer.run_once()
    client = make_client()
    unknown = client.get("/api/v1/runs/0x" + "ab" * 32 + "/bundle")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == PROBLEM
    bad = client.get("/api/v1/runs/nothex/bundle")
    assert bad.status_code == 422 and bad.headers["content-type"] == PROBLEM
    unfinished = client.get(f"/api/v1/runs/0x{open_run.run_id.hex()}/bundle")
    assert unfinished.status_code == 422
    assert "not finalized" in unfinished.json()["detail"]


def test_store_outage_is_503(
    make_client: MakeClient, pair: tuple[Recorded, Recorded], data_store: LocalStore
) -> None:
    _, child = pair
    # the run's manifest is gone from the server's store: no bundle can be built
    path = Path(data_store.path_for(child.manifest_cid))
    path.unlink()
    answer = make_client().get(f"/api/v1/runs/0x{child.run_id.hex()}/bundle")
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == PROBLEM
    assert child.manifest_cid.digest.hex() in answer.json()["detail"]


def test_chain_outage_is_503(
    settings: Settings, indexer: Indexer, pair: tuple[Recorded, Recorded]
) -> None:
    from dataclasses import replace

    from ledger.api.app import ApiConfig, create_app

    _, child = pair
    dead = replace(settings, rpc_url="http://127.0.0.1:9")
    app = create_app(dead, ApiConfig(follow=False), engine=indexer.engine, indexer=indexer)
    with TestClient(app) as client:
        answer = client.get(f"/api/v1/runs/0x{child.run_id.hex()}/bundle")
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == PROBLEM


def test_damaged_document_is_503_not_500(
    make_client: MakeClient, pair: tuple[Recorded, Recorded], data_store: LocalStore
) -> None:
    _, child = pair
    path = Path(data_store.path_for(child.manifest_cid))
    path.write_bytes(b'{"schema": "forged"}')
    assert bytes_cid(path.read_bytes()) != child.manifest_cid
    answer = make_client().get(f"/api/v1/runs/0x{child.run_id.hex()}/bundle")
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == PROBLEM
