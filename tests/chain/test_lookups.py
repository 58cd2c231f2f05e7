"""Contract tests of registry 3's lookups, artifact revocation and replay attestations.

The lookups exist so that a reader needs no scan of the chain: a view names the
latest block of a weights digest, tensor root, run or run's attestations, and each
event links to the previous block of the same chain. Here an independent walker
(web3's ``get_logs`` over one block at a time) follows those links and must find
exactly the events a whole-chain scan finds.
"""

from __future__ import annotations

from typing import Any

import pytest
from eth_utils.crypto import keccak

from ledger.chain.records import ZERO32
from ledger.hashing.merkle import CheckpointLeaf
from ledger.ids import Relation
from tests.chain.test_registry import (
    digest,
    events_of,
    expect_revert,
    final,
    leaf,
    sole_event,
    started,
    with_committer,
)
from tests.chain.web3_registry import ADMIN_ROLE, FinalRecord, Registry, RunStatus
from tests.conftest import Chain

pytestmark = pytest.mark.integration

WEIGHTS_EVENTS = ("CheckpointCommitted", "RunFinalized")


def _topic(chain: Chain, name: str) -> str:
    text = str(getattr(chain.registry.contract.events, name).topic).lower()
    return text if text.startswith("0x") else "0x" + text


def _logs_at(chain: Chain, block: int, topics: list[Any]) -> list[Any]:
    return list(
        chain.w3.eth.get_logs(
            {
                "address": chain.registry.address,
                "fromBlock": block,
                "toBlock": block,
                "topics": topics,
            }
        )
    )


def _decode(chain: Chain, log: Any) -> tuple[str, dict[str, Any]]:
    for name in (*WEIGHTS_EVENTS, "RunStarted", "RunFailed", "ReplayAttested"):
        if bytes(log["topics"][0]) == bytes.fromhex(_topic(chain, name)[2:]):
            event = getattr(chain.registry.contract.events, name)().process_log(log)
            return name, dict(event["args"])
    raise AssertionError(f"unexpected log {log}")


def walk(chain: Chain, head: int, topics: list[Any], link: str) -> list[tuple[int, str]]:
    """Follow ``link`` fields back from block ``head``: (block, tx hash) of every event
    on the way, oldest first, one single-block query per block."""
    found: list[tuple[int, str]] = []
    block = head
    while block:
        logs = _logs_at(chain, block, topics)
        assert logs, f"a link points at block {block}, which has no matching event"
        found = [(block, "0x" + bytes(log["transactionHash"]).hex()) for log in logs] + found
        links = [_decode(chain, log)[1].get(link, 0) for log in logs]
        earlier = [b for b in links if b != block]
        assert len(earlier) == 1, "only the block's first event links to an earlier block"
        assert all(b < block for b in earlier)
        block = earlier[0]
    return found


def scan(chain: Chain, topics: list[Any]) -> list[tuple[int, str]]:
    logs = chain.w3.eth.get_logs(
        {"address": chain.registry.address, "fromBlock": chain.deploy_block, "topics": topics}
    )
    return [(int(log["blockNumber"]), "0x" + bytes(log["transactionHash"]).hex()) for log in logs]


def weights_topics(chain: Chain, value: bytes, position: int) -> list[Any]:
    topics: list[Any] = [[_topic(chain, n) for n in WEIGHTS_EVENTS], None, None, None]
    topics[position] = "0x" + value.hex()
    return topics


# -- weights digests and tensor roots ----------------------------------------------


def test_every_claim_of_a_weights_digest_is_linked_from_the_latest(chain: Chain) -> None:
    alice = with_committer(chain, chain.alice)
    mine, theirs = started(chain.registry, 1), started(alice, 2)
    shared = CheckpointLeaf(1, digest(10), digest(11), digest(12))
    functions = chain.registry.contract.functions
    assert functions.latestWeightsBlock(digest(10)).call() == 0
    chain.registry.commit_checkpoint(mine, shared)
    chain.registry.commit_checkpoint(started(chain.registry, 3), leaf(1, 50))  # unrelated
    # A batch claims it twice in one block; another committer claims it as final weights.
    chain.registry.commit_checkpoints([(mine, shared), (mine, leaf(2, 20)), (mine, shared)])
    latest = alice.finalize_run(theirs, FinalRecord(digest(10), digest(11), ZERO32, ZERO32, 0))
    assert functions.latestWeightsBlock(digest(10)).call() == latest.block_number
    assert functions.latestTensorRootBlock(digest(11)).call() == latest.block_number
    for value, position, view in ((digest(10), 2, "weights"), (digest(11), 3, "tensor")):
        topics = weights_topics(chain, value, position)
        link = "previousWeightsBlock" if view == "weights" else "previousTensorBlock"
        claims = walk(chain, latest.block_number, topics, link)
        assert claims == scan(chain, topics)
        assert len(claims) == 4 and len({block for block, _ in claims}) == 3
    # Unknown digests, and metrics digests (never looked up), have no block.
    assert functions.latestWeightsBlock(digest(11)).call() == 0
    assert functions.latestWeightsBlock(digest(12)).call() == 0
    assert functions.latestTensorRootBlock(digest(10)).call() == 0


