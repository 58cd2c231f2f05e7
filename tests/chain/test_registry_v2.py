"""A registry deployed by an earlier ledger (2.0.0) is still read, by scanning its logs.

The 2.0.0 contract, as ledger compiled and committed it, is deployed on the
session's Anvil next to the current one; web3.py records on it through its own
ABI (the oracle) and ledger's reader, built for registry 3, must give the same
answers: runs (five-word ``getRun``), weights lookups, a run's events, children,
revocations, a run id prefix, ``ledger verify`` and ``show``, also through a
provider that caps ``eth_getLogs`` at 50 blocks (the scans are split).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from ledger.chain.anvil import rpc_call
from ledger.chain.logs import forget_learned_caps
from ledger.chain.reader import RegistryReader
from ledger.chain.records import ZERO32, RunStatus
from ledger.chain.rpc import JsonRpc
from ledger.config import Settings, save_deployment
from ledger.ids import Relation
from ledger.store import LocalStore
from ledger.testing.provider import ProviderProxy, ProviderRules
from ledger.verify import Outcome, Verifier
from tests.chain.test_registry import digest, final, leaf
from tests.chain.web3_registry import Registry
from tests.cli.test_cli import ledger
from tests.conftest import Chain
from tests.hashing.test_tensors import make_state_dict
from tests.recorder import RunRecorder
from tests.runs import manifest

pytestmark = pytest.mark.integration

V2 = json.loads((Path(__file__).parent / "registry_2_0_0.json").read_text())


@pytest.fixture
def old(chain: Chain) -> Registry:
    registry, _ = Registry.deploy(chain.w3, chain.admin, V2)
    return registry


def reader_of(old: Registry, url: str) -> RegistryReader:
    return RegistryReader(JsonRpc(url), old.address, old.deploy_block)


def test_a_registry_2_is_told_apart_and_read_like_the_oracle_reads_it(
    chain: Chain, old: Registry
) -> None:
    parent, _ = old.start_run(digest(1))
    old.commit_checkpoint(parent, leaf(1, 10))
    old.finalize_run(parent, final(20, [leaf(1, 10)]))
    child, _ = old.start_run(digest(2), [(parent, Relation.FINE_TUNE)])
    old.commit_checkpoint(child, leaf(1, 20))  # the parent's final weights, again
    old.mark_failed(child, "diverged")
    old.revoke_run(parent, "bad data")
    reader = reader_of(old, chain.rpc_url)
    assert (reader.version(), reader.has_lookups) == ("2.0.0", False)
    for run_id in (parent, child):
        run = reader.get_run(run_id)
        assert run == old.get_run(run_id)
        assert run.started_at is not None and run.start_block is None
        for name in ("RunStarted", "CheckpointCommitted", "RunFinalized", "RunFailed"):
            assert reader.events(name, run_id) == old.events(name, run_id)
        assert reader.checkpoints(run_id) == old.checkpoints(run_id)
    assert reader.get_run(parent).revoked and reader.get_run(child).status is RunStatus.FAILED
    assert reader.find_by_weights(digest(20)) == old.find_by_weights(digest(20))
    assert len(reader.find_by_weights(digest(20))) == 2
    assert reader.find_by_tensor_root(digest(1_000_020)) == old.find_by_tensor_root(
        digest(1_000_020)
    )
    assert reader.find_by_tensor_root(ZERO32) == []
    assert reader.has_revocations()
    assert [bytes(e["runId"]) for e in reader.children(parent)] == [child]
    assert reader.resolve_run("0x" + child.hex()[:8]) == child
    assert reader.artifact_revocation(digest(5)) is None  # registry 2 revoked no artifacts
    assert reader.replay_attestations(parent) == []


def test_verify_and_show_read_a_registry_2_through_a_capped_provider(
    chain: Chain, old: Registry, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir, rpc_url=chain.rpc_url)
    save_deployment(
        settings, address=old.address, chain_id=chain.w3.eth.chain_id, block=old.deploy_block
    )
    store = LocalStore(settings.store_dir)
    model = tmp_path / "model.pt"
    torch.save(make_state_dict(7), model)
    run = RunRecorder(old, store)
    run.start(manifest("on the old registry"))
    run.finalize(model, {"loss": 0.1})
    rpc_call(chain.rpc_url, "anvil_mine", [hex(120)])  # wider than the provider's cap
    forget_learned_caps()
    rules = ProviderRules(max_log_blocks=50, range_style="infura")
    with ProviderProxy(chain.rpc_url, rules) as proxy:
        report = Verifier(reader_of(old, proxy.url), store).verify_file(model)
        assert report.outcome is Outcome.VERIFIED, report.failed
        assert report.run_id == run.run_id_hex
        assert proxy.events["refused_range"] >= 1  # the scans were split, not skipped
        env = {"LEDGER_HOME": str(data_dir), "LEDGER_RPC_URL": proxy.url}
        shown = ledger("show", run.run_id_hex, "--json", env=env)
        assert shown.returncode == 0, shown.stderr
        document: dict[str, Any] = json.loads(shown.stdout)
        assert (document["status"], document["start_block"]) == ("finalized", None)
        assert document["started_at"] == old.get_run(run.run_id or b"").started_at
    forget_learned_caps()
