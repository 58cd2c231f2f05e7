"""Contract tests of the batch writes and of checkpoint Merkle proofs, on the real Anvil.

A batch of N entries must emit exactly N events in entry order, and a batch refused at
its k-th entry must revert whole: the client names the custom error before sending,
and the same transaction mined without that check (``send_unchecked``) fails on chain
with no logs and no state. Proofs built by :mod:`ledger.hashing.merkle` must verify both
in Python and in the contract's ``verifyCheckpoint``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from ledger.chain.records import ZERO32
from ledger.hashing.merkle import CheckpointLeaf, MerkleTree, checkpoint_root, verify_proof
from ledger.ids import Relation
from tests.chain.test_registry import (
    MAX_UINT64,
    digest,
    events_of,
    expect_revert,
    final,
    leaf,
    parents_of,
    registry_logs_since,
    send_unchecked,
    started,
    with_committer,
)
from tests.chain.web3_registry import (
    COMMITTER_ROLE,
    FinalRecord,
    Registry,
    RunStatus,
    record_leaf,
)
from tests.conftest import Chain

pytestmark = pytest.mark.integration


# -- helpers ------------------------------------------------------------------------


def run_id_of(chain: Chain, n: int) -> bytes:
    """The id of the admin's run with manifest ``digest(n)``."""
    return Registry.run_id_for(chain.admin.address, digest(n))


def start_requests(
    requests: list[tuple[bytes, list[tuple[bytes, Relation]]]],
) -> list[tuple[bytes, list[tuple[bytes, int]]]]:
    """Start requests as the ABI tuples of ``startRuns``."""
    return [(m, [(p, int(r)) for p, r in parents]) for m, parents in requests]


def checkpoint_requests(requests: list[tuple[bytes, CheckpointLeaf]]) -> list[Any]:
    """Checkpoint requests as the ABI tuples of ``commitCheckpoints``."""
    return [(r, (c.step, c.weights_digest, c.tensor_root, c.metrics_digest)) for r, c in requests]


def assert_refused_on_chain(chain: Chain, fn: Any) -> None:
    """Mined without the client's check, ``fn`` fails and leaves no log."""
    block = chain.w3.eth.block_number
    receipt = send_unchecked(chain, chain.admin, fn)
    assert receipt["status"] == 0
    assert receipt["logs"] == []
    assert registry_logs_since(chain, block) == []


def finalized_with_checkpoints(
    chain: Chain, manifest: int, leaves: list[CheckpointLeaf]
) -> tuple[bytes, FinalRecord, MerkleTree]:
    """A run whose ``leaves`` were committed and which was finalized with their root."""
    run_id = started(chain.registry, manifest)
    chain.registry.commit_checkpoints([(run_id, c) for c in leaves])
    on_chain = [record_leaf(r) for r in chain.registry.checkpoints(run_id)]
    assert on_chain == leaves
    tree = MerkleTree([c.hash for c in on_chain])
    record = FinalRecord(digest(manifest + 500), ZERO32, ZERO32, tree.root, len(on_chain))
    chain.registry.finalize_run(run_id, record)
    return run_id, record, tree


# -- startRuns ----------------------------------------------------------------------


def test_start_runs_starts_each_run_and_emits_one_event_per_run(chain: Chain) -> None:
    parent = started(chain.registry, 1)
    first_in_batch = run_id_of(chain, 2)
    requests = [
        (digest(2), []),
        (digest(3), [(parent, Relation.FINE_TUNE)]),
        (digest(4), [(parent, Relation.PRUNING), (first_in_batch, Relation.DISTILLATION)]),
    ]
    fn = chain.registry.contract.functions.startRuns(start_requests(requests))
    returned = [bytes(r) for r in fn.call({"from": chain.admin.address})]
    run_ids, tx = chain.registry.start_runs(requests)
    assert run_ids == returned == [run_id_of(chain, n) for n in (2, 3, 4)]
    events = events_of(chain, tx, "RunStarted")
    assert len(events) == 3
    assert [(e["runId"], e["committer"], e["manifestDigest"]) for e in events] == [
        (run_id_of(chain, n), chain.admin.address, digest(n)) for n in (2, 3, 4)
    ]
    assert [parents_of(e) for e in events] == [
        [],
        [(parent, 1)],
        [(parent, 3), (first_in_batch, 2)],  # an earlier entry of the batch may be a parent
    ]
    for run_id in run_ids:
        run = chain.registry.get_run(run_id)
        assert (run.committer, run.status, run.revoked) == (
            chain.admin.address,
            RunStatus.RUNNING,
            False,
        )
        assert run.start_block == run.last_block == tx.block_number