def test_a_zero_tensor_root_is_never_linked(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    first = chain.registry.commit_checkpoint(run_id, CheckpointLeaf(1, digest(2), ZERO32, ZERO32))
    second = chain.registry.commit_checkpoint(run_id, CheckpointLeaf(2, digest(3), ZERO32, ZERO32))
    for tx in (first, second):
        assert sole_event(chain, tx, "CheckpointCommitted")["previousTensorBlock"] == 0
    assert chain.registry.contract.functions.latestTensorRootBlock(ZERO32).call() == 0


# -- a run's own events --------------------------------------------------------------


def test_a_runs_events_link_from_its_last_block_to_its_start(chain: Chain) -> None:
    run_id, start = chain.registry.start_run(digest(1))
    other = started(chain.registry, 2)
    leaves = [leaf(1, 10), leaf(2, 20), leaf(3, 30)]
    chain.registry.commit_checkpoint(run_id, leaves[0])
    chain.registry.commit_checkpoint(other, leaf(1, 90))
    chain.registry.commit_checkpoints(
        [(run_id, leaves[1]), (other, leaf(2, 91)), (run_id, leaves[2])]
    )
    done = chain.registry.finalize_run(run_id, final(40, leaves))
    chain.registry.revoke_run(run_id, "afterwards")
    run = chain.registry.get_run(run_id)
    assert (run.start_block, run.last_block) == (start.block_number, done.block_number)
    topics: list[Any] = [None, "0x" + run_id.hex()]
    linked = walk(chain, run.last_block, topics, "previousRunBlock")
    # Every event of the run but the revocation (which has its own block in getRun).
    everything = scan(chain, topics)
    revocation = scan(chain, [_topic(chain, "RunRevoked"), "0x" + run_id.hex()])
    assert linked == [e for e in everything if e not in revocation]
    assert len(linked) == 5  # started, three checkpoints, finalized
    assert revocation == [(run.revoked_block, revocation[0][1])]


def test_a_failed_run_links_its_failure_to_its_last_checkpoint(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    checkpoint = chain.registry.commit_checkpoint(run_id, leaf(1, 10))
    failed = chain.registry.mark_failed(run_id, "diverged")
    assert sole_event(chain, failed, "RunFailed")["previousRunBlock"] == checkpoint.block_number
    run = chain.registry.get_run(run_id)
    assert (run.status, run.last_block) == (RunStatus.FAILED, failed.block_number)


def test_revoked_run_count_counts_revocations(chain: Chain) -> None:
    functions = chain.registry.contract.functions
    assert functions.revokedRunCount().call() == 0
    runs = [started(chain.registry, n) for n in (1, 2)]
    for count, run_id in enumerate(runs, start=1):
        chain.registry.revoke_run(run_id, "bad")
        assert functions.revokedRunCount().call() == count
    with expect_revert("RegistryRunRevoked", runs[0]):
        chain.registry.revoke_run(runs[0], "again")
    assert functions.revokedRunCount().call() == 2


# -- revokeArtifact ------------------------------------------------------------------


def test_an_admin_revokes_an_artifact_once(chain: Chain) -> None:
    dataset = keccak(b"a dataset fingerprint's CID digest")
    functions = chain.registry.contract.functions
    assert functions.isArtifactRevoked(dataset).call() is False
    assert functions.artifactRevokedBlock(dataset).call() == 0
    tx = chain.registry.revoke_artifact(dataset, "contains personal data")
    assert sole_event(chain, tx, "ArtifactRevoked") == {
        "digest": dataset,
        "revoker": chain.admin.address,
        "reason": "contains personal data",
    }
    assert functions.isArtifactRevoked(dataset).call() is True
    assert functions.artifactRevokedBlock(dataset).call() == tx.block_number
    with expect_revert("RegistryArtifactRevoked", dataset):
        chain.registry.revoke_artifact(dataset, "twice")
    # Other digests, and runs, are untouched.
    assert functions.isArtifactRevoked(digest(1)).call() is False
    assert functions.revokedRunCount().call() == 0


def test_only_an_admin_may_revoke_an_artifact(chain: Chain) -> None:
    alice = with_committer(chain, chain.alice)  # a committer is not enough
    for registry, account in ((alice, chain.alice), (chain.as_(chain.bob), chain.bob)):
        with expect_revert("AccessControlUnauthorizedAccount", account.address, ADMIN_ROLE):
            registry.revoke_artifact(digest(1), "not mine to revoke")
    assert chain.registry.contract.functions.isArtifactRevoked(digest(1)).call() is False


def test_revoke_artifact_refuses_a_zero_digest(chain: Chain) -> None:
    with expect_revert("RegistryZeroDigest"):
        chain.registry.revoke_artifact(ZERO32, "nothing")


# -- attestReplay --------------------------------------------------------------------


@pytest.mark.parametrize("status", [RunStatus.RUNNING, RunStatus.FINALIZED, RunStatus.FAILED])
def test_anyone_attests_a_replay_of_any_existing_run(chain: Chain, status: RunStatus) -> None:
    run_id = started(chain.registry, 1)
    if status is RunStatus.FINALIZED:
        chain.registry.finalize_run(run_id, final(2))
    elif status is RunStatus.FAILED:
        chain.registry.mark_failed(run_id, "oom")
    functions = chain.registry.contract.functions
    assert functions.latestReplayBlock(run_id).call() == 0
    bob = chain.as_(chain.bob)  # holds no role at all
    first = bob.attest_replay(run_id, 0, 100, True, digest(3))
    assert sole_event(chain, first, "ReplayAttested") == {
        "runId": run_id,
        "attester": chain.bob.address,
        "fromStep": 0,
        "toStep": 100,
        "reproduced": True,
        "reportDigest": digest(3),
        "previousBlock": 0,
    }
    second = chain.as_(chain.alice).attest_replay(run_id, 7, 7, False, digest(4))
    args = sole_event(chain, second, "ReplayAttested")
    assert (args["attester"], args["reproduced"], args["previousBlock"]) == (
        chain.alice.address,
        False,
        first.block_number,
    )
    assert functions.latestReplayBlock(run_id).call() == second.block_number
    topics = [_topic(chain, "ReplayAttested"), "0x" + run_id.hex()]
    assert walk(chain, second.block_number, topics, "previousBlock") == scan(chain, topics)
    assert chain.registry.get_run(run_id).status is status  # the run is untouched


def test_attest_replay_refusals(chain: Chain) -> None:
    bob = chain.as_(chain.bob)
    with expect_revert("RegistryUnknownRun", digest(1)):
        bob.attest_replay(digest(1), 0, 1, True, digest(2))
    run_id = started(chain.registry, 1)
    with expect_revert("RegistryInvalidStepRange", 5, 4):
        bob.attest_replay(run_id, 5, 4, True, digest(2))
    with expect_revert("RegistryZeroDigest"):
        bob.attest_replay(run_id, 0, 1, True, ZERO32)
    assert chain.registry.contract.functions.latestReplayBlock(run_id).call() == 0


# -- children ------------------------------------------------------------------------


def test_every_child_of_a_run_is_linked_from_its_latest_child(chain: Chain) -> None:
    parent, other = started(chain.registry, 1), started(chain.registry, 2)
    functions = chain.registry.contract.functions
    assert functions.latestChildBlock(parent).call() == 0
    _, first = chain.registry.start_run(digest(3), [(parent, Relation.FINE_TUNE)])
    _, pruned = chain.registry.start_run(digest(4), [(other, Relation.PRUNING)])  # other's
    # one transaction: two children, one naming the parent twice under two relations
    _, batch = chain.registry.start_runs(
        [
            (digest(5), [(other, Relation.DISTILLATION), (parent, Relation.SWEEP_TRIAL)]),
            (digest(6), [(parent, Relation.FINE_TUNE), (parent, Relation.QUANTIZATION)]),
        ]
    )
    batch_events = events_of(chain, batch, "RunStarted")
    assert [e["previousChildBlocks"] for e in batch_events] == [
        [pruned.block_number, first.block_number],  # each parent's previous child
        [batch.block_number, batch.block_number],
    ]
    assert functions.latestChildBlock(parent).call() == batch.block_number
    # Walk the parent's children: every RunStarted of a block, those naming the parent.
    children, block = [], batch.block_number
    while block:
        logs = _logs_at(chain, block, [_topic(chain, "RunStarted")])
        named = [
            (args["runId"], link)
            for args in (_decode(chain, log)[1] for log in logs)
            for p, link in zip(args["parents"], args["previousChildBlocks"], strict=True)
            if bytes(p["runId"]) == parent
        ]
        children = [run_id for run_id, _ in named] + children
        block = min(link for _, link in named if link != block) if named else 0
    expected = [Registry.run_id_for(chain.admin.address, digest(n)) for n in (3, 5, 6, 6)]
    assert children == expected
