"""``ledger verify``, ``show``, ``lineage`` and ``proof`` cost the same on a long chain.

Issue #22's goal, as its scaling test: through a provider-like proxy that refuses
``eth_getLogs`` over more than 50 blocks (:mod:`ledger.testing.provider`, in front
of a real Anvil), with 500 and then 2,500 empty blocks mined between the
registry's deployment and the model's record and again between the record and
the reads, each command makes the same number of JSON-RPC calls at both lengths,
at most 20 for ``verify``, and none of them is refused. Each history has its own
Anvil (Anvil mines slower as its chain grows: about a minute for the longer one
here), the commands run as the console script does (a subprocess of
``python -m ledger``), and the proxy counts what they ask.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from eth_account import Account
from eth_account.signers.local import LocalAccount

from ledger.chain.anvil import AnvilProcess, free_port
from ledger.chain.rpc import JsonRpc
from ledger.config import ANVIL_DEV_KEY, Settings, save_deployment
from ledger.ids import Relation
from ledger.store import LocalStore
from ledger.testing.provider import ProviderProxy, ProviderRules
from tests.chain.web3_registry import Registry, connect_web3
from tests.hashing.test_tensors import make_state_dict
from tests.recorder import RunRecorder
from tests.runs import manifest

pytestmark = pytest.mark.integration

LENGTHS = (500, 2_500)
LOG_LIMIT = 50
MAX_VERIFY_CALLS = 20


@dataclass
class History:
    """A registry on its own Anvil: ``gap`` blocks, a family of runs, ``gap`` blocks."""

    gap: int
    anvil: AnvilProcess
    data_dir: Path
    model: Path
    checkpoint: Path
    parent: str
    child: str


def _mine(url: str, blocks: int) -> None:
    # Anvil takes tens of seconds for thousands of blocks once its chain is long
    JsonRpc(url, timeout=600)("anvil_mine", hex(blocks))


def _weights(path: Path, seed: int) -> Path:
    torch.save(make_state_dict(seed), path)
    return path


def _build(gap: int, root: Path) -> History:
    anvil = AnvilProcess(root / "anvil", port=free_port())
    anvil.start(persist=False)
    try:
        w3 = connect_web3(anvil.rpc_url)
        admin = cast(LocalAccount, Account.from_key(ANVIL_DEV_KEY))
        registry, deployed = Registry.deploy(w3, admin)
        _mine(anvil.rpc_url, gap)
        data_dir = root / "data"
        settings = Settings(data_dir=data_dir, rpc_url=anvil.rpc_url)
        save_deployment(
            settings,
            address=registry.address,
            chain_id=w3.eth.chain_id,
            block=deployed.block_number,
        )
        store = LocalStore(settings.store_dir)
        base = RunRecorder(registry, store)
        parent = base.start(manifest("base model"))
        base.finalize(_weights(root / "base.pt", 1), {"loss": 0.5})
        tuned = RunRecorder(registry, store)
        tuned.start(
            manifest("fine-tuned", [(parent, Relation.FINE_TUNE)]), [(parent, Relation.FINE_TUNE)]
        )
        checkpoint = _weights(root / "step1.pt", 2)
        tuned.checkpoint(1, checkpoint, {"loss": 0.4})
        tuned.checkpoint(2, _weights(root / "step2.pt", 3), {"loss": 0.3})
        model = _weights(root / "model.pt", 4)
        tuned.finalize(model, {"loss": 0.2})
        _mine(anvil.rpc_url, gap)
        return History(
            gap, anvil, data_dir, model, checkpoint, "0x" + parent.hex(), tuned.run_id_hex
        )
    except BaseException:
        anvil.stop()
        raise


@pytest.fixture(scope="module")
def histories(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, History]]:
    built: dict[int, History] = {}
    try:
        for gap in LENGTHS:
            built[gap] = _build(gap, tmp_path_factory.mktemp(f"history{gap}"))
        yield built
    finally:
        for history in built.values():
            history.anvil.stop()


@dataclass
class Counted:
    returncode: int
    stdout: str
    stderr: str
    calls: int
    by_method: dict[str, int]
    refused: int


def through_proxy(history: History, *args: str) -> Counted:
    """``ledger ARGS`` against the history's data directory, through a proxy that
    refuses ``eth_getLogs`` over more than 50 blocks; what it asked, counted."""
    rules = ProviderRules(max_log_blocks=LOG_LIMIT, range_style="infura")
    with ProviderProxy(history.anvil.rpc_url, rules) as proxy:
        env = {"LEDGER_HOME": str(history.data_dir), "LEDGER_RPC_URL": proxy.url}
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        done = subprocess.run(
            [sys.executable, "-m", "ledger", *args],
            env={**full_env, **env},
            text=True,
            capture_output=True,
            timeout=180,
            check=False,
        )
        refused = proxy.events["refused_range"] + proxy.events["refused_results"]
        return Counted(
            done.returncode,
            done.stdout,
            done.stderr,
            proxy.total_calls(),
            dict(proxy.calls),
            refused,
        )


def same_cost(histories: dict[int, History], *args: str) -> list[Counted]:
    """``ledger ARGS`` on both histories (``@name``: the history's attribute), each
    successful, none refused by the proxy, the two with the same number of calls."""
    results = []
    for history in histories.values():
        filled = [getattr(history, a[1:]) if a.startswith("@") else a for a in args]
        results.append(through_proxy(history, *(str(a) for a in filled)))
    for result in results:
        assert result.returncode == 0, result.stderr
        assert result.refused == 0, "a read asked the provider for more than it allows"
    short, long = results
    assert short.calls == long.calls, (short.by_method, long.by_method)
    return results


def test_verify_of_the_final_model_costs_the_same_at_both_lengths(
    histories: dict[int, History],
) -> None:
    short, long = same_cost(histories, "verify", "@model", "--json")
    assert short.calls <= MAX_VERIFY_CALLS, short.by_method
    for result, history in zip((short, long), histories.values(), strict=True):
        report = json.loads(result.stdout)
        assert report["outcome"] == "verified"
        assert report["run_id"] == history.child


def test_verify_of_a_checkpoint_costs_the_same_at_both_lengths(
    histories: dict[int, History],
) -> None:
    short, long = same_cost(histories, "verify", "@checkpoint", "--json")
    assert short.calls <= MAX_VERIFY_CALLS, short.by_method
    for result, history in zip((short, long), histories.values(), strict=True):
        report = json.loads(result.stdout)
        assert report["outcome"] == "verified"
        assert report["run_id"] == history.child
        assert (report["step"], report["is_final"]) == (1, False)


def test_show_costs_the_same_at_both_lengths(histories: dict[int, History]) -> None:
    results = same_cost(histories, "show", "@child", "--json")
    for result, history in zip(results, histories.values(), strict=True):
        shown: dict[str, Any] = json.loads(result.stdout)
        assert (shown["run_id"], shown["status"], shown["checkpoints"]) == (
            history.child,
            "finalized",
            2,
        )
        assert shown["parents"] == [{"run_id": history.parent, "relation": 1}]
        assert shown["started_at"] > 0 and shown["start_block"] > history.gap
        assert shown["final"] is not None


def test_lineage_costs_the_same_at_both_lengths(histories: dict[int, History]) -> None:
    for who, way in (("@parent", "descendants"), ("@child", "ancestors")):
        results = same_cost(histories, "lineage", who, "--json")
        for result, history in zip(results, histories.values(), strict=True):
            tree = json.loads(result.stdout)
            other = history.child if way == "descendants" else history.parent
            assert [(n["run_id"], n["relation"]) for n in tree[way]] == [(other, "fine-tune")]
            assert tree["run"]["status"] == "finalized"


def test_proof_costs_the_same_at_both_lengths(histories: dict[int, History]) -> None:
    results = same_cost(histories, "proof", "@child", "1")
    for result in results:
        proof = json.loads(result.stdout)
        assert proof["root_matches"] is True
        assert [c["verified_by_registry"] for c in proof["checkpoints"]] == [True]