def test_start_runs_of_one_run_is_start_run(chain: Chain) -> None:
    (run_id,), tx = chain.registry.start_runs([(digest(1), [])])
    (event,) = events_of(chain, tx, "RunStarted")
    assert event == {
        "runId": run_id,
        "committer": chain.admin.address,
        "manifestDigest": digest(1),
        "parents": [],
        "previousChildBlocks": [],
    }


def test_start_runs_refuses_an_empty_batch(chain: Chain) -> None:
    with expect_revert("RegistryEmptyBatch"):
        chain.registry.start_runs([])
    assert_refused_on_chain(chain, chain.registry.contract.functions.startRuns([]))


def test_start_runs_refuses_the_same_manifest_twice_in_one_batch(chain: Chain) -> None:
    requests = [(digest(1), []), (digest(2), []), (digest(1), [])]
    with expect_revert("RegistryRunExists", run_id_of(chain, 1)):
        chain.registry.start_runs(requests)
    fn = chain.registry.contract.functions.startRuns(start_requests(requests))
    assert_refused_on_chain(chain, fn)
    for n in (1, 2):
        assert not chain.registry.get_run(run_id_of(chain, n)).exists


@pytest.mark.parametrize("refusal", ["zero", "exists", "unknown-parent", "relation-none"])
def test_start_runs_refused_at_one_entry_reverts_whole(chain: Chain, refusal: str) -> None:
    existing = started(chain.registry, 9)
    bad, expected = {
        "zero": ((ZERO32, []), ("RegistryZeroDigest",)),
        "exists": ((digest(9), []), ("RegistryRunExists", existing)),
        "unknown-parent": (
            (digest(5), [(digest(99), Relation.RESUME)]),
            ("RegistryUnknownParent", digest(99)),
        ),
        "relation-none": (
            (digest(5), [(existing, Relation.NONE)]),
            ("RegistryInvalidRelation", existing),
        ),
    }[refusal]
    requests = [(digest(1), []), (digest(2), [(existing, Relation.RESUME)]), bad, (digest(4), [])]
    with expect_revert(*expected):
        chain.registry.start_runs(requests)
    fn = chain.registry.contract.functions.startRuns(start_requests(requests))
    assert_refused_on_chain(chain, fn)
    for n in (1, 2, 4, 5):
        assert not chain.registry.get_run(run_id_of(chain, n)).exists


def test_start_runs_needs_the_committer_role(chain: Chain) -> None:
    with expect_revert("AccessControlUnauthorizedAccount", chain.bob.address, COMMITTER_ROLE):
        chain.as_(chain.bob).start_runs([(digest(1), [])])
    assert not chain.registry.get_run(Registry.run_id_for(chain.bob.address, digest(1))).exists


# -- commitCheckpoints ------------------------------------------------------------


def test_commit_checkpoints_emits_one_event_per_checkpoint_in_order(chain: Chain) -> None:
    one, two = started(chain.registry, 1), started(chain.registry, 2)
    starts = {r: chain.registry.get_run(r).start_block for r in (one, two)}
    requests = [(one, leaf(1, 10)), (two, leaf(1, 20)), (one, leaf(2, 30)), (one, leaf(3, 40))]
    tx = chain.registry.commit_checkpoints(requests)
    events = events_of(chain, tx, "CheckpointCommitted")
    # A run's later events in the same block link to this block.
    previous = [starts[one], starts[two], tx.block_number, tx.block_number]
    assert events == [
        {
            "runId": run_id,
            "weightsDigest": c.weights_digest,
            "tensorRoot": c.tensor_root,
            "step": c.step,
            "metricsDigest": c.metrics_digest,
            "previousRunBlock": before,
            "previousWeightsBlock": 0,
            "previousTensorBlock": 0,
        }
        for (run_id, c), before in zip(requests, previous, strict=True)
    ]
    for run_id in (one, two):
        assert chain.registry.get_run(run_id).last_block == tx.block_number
    assert [record_leaf(r) for r in chain.registry.checkpoints(one)] == [
        leaf(1, 10),
        leaf(2, 30),
        leaf(3, 40),
    ]
    assert [record_leaf(r) for r in chain.registry.checkpoints(two)] == [leaf(1, 20)]
    assert {r.tx_hash for r in chain.registry.checkpoints(one)} == {tx.tx_hash}


def test_commit_checkpoints_refuses_an_empty_batch(chain: Chain) -> None:
    with expect_revert("RegistryEmptyBatch"):
        chain.registry.commit_checkpoints([])
    assert_refused_on_chain(chain, chain.registry.contract.functions.commitCheckpoints([]))


