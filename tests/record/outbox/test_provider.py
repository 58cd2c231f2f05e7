"""The outbox through a provider-like RPC (ledger.testing.provider): records sent
through bursts answered 429 and dropped connections land exactly once, and
``ledger sync``'s checks and the journal rebuild read through capped ``eth_getLogs``."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledger.chain.logs import forget_learned_caps
from ledger.cli.app import app
from ledger.config import Settings
from ledger.record.outbox import Outbox
from ledger.testing.provider import ProviderProxy, ProviderRules
from tests.conftest import Chain
from tests.record.outbox.test_chain_truth import events, manifest, weights

# a block holds up to 4 events here (checkpoints are batched): a cap of 4 results
HOSTILE = ProviderRules(
    max_log_blocks=50, max_log_results=4, rate=40, burst=30, drop_rate=0.2, seed=2
)


@pytest.fixture(autouse=True)
def _fresh_caps() -> Iterator[None]:
    forget_learned_caps()
    yield
    forget_learned_caps()


def through(settings: Settings, proxy: ProviderProxy) -> Settings:
    return dataclasses.replace(settings, rpc_url=proxy.url)


def record(outbox: Outbox, tmp_path: Path, name: str, steps: int = 4) -> str:
    run_id = outbox.start_run(manifest(name))
    for step in range(steps):
        path = weights(tmp_path / f"{name}-{step}.pt", step)
        outbox.checkpoint(run_id, step, path, {"loss": 1.0 / (step + 1)})
    outbox.finalize(run_id, weights(tmp_path / f"{name}-final.pt", 99), {"loss": 0.1})
    return run_id


def test_records_land_once_through_drops_and_bursts(chain: Chain, tmp_path: Path) -> None:
    # random drops, and the first transaction's answer lost whatever the timing (the
    # token bucket runs on real time, so which requests the random drops hit varies)
    rules = dataclasses.replace(
        HOSTILE, rate=10, burst=5, drop_rate=0.25, drop_first=("eth_sendRawTransaction",)
    )
    with ProviderProxy(chain.rpc_url, rules) as proxy:
        settings = through(chain.settings(tmp_path / "ledger"), proxy)
        outbox = Outbox(settings, background=False)
        run_ids = [record(outbox, tmp_path, f"hostile-{n}") for n in range(3)]
        outbox.sync(180)
        assert {e.state for e in outbox.journal.entries()} == {"confirmed"}
        seen = proxy.events
        assert seen["dropped"] > 0 and seen["throttled"] > 0
        # a transaction whose answer was lost was sent again: never recorded twice
        assert proxy.dropped_calls["eth_sendRawTransaction"] > 0
    for run_id in run_ids:  # read straight from Anvil: each record exactly once
        assert len(events(chain.registry, "RunStarted", run_id)) == 1
        steps = [int(str(e["step"])) for e in events(chain.registry, "CheckpointCommitted", run_id)]
        assert sorted(steps) == [0, 1, 2, 3]
        assert len(events(chain.registry, "RunFinalized", run_id)) == 1


def sync_json(settings: Settings, url: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env |= {"LEDGER_HOME": str(settings.data_dir), "LEDGER_RPC_URL": url}
    result = CliRunner().invoke(app, ["sync", "--json"], env=env)
    assert result.exit_code == 0, result.output
    document: dict[str, object] = json.loads(result.output)
    return document


def test_sync_checks_and_rebuild_read_through_caps(chain: Chain, tmp_path: Path) -> None:
    from ledger.chain.anvil import rpc_call

    settings = chain.settings(tmp_path / "ledger")
    outbox = Outbox(settings, background=False)
    record(outbox, tmp_path, "first", steps=3)
    outbox.sync(60)
    rpc_call(chain.rpc_url, "anvil_mine", [hex(120)])
    record(outbox, tmp_path, "second", steps=3)
    outbox.sync(60)
    rpc_call(chain.rpc_url, "anvil_mine", [hex(60)])
    direct = sync_json(settings, chain.rpc_url)
    assert direct["open"] == 0
    rebuilt_direct = Outbox(chain.settings(tmp_path / "direct"), background=False)
    expected = rebuilt_direct.rebuild_from_chain()
    assert expected >= 10  # two runs: start, 3 checkpoints, final each
    with ProviderProxy(chain.rpc_url, HOSTILE) as proxy:
        assert sync_json(settings, proxy.url) == direct
        rebuilt = Outbox(through(chain.settings(tmp_path / "proxied"), proxy), background=False)
        assert rebuilt.rebuild_from_chain() == expected
        assert proxy.events["refused_range"] > 0
    rows = [
        (e.run_id, e.kind, e.step, e.tx_hash, e.block_number) for e in rebuilt.journal.entries()
    ]
    rows_direct = [
        (e.run_id, e.kind, e.step, e.tx_hash, e.block_number)
        for e in rebuilt_direct.journal.entries()
    ]
    assert rows == rows_direct
