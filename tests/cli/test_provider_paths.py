"""Every chain-reading command through a provider-like RPC (ledger.testing.provider):
``eth_getLogs`` capped at 50 blocks and a few results, bursts answered 429, dropped
connections. Each command's answer must be the one it gives straight from Anvil.

The history spans a few hundred blocks (runs ``GAP`` blocks apart), so every scan
from the registry's deploy block is split several times.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ledger.chain.anvil import rpc_call
from ledger.chain.logs import forget_learned_caps
from ledger.config import Settings
from ledger.ids import Relation
from ledger.store import LocalStore
from ledger.testing.provider import ProviderProxy, ProviderRules
from tests.conftest import Chain
from tests.runs import Recorded, record_run

GAP = 60

CAPS = ProviderRules(max_log_blocks=50, max_log_results=2)
HOSTILE = ProviderRules(
    max_log_blocks=50, max_log_results=2, rate=40, burst=30, drop_rate=0.1, seed=5
)


@dataclass
class History:
    settings: Settings
    parent: Recorded
    child: Recorded
    revoked: Recorded
    model: Path


@pytest.fixture
def history(chain: Chain, settings: Settings, data_store: LocalStore, tmp_path: Path) -> History:
    def gap() -> None:
        rpc_call(chain.rpc_url, "anvil_mine", [hex(GAP)])

    gap()
    curve = [{"val_loss": 0.9}, {"val_loss": 0.7}, {"val_loss": 0.5}]
    parent = record_run(chain.registry, data_store, "parent", curve=curve)
    gap()
    child = record_run(
        chain.registry, data_store, "child", parents=[(parent.run_id, Relation.FINE_TUNE)]
    )
    gap()
    revoked = record_run(chain.registry, data_store, "bad")
    chain.registry.revoke_run(revoked.run_id, "bad labels")
    gap()
    model = tmp_path / "child.bin"
    model.write_bytes(child.weights[-1])
    return History(settings, parent, child, revoked, model)


@pytest.fixture(autouse=True)
def _fresh_caps() -> Iterator[None]:
    forget_learned_caps()  # in-process commands share the process's learned caps
    yield
    forget_learned_caps()


def env_for(settings: Settings, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return {**env, "LEDGER_HOME": str(settings.data_dir), "LEDGER_RPC_URL": url}


def cli(settings: Settings, url: str, *args: str) -> str:
    from ledger.cli.app import app

    result = CliRunner().invoke(app, list(args), env=env_for(settings, url))
    assert result.exit_code == 0, result.output
    return result.output


def verify(settings: Settings, url: str, model: Path) -> tuple[int, dict[str, Any]]:
    """``ledger verify --json`` as a user runs it: its own process."""
    done = subprocess.run(
        [sys.executable, "-m", "ledger", "verify", str(model), "--json"],
        env=env_for(settings, url),
        text=True,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def without(document: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k not in names}


def read_commands(h: History, url: str) -> dict[str, Any]:
    child, parent = h.child.hex, h.parent.hex
    return {
        "show": json.loads(cli(h.settings, url, "show", child, "--json")),
        "show revoked": cli(h.settings, url, "show", h.revoked.hex),
        "show by prefix": json.loads(cli(h.settings, url, "show", parent[:12], "--json")),
        "lineage": json.loads(cli(h.settings, url, "lineage", parent, "--json")),
        "proof": json.loads(cli(h.settings, url, "proof", parent, "1")),
        "runs": json.loads(cli(h.settings, url, "runs", "--json")),
    }


@pytest.mark.parametrize("rules", [CAPS, HOSTILE], ids=["caps", "caps-429-drops"])
def test_reading_commands_answer_as_straight_from_anvil(
    chain: Chain, history: History, rules: ProviderRules
) -> None:
    direct = read_commands(history, chain.rpc_url)
    assert direct["lineage"] and direct["proof"]["root_matches"] is True
    assert "bad labels" in direct["show revoked"]
    with ProviderProxy(chain.rpc_url, rules) as proxy:
        assert read_commands(history, proxy.url) == direct
        events = proxy.events
        assert events["refused_range"] > 0 and events["refused_results"] > 0
        if rules.drop_rate:
            assert events["dropped"] > 0 and events["throttled"] > 0


@pytest.mark.parametrize("rules", [CAPS, HOSTILE], ids=["caps", "caps-429-drops"])
def test_ledger_verify_answers_as_straight_from_anvil(
    chain: Chain, history: History, rules: ProviderRules
) -> None:
    code, direct = verify(history.settings, chain.rpc_url, history.model)
    # found and checked; "unchecked" only because the file holds no tensors to compare
    # with the records of the revoked run
    assert direct["run_id"] == history.child.hex
    assert (code, direct["outcome"]) == (6, "unchecked")
    assert any("revoked" in check["detail"] for check in direct["checks"])
    with ProviderProxy(chain.rpc_url, rules) as proxy:
        proxied_code, proxied = verify(history.settings, proxy.url, history.model)
        assert proxy.total_calls() > 0
    assert proxied_code == code
    volatile = ("seconds", "timings", "elapsed")
    assert without(proxied, *volatile) == without(direct, *volatile)


def index_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as connection:
        rows = {
            table: [tuple(r) for r in connection.execute(text(f"SELECT * FROM {table} ORDER BY 1"))]
            for table in ("events", "runs", "parents", "weights")
        }
    engine.dispose()
    return rows


@pytest.mark.parametrize("rules", [CAPS, HOSTILE], ids=["caps", "caps-429-drops"])
def test_ledger_index_indexes_as_straight_from_anvil(
    chain: Chain, history: History, rules: ProviderRules, tmp_path: Path
) -> None:
    direct_db = f"sqlite:///{tmp_path / 'direct.sqlite'}"
    proxied_db = f"sqlite:///{tmp_path / 'proxied.sqlite'}"
    direct = json.loads(cli(history.settings, chain.rpc_url, "index", "--index-url", direct_db))
    assert direct["events"] > 10
    with ProviderProxy(chain.rpc_url, rules) as proxy:
        out = cli(history.settings, proxy.url, "index", "--index-url", proxied_db)
        events = proxy.events
        assert events["refused_results"] > 0
        if rules.drop_rate:
            assert events["dropped"] > 0 and events["throttled"] > 0
    proxied = json.loads(out.strip().splitlines()[-1])
    assert without(proxied, "seconds") == without(direct, "seconds")
    assert index_rows(proxied_db) == index_rows(direct_db)