@pytest.mark.parametrize("refusal", ["zero", "unknown", "finalized", "failed", "not-committer"])
def test_commit_checkpoints_refused_at_one_entry_reverts_whole(chain: Chain, refusal: str) -> None:
    run_id = started(chain.registry, 1)
    done, failed = started(chain.registry, 2), started(chain.registry, 3)
    chain.registry.finalize_run(done, final(4))
    chain.registry.mark_failed(failed, "oom")
    alices = started(with_committer(chain, chain.alice), 5)
    bad, expected = {
        "zero": (
            (run_id, CheckpointLeaf(3, ZERO32, digest(33), ZERO32)),
            ("RegistryZeroDigest",),
        ),
        "unknown": ((digest(99), leaf(3, 30)), ("RegistryUnknownRun", digest(99))),
        "finalized": (
            (done, leaf(3, 30)),
            ("RegistryRunNotRunning", done, RunStatus.FINALIZED),
        ),
        "failed": ((failed, leaf(3, 30)), ("RegistryRunNotRunning", failed, RunStatus.FAILED)),
        "not-committer": (
            (alices, leaf(3, 30)),
            ("RegistryNotRunCommitter", alices, chain.admin.address),
        ),
    }[refusal]
    requests = [(run_id, leaf(1, 10)), (run_id, leaf(2, 20)), bad, (run_id, leaf(4, 40))]
    with expect_revert(*expected):
        chain.registry.commit_checkpoints(requests)
    fn = chain.registry.contract.functions.commitCheckpoints(checkpoint_requests(requests))
    assert_refused_on_chain(chain, fn)
    assert chain.registry.checkpoints(run_id) == []
    for n in (10, 20, 30, 40):
        assert chain.registry.find_by_weights(digest(n)) == []


