"""``ledger show`` for people, unknown runs as errors, and run-id prefixes everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ledger.chain.reader import RegistryReader
from ledger.chain.rpc import JsonRpc
from ledger.errors import BadIdError, InputError, NotFoundError
from ledger.ids import resolve_run_id
from ledger.index.indexer import Indexer
from ledger.store import LocalStore
from tests.api.test_routes import MakeClient
from tests.cli.test_cli import chain_env, ledger
from tests.conftest import Chain
from tests.runs import record_run


def test_show_is_human_readable_json_on_request_and_takes_a_prefix(
    chain: Chain, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "ledger" / "store")
    run = record_run(chain.registry, store, "shown")
    chain.registry.revoke_run(run.run_id, "wrong labels")
    env = chain_env(chain, tmp_path / "ledger")
    human = ledger("show", run.hex[:10], env=env)
    assert human.returncode == 0, human.stderr
    lines = dict(line.split(None, 1) for line in human.stdout.splitlines() if line.strip())
    assert lines["run"].strip() == run.hex
    assert "finalized" in lines["status"] and "REVOKED: wrong labels" in lines["status"]
    as_json = ledger("show", run.hex, "--json", env=env)
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["status"] == "finalized"

    unknown = ledger("show", "0x" + "ab" * 32, env=env)
    assert unknown.returncode == 11 and '"status"' not in unknown.stdout
    assert "no run 0x" + "ab" * 32 in unknown.stderr and "Traceback" not in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) <= 2  # the line, and its hint


def test_prefixes_resolve_against_the_chain(chain: Chain, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    runs = [record_run(chain.registry, store, f"r{i}") for i in range(3)]
    reader = RegistryReader(JsonRpc(chain.rpc_url), chain.registry.address, chain.deploy_block)
    for run in runs:
        assert reader.resolve_run(run.hex[:12]) == run.run_id
        assert reader.resolve_run(run.hex[2:14].upper()) == run.run_id  # bare, any case
    with pytest.raises(NotFoundError, match="no run id starts with"):
        reader.resolve_run(
            next(
                p
                for p in ("0xffff", "0xfffe", "0xfffd")
                if not any(r.hex.startswith(p) for r in runs)
            )
        )
    with pytest.raises(BadIdError, match="prefix"):
        reader.resolve_run("0x1a2")  # too short
    with pytest.raises(BadIdError):
        reader.resolve_run("0xnothex")
    with pytest.raises(NotFoundError):
        reader.resolve_run("0x" + "cd" * 32, exists=True)


def test_an_ambiguous_prefix_lists_the_candidates() -> None:
    a, b = bytes.fromhex("1a2b" + "00" * 30), bytes.fromhex("1a2b" + "11" * 30)
    with pytest.raises(InputError) as error:
        resolve_run_id("0x1a2b", [a, b], field="run id")
    assert not isinstance(error.value, NotFoundError)
    assert "0x" + a.hex() in error.value.message and "0x" + b.hex() in error.value.message
    assert resolve_run_id("0x1a2b0", [a, b], field="run id") == a


@pytest.fixture
def index_url(tmp_path: Path) -> str:  # prefix lookups use LIKE on either database
    return f"sqlite:///{tmp_path / 'index.sqlite'}"


def test_api_path_parameters_take_prefixes(
    chain: Chain, data_store: LocalStore, indexer: Indexer, make_client: MakeClient
) -> None:
    run = record_run(chain.registry, data_store, "prefixed")
    indexer.run_once()
    client = make_client()
    for path in ("", "/lineage", "/taint"):
        answer = client.get(f"/api/v1/runs/{run.hex[:10]}{path}")
        assert answer.status_code == 200, (path, answer.text)
        assert answer.json()["run_id"] == run.hex
    unknown = "0xffff" if not run.hex.startswith("0xffff") else "0xfffe"
    missing = client.get(f"/api/v1/runs/{unknown}")
    assert missing.status_code == 404 and "no run id starts with" in missing.json()["detail"]
    assert client.get("/api/v1/runs/0x1").status_code == 422