def test_commit_checkpoints_needs_the_committer_role(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    with expect_revert("AccessControlUnauthorizedAccount", chain.bob.address, COMMITTER_ROLE):
        chain.as_(chain.bob).commit_checkpoints([(run_id, leaf(1, 10))])
    assert chain.registry.checkpoints(run_id) == []


# -- finalizeRuns -------------------------------------------------------------------


def test_finalize_runs_finalizes_each_run_and_emits_one_event_per_run(chain: Chain) -> None:
    runs = [started(chain.registry, n) for n in (1, 2, 3)]
    records = [final(10), final(20, [leaf(1, 21)]), final(30, [leaf(1, 31), leaf(2, 32)])]
    tx = chain.registry.finalize_runs(list(zip(runs, records, strict=True)))
    events = events_of(chain, tx, "RunFinalized")
    assert events == [
        {
            "runId": run_id,
            "weightsDigest": r.weights_digest,
            "tensorRoot": r.tensor_root,
            "metricsDigest": r.metrics_digest,
            "checkpointRoot": r.checkpoint_root,
            "checkpointCount": r.checkpoint_count,
            "previousRunBlock": chain.registry.get_run(run_id).start_block,
            "previousWeightsBlock": 0,
            "previousTensorBlock": 0,
        }
        for run_id, r in zip(runs, records, strict=True)
    ]
    for run_id, record in zip(runs, records, strict=True):
        run = chain.registry.get_run(run_id)
        assert (run.status, run.final_commitment) == (RunStatus.FINALIZED, record.commitment)
        assert chain.registry.is_final_record(run_id, record)
    assert not chain.registry.is_final_record(runs[0], records[1])


def test_finalize_runs_refuses_an_empty_batch(chain: Chain) -> None:
    with expect_revert("RegistryEmptyBatch"):
        chain.registry.finalize_runs([])
    assert_refused_on_chain(chain, chain.registry.contract.functions.finalizeRuns([]))


@pytest.mark.parametrize("refusal", ["twice", "zero", "unknown", "not-committer"])
def test_finalize_runs_refused_at_one_entry_reverts_whole(chain: Chain, refusal: str) -> None:
    one, two = started(chain.registry, 1), started(chain.registry, 2)
    alices = started(with_committer(chain, chain.alice), 3)
    bad, expected = {
        "twice": ((one, final(30)), ("RegistryRunNotRunning", one, RunStatus.FINALIZED)),
        "zero": ((two, replace(final(30), weights_digest=ZERO32)), ("RegistryZeroDigest",)),
        "unknown": ((digest(99), final(30)), ("RegistryUnknownRun", digest(99))),
        "not-committer": (
            (alices, final(30)),
            ("RegistryNotRunCommitter", alices, chain.admin.address),
        ),
    }[refusal]
    requests = [(one, final(10)), bad]
    if refusal != "zero":
        requests.append((two, final(20)))
    with expect_revert(*expected):
        chain.registry.finalize_runs(requests)
    raw = [(r, f.as_tuple()) for r, f in requests]
    assert_refused_on_chain(chain, chain.registry.contract.functions.finalizeRuns(raw))
    for run_id in (one, two, alices):
        run = chain.registry.get_run(run_id)
        assert (run.status, run.final_commitment) == (RunStatus.RUNNING, ZERO32)
    assert chain.registry.find_by_weights(digest(10)) == []


def test_finalize_runs_needs_the_committer_role(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    with expect_revert("AccessControlUnauthorizedAccount", chain.bob.address, COMMITTER_ROLE):
        chain.as_(chain.bob).finalize_runs([(run_id, final(2))])
    assert chain.registry.get_run(run_id).status is RunStatus.RUNNING


def test_a_revoked_committer_can_use_no_batch(chain: Chain) -> None:
    alice = with_committer(chain, chain.alice)
    run_id = started(alice, 1)
    chain.registry.revoke_committer(chain.alice.address)
    unauthorized = ("AccessControlUnauthorizedAccount", chain.alice.address, COMMITTER_ROLE)
    with expect_revert(*unauthorized):
        alice.start_runs([(digest(2), [])])
    with expect_revert(*unauthorized):
        alice.commit_checkpoints([(run_id, leaf(1, 10))])
    with expect_revert(*unauthorized):
        alice.finalize_runs([(run_id, final(20))])
    assert chain.registry.get_run(run_id).status is RunStatus.RUNNING


# -- checkpointLeaf -----------------------------------------------------------------


def test_checkpoint_leaf_equals_the_python_leaf_hash(chain: Chain) -> None:
    leaves = [
        leaf(1, 10),
        CheckpointLeaf(0, digest(1), ZERO32, ZERO32),
        CheckpointLeaf(MAX_UINT64, digest(2), digest(3), digest(4)),
        CheckpointLeaf(2**32, ZERO32, ZERO32, ZERO32),
    ]
    fn = chain.registry.contract.functions.checkpointLeaf
    for c in leaves:
        on_chain = bytes(fn((c.step, c.weights_digest, c.tensor_root, c.metrics_digest)).call())
        assert on_chain == c.hash
    assert len({c.hash for c in leaves}) == len(leaves)


# -- checkpoint proofs --------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8])
def test_every_checkpoint_proves_against_the_final_record(chain: Chain, count: int) -> None:
    leaves = [leaf(step * 10, 100 + step) for step in range(1, count + 1)]
    run_id, record, tree = finalized_with_checkpoints(chain, 1, leaves)
    (event,) = chain.registry.events("RunFinalized", run_id)
    assert event["checkpointRoot"] == tree.root == checkpoint_root(leaves)
    assert event["checkpointCount"] == count
    # The root does not depend on the order of commitment.
    assert checkpoint_root(list(reversed(leaves))) == tree.root
    for c in leaves:
        proof = tree.proof(c.hash)
        assert verify_proof(proof, record.checkpoint_root, c.hash)
        assert chain.registry.verify_checkpoint(run_id, record, c, proof)
    if count == 1:
        assert tree.proof(leaves[0].hash) == []
        assert tree.root == leaves[0].hash


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8])
def test_a_changed_checkpoint_does_not_prove(chain: Chain, count: int) -> None:
    leaves = [leaf(step, 200 + step) for step in range(1, count + 1)]
    run_id, record, tree = finalized_with_checkpoints(chain, 1, leaves)
    for c in leaves:
        proof = tree.proof(c.hash)
        for wrong in (
            replace(c, step=c.step + 1),
            replace(c, weights_digest=digest(999)),
            replace(c, tensor_root=ZERO32),
            replace(c, metrics_digest=digest(998)),
        ):
            assert not verify_proof(proof, record.checkpoint_root, wrong.hash)
            assert not chain.registry.verify_checkpoint(run_id, record, wrong, proof)


@pytest.mark.parametrize("count", [2, 3, 5, 8])
def test_a_proof_of_another_checkpoint_does_not_prove(chain: Chain, count: int) -> None:
    leaves = [leaf(step, 300 + step) for step in range(1, count + 1)]
    run_id, record, tree = finalized_with_checkpoints(chain, 1, leaves)
    for i, c in enumerate(leaves):
        other = leaves[(i + 1) % count]
        proof = tree.proof(other.hash)
        assert not verify_proof(proof, record.checkpoint_root, c.hash)
        assert not chain.registry.verify_checkpoint(run_id, record, c, proof)
    # Nor does a proof cut short or made longer.
    c = leaves[0]
    proof = tree.proof(c.hash)
    assert not chain.registry.verify_checkpoint(run_id, record, c, proof[:-1])
    assert not chain.registry.verify_checkpoint(run_id, record, c, [*proof, digest(1)])


@pytest.mark.parametrize("count", [1, 3, 8])
def test_a_proof_against_another_final_record_does_not_prove(chain: Chain, count: int) -> None:
    leaves = [leaf(step, 400 + step) for step in range(1, count + 1)]
    run_id, record, tree = finalized_with_checkpoints(chain, 1, leaves)
    c = leaves[-1]
    proof = tree.proof(c.hash)
    for other in (
        replace(record, weights_digest=digest(999)),
        replace(record, checkpoint_count=count + 1),
        replace(record, metrics_digest=digest(998)),
    ):
        # The proof is sound for the root, but the record is not the run's.
        assert verify_proof(proof, other.checkpoint_root, c.hash)
        assert not chain.registry.verify_checkpoint(run_id, other, c, proof)
    # A record with a different root, of a run finalized with it, does not prove this leaf.
    other_leaves = [leaf(step, 500 + step) for step in range(1, count + 1)]
    other_run, other_record, _ = finalized_with_checkpoints(chain, 2, other_leaves)
    assert not chain.registry.verify_checkpoint(other_run, other_record, c, proof)
    # Nor does the right record, claimed for another run.
    assert not chain.registry.verify_checkpoint(other_run, record, c, proof)
    assert chain.registry.verify_checkpoint(run_id, record, c, proof)


def test_an_unfinalized_run_proves_nothing(chain: Chain) -> None:
    leaves = [leaf(1, 600), leaf(2, 601), leaf(3, 602)]
    tree = MerkleTree([c.hash for c in leaves])
    record = FinalRecord(digest(603), ZERO32, ZERO32, tree.root, 3)
    running = started(chain.registry, 1)
    chain.registry.commit_checkpoints([(running, c) for c in leaves])
    failed = started(chain.registry, 2)
    chain.registry.mark_failed(failed, "oom")
    for run_id in (running, failed, digest(99)):
        for c in leaves:
            proof = tree.proof(c.hash)
            assert verify_proof(proof, tree.root, c.hash)
            assert not chain.registry.verify_checkpoint(run_id, record, c, proof)
    chain.registry.finalize_run(running, record)
    assert all(
        chain.registry.verify_checkpoint(running, record, c, tree.proof(c.hash)) for c in leaves
    )


def test_a_run_without_checkpoints_proves_nothing(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    record = final(2)
    assert record.checkpoint_root == ZERO32
    chain.registry.finalize_run(run_id, record)
    assert not chain.registry.verify_checkpoint(run_id, record, leaf(1, 3), [])


# -- gas of batches -----------------------------------------------------------------


def test_start_runs_in_a_batch_of_100_cost_at_most_35k_gas_per_run(chain: Chain) -> None:
    requests = [(digest(1000 + i), []) for i in range(100)]
    run_ids, tx = chain.registry.start_runs(requests)
    assert len(events_of(chain, tx, "RunStarted")) == 100
    assert all(chain.registry.get_run(r).status is RunStatus.RUNNING for r in run_ids[::33])
    per_run = tx.gas_used / 100
    print(f"\ngas: startRuns x100 {tx.gas_used} = {per_run:.0f} per run")
    assert per_run <= 35_000


def test_commit_checkpoints_in_a_batch_of_100_cost_at_most_55k_gas_each(chain: Chain) -> None:
    """Registry 3 stores, per checkpoint, the block of its weights digest and of its
    tensor root (two new slots, 44,200 gas) so that a file's records are found
    without scanning the chain; registry 2 stored nothing and cost 5,875."""
    one_run = started(chain.registry, 1)
    tx = chain.registry.commit_checkpoints([(one_run, leaf(i, 2000 + i)) for i in range(100)])
    assert len(events_of(chain, tx, "CheckpointCommitted")) == 100
    runs = [started(chain.registry, 10 + i) for i in range(10)]
    spread = chain.registry.commit_checkpoints(
        [(runs[i % 10], leaf(i, 3000 + i)) for i in range(100)]
    )
    assert len(events_of(chain, spread, "CheckpointCommitted")) == 100
    per_checkpoint = tx.gas_used / 100
    per_spread = spread.gas_used / 100
    print(
        f"\ngas: commitCheckpoints x100 of one run {tx.gas_used} = {per_checkpoint:.0f} each; "
        f"of ten runs {spread.gas_used} = {per_spread:.0f} each"
    )
    assert per_checkpoint <= 55_000
    assert per_spread <= 55_000
