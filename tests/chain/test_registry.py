"""Contract tests of ProvenanceRegistry 3.0.0 against the real Anvil of the test session.

Every test uses the ``chain`` fixture (state reverted after each test) and drives
the deployed contract through :class:`tests.chain.web3_registry.Registry` (web3.py,
an independent client),
or through its web3 contract object where the client has no wrapper. Refusals are
asserted by the custom error's name and arguments; events are read back from the
transaction receipt, whose every log must be an event of the expected kind emitted
by the registry.

This file covers the single writes, the views, roles and lookups; batches and
checkpoint proofs are in ``test_batches_and_proofs.py``, signed calls in
``test_signed.py``. The helpers at the top are shared with those files.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_typing import HexStr
from eth_utils.crypto import keccak
from web3.logs import DISCARD

from ledger.chain.records import ZERO32
from ledger.errors import TransactionRevertedError
from ledger.hashing.merkle import CheckpointLeaf, checkpoint_root
from ledger.ids import Relation
from tests.chain.web3_registry import (
    ADMIN_ROLE,
    COMMITTER_ROLE,
    FinalRecord,
    Registry,
    RunStatus,
    TxResult,
    WeightsRecord,
)
from tests.conftest import Chain

pytestmark = pytest.mark.integration

ZERO_ADDRESS = "0x" + "00" * 20
MAX_UINT64 = 2**64 - 1

Parents = Sequence[tuple[bytes, Relation]]


# -- helpers (also used by test_signed.py and test_batches_and_proofs.py) ----------


def digest(n: int) -> bytes:
    """A distinct, non-zero 32-byte value for each ``n``."""
    return keccak(b"digest" + n.to_bytes(8, "big"))


def leaf(step: int, n: int) -> CheckpointLeaf:
    """A checkpoint whose three digests are distinct from each other and from other ``n``."""
    return CheckpointLeaf(step, digest(n), digest(n + 1_000_000), digest(n + 2_000_000))


def final(n: int, leaves: Sequence[CheckpointLeaf] = ()) -> FinalRecord:
    """A final record with distinct digests, committing to ``leaves``."""
    return FinalRecord(
        digest(n),
        digest(n + 1_000_000),
        digest(n + 2_000_000),
        checkpoint_root(leaves),
        len(leaves),
    )


@contextmanager
def expect_revert(name: str, *args: object) -> Iterator[pytest.ExceptionInfo[Any]]:
    """The block must be refused with custom error ``name(*args)``."""
    with pytest.raises(TransactionRevertedError) as info:
        yield info
    assert info.value.error_name == name, str(info.value)
    assert info.value.error_args == args, str(info.value)  # addresses come checksummed


def receipt_of(chain: Chain, tx: TxResult) -> Any:
    return chain.w3.eth.get_transaction_receipt(HexStr(tx.tx_hash))


def events_of(
    chain: Chain, tx: TxResult, name: str, registry: Registry | None = None
) -> list[dict[str, Any]]:
    """The arguments of every event of the transaction, all of which must be ``name``."""
    registry = registry or chain.registry
    receipt = receipt_of(chain, tx)
    assert receipt["status"] == 1
    assert all(log["address"] == registry.address for log in receipt["logs"])
    event = getattr(registry.contract.events, name)()
    decoded = event.process_receipt(receipt, errors=DISCARD)
    assert len(decoded) == len(receipt["logs"]), f"not every log is a {name} event"
    return [dict(d["args"]) for d in decoded]


def sole_event(
    chain: Chain, tx: TxResult, name: str, registry: Registry | None = None
) -> dict[str, Any]:
    """The arguments of the one event the transaction emitted, which must be ``name``."""
    events = events_of(chain, tx, name, registry)
    assert len(events) == 1, events
    return events[0]


def send_unchecked(chain: Chain, account: LocalAccount, fn: Any) -> Any:
    """Mine ``fn`` as ``account`` without estimating gas first; returns the receipt.

    The client refuses before sending anything the chain would revert, so this is how
    a test sees what the chain itself does with a refused transaction.
    """
    w3 = chain.w3
    tx = fn.build_transaction(
        {
            "from": account.address,
            "gas": 10_000_000,
            "nonce": w3.eth.get_transaction_count(account.address, "pending"),
            "chainId": w3.eth.chain_id,
        }
    )
    tx_hash = w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
    return w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.05)


def registry_logs_since(chain: Chain, block: int) -> list[Any]:
    """Every log the registry emitted after ``block``."""
    return list(chain.w3.eth.get_logs({"address": chain.registry.address, "fromBlock": block + 1}))


def parents_of(args: dict[str, Any]) -> list[tuple[bytes, int]]:
    return [(bytes(p["runId"]), int(p["relation"])) for p in args["parents"]]


def with_committer(chain: Chain, account: LocalAccount) -> Registry:
    """The registry signing as ``account``, after the admin granted it the committer role."""
    chain.registry.grant_committer(account.address)
    return chain.as_(account)


def started(registry: Registry, n: int, parents: Parents = ()) -> bytes:
    run_id, _ = registry.start_run(digest(n), parents)
    return run_id


def block_time(chain: Chain, tx: TxResult) -> int:
    return int(chain.w3.eth.get_block(tx.block_number)["timestamp"])


def commitment_of(record: FinalRecord) -> bytes:
    """``keccak256(abi.encode(record))``, computed here independently of the client."""
    types = ["bytes32", "bytes32", "bytes32", "bytes32", "uint64"]
    values = [
        record.weights_digest,
        record.tensor_root,
        record.metrics_digest,
        record.checkpoint_root,
        record.checkpoint_count,
    ]
    return keccak(abi_encode(types, values))


# -- version, constants, ids, reads of unknown things -----------------------------


def test_version_is_3_0_0(chain: Chain) -> None:
    assert chain.registry.version() == "3.0.0"
    assert chain.registry.contract.functions.version().call() == "3.0.0"
    assert chain.registry.contract.functions.VERSION().call() == "3.0.0"


def test_role_constants_and_the_deployers_roles(chain: Chain) -> None:
    functions = chain.registry.contract.functions
    assert bytes(functions.COMMITTER_ROLE().call()) == COMMITTER_ROLE == keccak(b"COMMITTER_ROLE")
    assert bytes(functions.DEFAULT_ADMIN_ROLE().call()) == ADMIN_ROLE
    assert bytes(functions.getRoleAdmin(COMMITTER_ROLE).call()) == ADMIN_ROLE
    assert functions.hasRole(ADMIN_ROLE, chain.admin.address).call() is True
    assert functions.hasRole(COMMITTER_ROLE, chain.admin.address).call() is True
    for account in (chain.alice, chain.bob):
        assert functions.hasRole(ADMIN_ROLE, account.address).call() is False
        assert functions.hasRole(COMMITTER_ROLE, account.address).call() is False
        assert not chain.registry.is_admin(account.address)
        assert not chain.registry.is_committer(account.address)
    assert chain.registry.is_admin(chain.admin.address)
    assert chain.registry.is_committer(chain.admin.address)


def test_run_id_is_keccak_of_abi_encoded_committer_and_manifest(chain: Chain) -> None:
    alice = with_committer(chain, chain.alice)
    for registry, account in ((chain.registry, chain.admin), (alice, chain.alice)):
        manifest = digest(1)
        expected = keccak(abi_encode(["address", "bytes32"], [account.address, manifest]))
        on_chain = chain.registry.contract.functions.computeRunId(account.address, manifest).call()
        assert bytes(on_chain) == expected
        assert Registry.run_id_for(account.address, manifest) == expected
        run_id, tx = registry.start_run(manifest)
        assert run_id == expected
        assert sole_event(chain, tx, "RunStarted")["runId"] == expected
        assert chain.registry.get_run(expected).committer == account.address


def test_compute_run_id_is_pure_and_needs_no_role(chain: Chain) -> None:
    fn = chain.registry.contract.functions.computeRunId(chain.bob.address, digest(7))
    expected = keccak(abi_encode(["address", "bytes32"], [chain.bob.address, digest(7)]))
    assert bytes(fn.call({"from": chain.bob.address})) == expected
    assert Registry.run_id_for(chain.bob.address.lower(), digest(7)) == expected
    assert not chain.registry.get_run(expected).exists


def test_get_run_of_an_unknown_id_is_empty(chain: Chain) -> None:
    run = chain.registry.get_run(digest(1))
    assert not run.exists
    assert run.status is RunStatus.NONE
    assert (run.committer, run.start_block, run.last_block, run.revoked) == (
        ZERO_ADDRESS,
        0,
        0,
        False,
    )
    assert (run.revoked_block, run.final_commitment) == (0, ZERO32)
    raw = chain.registry.contract.functions.getRun(digest(1)).call()
    assert tuple(raw) == (ZERO_ADDRESS, 0, False, 0, 0, 0, ZERO32)


def test_the_same_manifest_from_two_committers_gives_two_runs(chain: Chain) -> None:
    alice = with_committer(chain, chain.alice)
    admin_run, _ = chain.registry.start_run(digest(1))
    alice_run, _ = alice.start_run(digest(1))
    assert admin_run != alice_run
    for run_id, account in ((admin_run, chain.admin), (alice_run, chain.alice)):
        run = chain.registry.get_run(run_id)
        assert run.committer == account.address
        assert run.status is RunStatus.RUNNING


# -- startRun ---------------------------------------------------------------------


def test_start_run_stores_the_run_and_emits_run_started(chain: Chain) -> None:
    run_id, tx = chain.registry.start_run(digest(1))
    run = chain.registry.get_run(run_id)
    assert run.committer == chain.admin.address
    assert run.start_block == run.last_block == tx.block_number
    assert run.status is RunStatus.RUNNING
    assert (run.revoked, run.revoked_block) == (False, 0)
    assert run.final_commitment == ZERO32
    raw = chain.registry.contract.functions.getRun(run_id).call()
    assert tuple(raw) == (
        chain.admin.address,
        1,
        False,
        tx.block_number,
        tx.block_number,
        0,
        ZERO32,
    )
    assert sole_event(chain, tx, "RunStarted") == {
        "runId": run_id,
        "committer": chain.admin.address,
        "manifestDigest": digest(1),
        "parents": [],
        "previousChildBlocks": [],
    }


def test_start_run_returns_the_run_id(chain: Chain) -> None:
    fn = chain.registry.contract.functions.startRun(digest(1), [])
    assert bytes(fn.call({"from": chain.admin.address})) == Registry.run_id_for(
        chain.admin.address, digest(1)
    )


def test_start_run_emits_its_parents_with_their_relations(chain: Chain) -> None:
    first, second = started(chain.registry, 1), started(chain.registry, 2)
    parents = [(first, Relation.FINE_TUNE), (second, Relation.DISTILLATION)]
    child, tx = chain.registry.start_run(digest(3), parents)
    args = sole_event(chain, tx, "RunStarted")
    assert args["runId"] == child
    assert args["committer"] == chain.admin.address
    assert args["manifestDigest"] == digest(3)
    assert parents_of(args) == [(first, 1), (second, 2)]
    (logged,) = chain.registry.events("RunStarted", child)
    assert parents_of(logged) == [(first, 1), (second, 2)]
    assert (logged["transactionHash"], logged["blockNumber"]) == (tx.tx_hash, tx.block_number)


def test_start_run_accepts_every_relation_but_none(chain: Chain) -> None:
    relations = [r for r in Relation if r is not Relation.NONE]
    parents = [(started(chain.registry, 100 + int(r)), r) for r in relations]
    child, tx = chain.registry.start_run(digest(1), parents)
    assert parents_of(sole_event(chain, tx, "RunStarted")) == [(p, int(r)) for p, r in parents]
    assert chain.registry.get_run(child).status is RunStatus.RUNNING


def test_a_finalized_failed_or_revoked_run_can_be_a_parent(chain: Chain) -> None:
    done, failed, revoked = (started(chain.registry, n) for n in (1, 2, 3))
    chain.registry.finalize_run(done, final(11))
    chain.registry.mark_failed(failed, "diverged")
    chain.registry.revoke_run(revoked, "bad data")
    parents = [(done, Relation.RESUME), (failed, Relation.RESUME), (revoked, Relation.OTHER)]
    child, tx = chain.registry.start_run(digest(4), parents)
    assert parents_of(sole_event(chain, tx, "RunStarted")) == [(p, int(r)) for p, r in parents]
    assert chain.registry.get_run(child).status is RunStatus.RUNNING


def test_another_committers_run_can_be_a_parent(chain: Chain) -> None:
    parent = started(chain.registry, 1)
    alice = with_committer(chain, chain.alice)
    child, tx = alice.start_run(digest(2), [(parent, Relation.FINE_TUNE)])
    assert parents_of(sole_event(chain, tx, "RunStarted")) == [(parent, 1)]
    assert chain.registry.get_run(child).committer == chain.alice.address


def test_start_run_refuses_a_zero_manifest(chain: Chain) -> None:
    with expect_revert("RegistryZeroDigest"):
        chain.registry.start_run(ZERO32)
    assert not chain.registry.get_run(Registry.run_id_for(chain.admin.address, ZERO32)).exists


@pytest.mark.parametrize("status", [RunStatus.RUNNING, RunStatus.FINALIZED, RunStatus.FAILED])
def test_start_run_refuses_an_existing_run(chain: Chain, status: RunStatus) -> None:
    run_id, first = chain.registry.start_run(digest(1))
    if status is RunStatus.FINALIZED:
        chain.registry.finalize_run(run_id, final(2))
    elif status is RunStatus.FAILED:
        chain.registry.mark_failed(run_id, "oom")
    with expect_revert("RegistryRunExists", run_id):
        chain.registry.start_run(digest(1))
    run = chain.registry.get_run(run_id)
    assert (run.status, run.start_block) == (status, first.block_number)
    assert len(chain.registry.events("RunStarted", run_id)) == 1


def test_start_run_refuses_an_unknown_parent(chain: Chain) -> None:
    known = started(chain.registry, 1)
    with expect_revert("RegistryUnknownParent", digest(99)):
        chain.registry.start_run(
            digest(2), [(known, Relation.RESUME), (digest(99), Relation.RESUME)]
        )
    assert not chain.registry.get_run(Registry.run_id_for(chain.admin.address, digest(2))).exists


def test_a_run_cannot_be_its_own_parent(chain: Chain) -> None:
    own_id = Registry.run_id_for(chain.admin.address, digest(1))
    with expect_revert("RegistryUnknownParent", own_id):
        chain.registry.start_run(digest(1), [(own_id, Relation.RESUME)])
    assert not chain.registry.get_run(own_id).exists


def test_start_run_refuses_relation_none(chain: Chain) -> None:
    parent = started(chain.registry, 1)
    with expect_revert("RegistryInvalidRelation", parent):
        chain.registry.start_run(digest(2), [(parent, Relation.NONE)])
    assert not chain.registry.get_run(Registry.run_id_for(chain.admin.address, digest(2))).exists


def test_start_run_needs_the_committer_role(chain: Chain) -> None:
    with expect_revert("AccessControlUnauthorizedAccount", chain.bob.address, COMMITTER_ROLE):
        chain.as_(chain.bob).start_run(digest(1))
    assert not chain.registry.get_run(Registry.run_id_for(chain.bob.address, digest(1))).exists


# -- commitCheckpoint -------------------------------------------------------------


def test_commit_checkpoint_emits_every_field_and_moves_only_the_block_pointers(
    chain: Chain,
) -> None:
    run_id, start = chain.registry.start_run(digest(1))
    before = chain.registry.get_run(run_id)
    tx = chain.registry.commit_checkpoint(run_id, leaf(7, 10))
    assert sole_event(chain, tx, "CheckpointCommitted") == {
        "runId": run_id,
        "weightsDigest": digest(10),
        "tensorRoot": digest(1_000_010),
        "step": 7,
        "metricsDigest": digest(2_000_010),
        "previousRunBlock": start.block_number,
        "previousWeightsBlock": 0,
        "previousTensorBlock": 0,
    }
    assert chain.registry.get_run(run_id) == replace(before, last_block=tx.block_number)
    functions = chain.registry.contract.functions
    assert functions.latestWeightsBlock(digest(10)).call() == tx.block_number
    assert functions.latestTensorRootBlock(digest(1_000_010)).call() == tx.block_number
    assert functions.latestWeightsBlock(digest(2_000_010)).call() == 0  # metrics: no lookup
    (logged,) = chain.registry.events("CheckpointCommitted", run_id)
    assert (logged["transactionHash"], logged["blockNumber"]) == (tx.tx_hash, tx.block_number)


def test_commit_checkpoint_accepts_zero_tensor_root_and_metrics_and_any_step(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    for step in (0, MAX_UINT64):
        tx = chain.registry.commit_checkpoint(
            run_id, CheckpointLeaf(step, digest(2), ZERO32, ZERO32)
        )
        args = sole_event(chain, tx, "CheckpointCommitted")
        assert (args["step"], args["tensorRoot"], args["metricsDigest"]) == (step, ZERO32, ZERO32)


def test_a_resent_checkpoint_emits_again_and_is_listed_once(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    first = chain.registry.commit_checkpoint(run_id, leaf(1, 10))
    second = chain.registry.commit_checkpoint(run_id, leaf(1, 10))
    chain.registry.commit_checkpoint(run_id, leaf(2, 20))
    first_args = sole_event(chain, first, "CheckpointCommitted")
    # The same record, linked back to the first one (and to the run's previous event).
    assert sole_event(chain, second, "CheckpointCommitted") == {
        **first_args,
        "previousRunBlock": first.block_number,
        "previousWeightsBlock": first.block_number,
        "previousTensorBlock": first.block_number,
    }
    assert len(chain.registry.events("CheckpointCommitted", run_id)) == 3
    listed = chain.registry.checkpoints(run_id)
    assert [(r.step, r.weights_digest, r.tx_hash) for r in listed] == [
        (1, digest(10), first.tx_hash),
        (2, digest(20), listed[1].tx_hash),
    ]


def test_commit_checkpoint_refuses_zero_weights(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    with expect_revert("RegistryZeroDigest"):
        chain.registry.commit_checkpoint(run_id, CheckpointLeaf(1, ZERO32, digest(2), digest(3)))
    assert chain.registry.find_by_tensor_root(digest(2)) == []


def test_commit_checkpoint_refuses_an_unknown_run(chain: Chain) -> None:
    with expect_revert("RegistryUnknownRun", digest(1)):
        chain.registry.commit_checkpoint(digest(1), leaf(1, 2))
    assert chain.registry.find_by_weights(digest(2)) == []


def test_commit_checkpoint_needs_the_committer_role(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    with expect_revert("AccessControlUnauthorizedAccount", chain.bob.address, COMMITTER_ROLE):
        chain.as_(chain.bob).commit_checkpoint(run_id, leaf(1, 2))
    assert chain.registry.find_by_weights(digest(2)) == []


def test_only_the_runs_committer_may_checkpoint(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    alice = with_committer(chain, chain.alice)
    with expect_revert("RegistryNotRunCommitter", run_id, chain.alice.address):
        alice.commit_checkpoint(run_id, leaf(1, 2))
    assert chain.registry.find_by_weights(digest(2)) == []


# -- finalizeRun ------------------------------------------------------------------


def test_finalize_run_stores_the_commitment_and_emits_every_field(chain: Chain) -> None:
    run_id, start = chain.registry.start_run(digest(1))
    assert chain.registry.get_run(run_id).final_commitment == ZERO32
    leaves = [leaf(1, 10), leaf(2, 20)]
    chain.registry.commit_checkpoints([(run_id, c) for c in leaves])
    assert chain.registry.get_run(run_id).final_commitment == ZERO32
    record = final(30, leaves)
    tx = chain.registry.finalize_run(run_id, record)
    assert sole_event(chain, tx, "RunFinalized") == {
        "runId": run_id,
        "weightsDigest": digest(30),
        "tensorRoot": digest(1_000_030),
        "metricsDigest": digest(2_000_030),
        "checkpointRoot": checkpoint_root(leaves),
        "checkpointCount": 2,
        "previousRunBlock": tx.block_number - 1,
        "previousWeightsBlock": 0,
        "previousTensorBlock": 0,
    }
    run = chain.registry.get_run(run_id)
    assert run.status is RunStatus.FINALIZED
    assert run.final_commitment == record.commitment == commitment_of(record)
    assert (run.committer, run.start_block, run.last_block, run.revoked) == (
        chain.admin.address,
        start.block_number,
        tx.block_number,
        False,
    )
    raw = chain.registry.contract.functions.getRun(run_id).call()
    assert tuple(raw) == (
        chain.admin.address,
        2,
        False,
        start.block_number,
        tx.block_number,
        0,
        record.commitment,
    )


def test_finalize_with_zero_roots_and_no_checkpoints(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    record = FinalRecord(digest(2), ZERO32, ZERO32, ZERO32, 0)
    tx = chain.registry.finalize_run(run_id, record)
    args = sole_event(chain, tx, "RunFinalized")
    assert (args["tensorRoot"], args["metricsDigest"], args["checkpointRoot"]) == (
        ZERO32,
        ZERO32,
        ZERO32,
    )
    assert args["checkpointCount"] == 0
    assert chain.registry.get_run(run_id).final_commitment == commitment_of(record)
    assert chain.registry.is_final_record(run_id, record)


def test_finalize_run_refuses_zero_weights(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    with expect_revert("RegistryZeroDigest"):
        chain.registry.finalize_run(run_id, replace(final(2), weights_digest=ZERO32))
    run = chain.registry.get_run(run_id)
    assert (run.status, run.final_commitment) == (RunStatus.RUNNING, ZERO32)


def test_finalize_run_refuses_an_unknown_run(chain: Chain) -> None:
    with expect_revert("RegistryUnknownRun", digest(1)):
        chain.registry.finalize_run(digest(1), final(2))
    assert chain.registry.find_by_weights(digest(2)) == []


def test_finalize_run_needs_the_committer_role(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    with expect_revert("AccessControlUnauthorizedAccount", chain.bob.address, COMMITTER_ROLE):
        chain.as_(chain.bob).finalize_run(run_id, final(2))
    assert chain.registry.get_run(run_id).status is RunStatus.RUNNING


def test_only_the_runs_committer_may_finalize(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    alice = with_committer(chain, chain.alice)
    with expect_revert("RegistryNotRunCommitter", run_id, chain.alice.address):
        alice.finalize_run(run_id, final(2))
    run = chain.registry.get_run(run_id)
    assert (run.status, run.final_commitment) == (RunStatus.RUNNING, ZERO32)


def test_a_finalized_run_cannot_be_extended_or_ended_again(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    record = final(2)
    chain.registry.finalize_run(run_id, record)
    with expect_revert("RegistryRunNotRunning", run_id, RunStatus.FINALIZED):
        chain.registry.commit_checkpoint(run_id, leaf(9, 3))
    with expect_revert("RegistryRunNotRunning", run_id, RunStatus.FINALIZED):
        chain.registry.finalize_run(run_id, final(4))
    with expect_revert("RegistryRunNotRunning", run_id, RunStatus.FINALIZED):
        chain.registry.mark_failed(run_id, "too late")
    run = chain.registry.get_run(run_id)
    assert (run.status, run.final_commitment) == (RunStatus.FINALIZED, record.commitment)
    assert chain.registry.find_by_weights(digest(3)) == []
    assert chain.registry.find_by_weights(digest(4)) == []


# -- isFinalRecord ----------------------------------------------------------------


def test_is_final_record_is_true_only_for_the_exact_record(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    record = final(2, [leaf(1, 3), leaf(2, 4)])
    assert not chain.registry.is_final_record(run_id, record)  # still running
    chain.registry.finalize_run(run_id, record)
    assert chain.registry.is_final_record(run_id, record)
    assert chain.registry.contract.functions.isFinalRecord(run_id, record.as_tuple()).call()
    changed = [
        replace(record, weights_digest=digest(90)),
        replace(record, tensor_root=digest(91)),
        replace(record, tensor_root=ZERO32),
        replace(record, metrics_digest=digest(92)),
        replace(record, checkpoint_root=digest(93)),
        replace(record, checkpoint_count=3),
        replace(record, checkpoint_count=0),
    ]
    for other in changed:
        assert not chain.registry.is_final_record(run_id, other), other


def test_is_final_record_is_false_for_unknown_failed_and_other_runs(chain: Chain) -> None:
    record = final(2)
    assert not chain.registry.is_final_record(digest(1), record)
    failed, other = started(chain.registry, 1), started(chain.registry, 3)
    chain.registry.mark_failed(failed, "oom")
    assert not chain.registry.is_final_record(failed, record)
    chain.registry.finalize_run(other, record)
    assert chain.registry.is_final_record(other, record)
    assert not chain.registry.is_final_record(failed, record)
    assert not chain.registry.is_final_record(digest(1), record)


# -- markFailed -------------------------------------------------------------------


def test_mark_failed_sets_failed_and_emits_the_reason(chain: Chain) -> None:
    run_id, start = chain.registry.start_run(digest(1))
    tx = chain.registry.mark_failed(run_id, "loss is NaN at step 40")
    assert sole_event(chain, tx, "RunFailed") == {
        "runId": run_id,
        "reason": "loss is NaN at step 40",
        "previousRunBlock": start.block_number,
    }
    run = chain.registry.get_run(run_id)
    assert (run.status, run.revoked, run.final_commitment) == (RunStatus.FAILED, False, ZERO32)
    assert (run.start_block, run.last_block) == (start.block_number, tx.block_number)
    (logged,) = chain.registry.events("RunFailed", run_id)
    assert logged["reason"] == "loss is NaN at step 40"


def test_a_failed_run_cannot_be_extended_or_ended_again(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    chain.registry.mark_failed(run_id, "")
    with expect_revert("RegistryRunNotRunning", run_id, RunStatus.FAILED):
        chain.registry.commit_checkpoint(run_id, leaf(1, 2))
    with expect_revert("RegistryRunNotRunning", run_id, RunStatus.FAILED):
        chain.registry.finalize_run(run_id, final(3))
    with expect_revert("RegistryRunNotRunning", run_id, RunStatus.FAILED):
        chain.registry.mark_failed(run_id, "again")
    run = chain.registry.get_run(run_id)
    assert (run.status, run.final_commitment) == (RunStatus.FAILED, ZERO32)
    assert chain.registry.find_by_weights(digest(2)) == []
    assert chain.registry.find_by_weights(digest(3)) == []
    assert len(chain.registry.events("RunFailed", run_id)) == 1


def test_mark_failed_refuses_an_unknown_run(chain: Chain) -> None:
    with expect_revert("RegistryUnknownRun", digest(1)):
        chain.registry.mark_failed(digest(1), "no such run")


def test_only_the_runs_committer_may_mark_it_failed(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    alice = with_committer(chain, chain.alice)
    with expect_revert("RegistryNotRunCommitter", run_id, chain.alice.address):
        alice.mark_failed(run_id, "not mine")
    # markFailed has no role check of its own: an account without a role meets the
    # run-committer check.
    with expect_revert("RegistryNotRunCommitter", run_id, chain.bob.address):
        chain.as_(chain.bob).mark_failed(run_id, "not mine either")
    assert chain.registry.get_run(run_id).status is RunStatus.RUNNING


# -- revokeRun --------------------------------------------------------------------


@pytest.mark.parametrize("status", [RunStatus.RUNNING, RunStatus.FINALIZED, RunStatus.FAILED])
def test_revoke_sets_revoked_and_keeps_everything_else(chain: Chain, status: RunStatus) -> None:
    run_id = started(chain.registry, 1)
    if status is RunStatus.FINALIZED:
        chain.registry.finalize_run(run_id, final(2))
    elif status is RunStatus.FAILED:
        chain.registry.mark_failed(run_id, "oom")
    before = chain.registry.get_run(run_id)
    tx = chain.registry.revoke_run(run_id, "training data was poisoned")
    assert sole_event(chain, tx, "RunRevoked") == {
        "runId": run_id,
        "revoker": chain.admin.address,
        "reason": "training data was poisoned",
    }
    after = chain.registry.get_run(run_id)
    assert before.status is status
    assert (before.revoked, after.revoked) == (False, True)
    # The revocation's block is kept apart: the latest run event stays where it was.
    assert after == replace(before, revoked=True, revoked_block=tx.block_number)
    assert chain.registry.contract.functions.revokedRunCount().call() == 1
    with expect_revert("RegistryRunRevoked", run_id):
        chain.registry.revoke_run(run_id, "twice")
    assert len(chain.registry.events("RunRevoked", run_id)) == 1


def test_revoke_refuses_an_unknown_run(chain: Chain) -> None:
    with expect_revert("RegistryUnknownRun", digest(1)):
        chain.registry.revoke_run(digest(1), "no such run")
    # Checked before the caller's right to revoke.
    with expect_revert("RegistryUnknownRun", digest(1)):
        chain.as_(chain.bob).revoke_run(digest(1), "no such run")


def test_the_runs_committer_may_revoke_it(chain: Chain) -> None:
    alice = with_committer(chain, chain.alice)
    run_id = started(alice, 1)
    tx = alice.revoke_run(run_id, "mine")
    assert sole_event(chain, tx, "RunRevoked") == {
        "runId": run_id,
        "revoker": chain.alice.address,
        "reason": "mine",
    }
    assert chain.registry.get_run(run_id).revoked is True
    with expect_revert("RegistryRunRevoked", run_id):
        chain.registry.revoke_run(run_id, "the admin, after the committer")


def test_an_admin_may_revoke_another_committers_run(chain: Chain) -> None:
    alice = with_committer(chain, chain.alice)
    run_id = started(alice, 1)
    tx = chain.registry.revoke_run(run_id, "policy")
    assert sole_event(chain, tx, "RunRevoked") == {
        "runId": run_id,
        "revoker": chain.admin.address,
        "reason": "policy",
    }
    run = chain.registry.get_run(run_id)
    assert (run.revoked, run.committer) == (True, chain.alice.address)


def test_others_may_not_revoke_a_run(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    bob = with_committer(chain, chain.bob)
    with expect_revert("RegistryNotAllowedToRevoke", run_id, chain.bob.address):
        bob.revoke_run(run_id, "another committer")
    with expect_revert("RegistryNotAllowedToRevoke", run_id, chain.alice.address):
        chain.as_(chain.alice).revoke_run(run_id, "no role at all")
    assert chain.registry.get_run(run_id).revoked is False
    assert chain.registry.events("RunRevoked", run_id) == []


def test_a_revoked_run_can_still_be_extended_and_finalized(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    chain.registry.revoke_run(run_id, "early")
    chain.registry.commit_checkpoint(run_id, leaf(1, 2))
    chain.registry.finalize_run(run_id, final(3, [leaf(1, 2)]))
    run = chain.registry.get_run(run_id)
    assert (run.status, run.revoked) == (RunStatus.FINALIZED, True)


# -- roles ------------------------------------------------------------------------


def test_admin_grants_and_revokes_the_committer_role(chain: Chain) -> None:
    tx = chain.registry.grant_committer(chain.alice.address)
    assert sole_event(chain, tx, "RoleGranted") == {
        "role": COMMITTER_ROLE,
        "account": chain.alice.address,
        "sender": chain.admin.address,
    }
    assert chain.registry.is_committer(chain.alice.address)
    assert not chain.registry.is_admin(chain.alice.address)
    alice = chain.as_(chain.alice)
    run_id, _ = alice.start_run(digest(1))
    alice.commit_checkpoint(run_id, leaf(1, 2))

    tx = chain.registry.revoke_committer(chain.alice.address)
    assert sole_event(chain, tx, "RoleRevoked") == {
        "role": COMMITTER_ROLE,
        "account": chain.alice.address,
        "sender": chain.admin.address,
    }
    assert not chain.registry.is_committer(chain.alice.address)
    unauthorized = ("AccessControlUnauthorizedAccount", chain.alice.address, COMMITTER_ROLE)
    with expect_revert(*unauthorized):
        alice.start_run(digest(3))
    with expect_revert(*unauthorized):
        alice.commit_checkpoint(run_id, leaf(2, 4))
    with expect_revert(*unauthorized):
        alice.finalize_run(run_id, final(5, [leaf(1, 2)]))
    run = chain.registry.get_run(run_id)
    assert (run.status, run.revoked) == (RunStatus.RUNNING, False)
    assert chain.registry.find_by_weights(digest(4)) == []


def test_grant_role_and_revoke_role_through_the_raw_functions(chain: Chain) -> None:
    functions = chain.registry.contract.functions
    assert functions.hasRole(COMMITTER_ROLE, chain.bob.address).call() is False
    raw_grant = functions.grantRole(COMMITTER_ROLE, chain.bob.address)
    granted = send_unchecked(chain, chain.admin, raw_grant)
    assert granted["status"] == 1
    assert functions.hasRole(COMMITTER_ROLE, chain.bob.address).call() is True
    started(chain.as_(chain.bob), 1)
    # The admin role is granted the same way and lets its holder grant roles.
    send_unchecked(chain, chain.admin, functions.grantRole(ADMIN_ROLE, chain.bob.address))
    assert chain.as_(chain.bob).is_admin(chain.bob.address)
    chain.as_(chain.bob).grant_committer(chain.alice.address)
    assert chain.registry.is_committer(chain.alice.address)
    revoked = send_unchecked(
        chain, chain.admin, functions.revokeRole(COMMITTER_ROLE, chain.bob.address)
    )
    assert revoked["status"] == 1
    assert functions.hasRole(COMMITTER_ROLE, chain.bob.address).call() is False
    with expect_revert("AccessControlUnauthorizedAccount", chain.bob.address, COMMITTER_ROLE):
        chain.as_(chain.bob).start_run(digest(2))


def test_a_committer_may_renounce_only_its_own_role(chain: Chain) -> None:
    with_committer(chain, chain.alice)
    functions = chain.registry.contract.functions
    # renounceRole asks the caller to confirm its own address.
    refused = send_unchecked(
        chain, chain.alice, functions.renounceRole(COMMITTER_ROLE, chain.admin.address)
    )
    assert (refused["status"], refused["logs"]) == (0, [])
    assert chain.registry.is_committer(chain.admin.address)
    renounced = send_unchecked(
        chain, chain.alice, functions.renounceRole(COMMITTER_ROLE, chain.alice.address)
    )
    assert renounced["status"] == 1
    assert not chain.registry.is_committer(chain.alice.address)
    with expect_revert("AccessControlUnauthorizedAccount", chain.alice.address, COMMITTER_ROLE):
        chain.as_(chain.alice).start_run(digest(1))


def test_supports_the_erc165_and_access_control_interfaces(chain: Chain) -> None:
    supports = chain.registry.contract.functions.supportsInterface
    assert supports(bytes.fromhex("01ffc9a7")).call() is True  # IERC165
    assert supports(bytes.fromhex("7965db0b")).call() is True  # IAccessControl
    assert supports(bytes.fromhex("ffffffff")).call() is False


def test_a_committer_without_the_role_may_still_end_or_revoke_its_run(chain: Chain) -> None:
    # markFailed and revokeRun check only the run's committer, not the committer role.
    alice = with_committer(chain, chain.alice)
    failing, revoking = started(alice, 1), started(alice, 2)
    chain.registry.revoke_committer(chain.alice.address)
    alice.mark_failed(failing, "winding down")
    alice.revoke_run(revoking, "winding down")
    assert chain.registry.get_run(failing).status is RunStatus.FAILED
    assert chain.registry.get_run(revoking).revoked is True


def test_the_role_granted_again_restores_the_committer(chain: Chain) -> None:
    alice = with_committer(chain, chain.alice)
    run_id = started(alice, 1)
    chain.registry.revoke_committer(chain.alice.address)
    chain.registry.grant_committer(chain.alice.address)
    tx = alice.commit_checkpoint(run_id, leaf(1, 2))
    assert sole_event(chain, tx, "CheckpointCommitted")["runId"] == run_id


def test_only_an_admin_may_grant_or_revoke_roles(chain: Chain) -> None:
    alice = with_committer(chain, chain.alice)  # a committer, but not an admin
    bob = chain.as_(chain.bob)
    unauthorized = ("AccessControlUnauthorizedAccount", chain.alice.address, ADMIN_ROLE)
    with expect_revert(*unauthorized):
        alice.grant_committer(chain.bob.address)
    with expect_revert(*unauthorized):
        alice.revoke_committer(chain.admin.address)
    with expect_revert("AccessControlUnauthorizedAccount", chain.bob.address, ADMIN_ROLE):
        bob.grant_committer(chain.bob.address)
    assert not chain.registry.is_committer(chain.bob.address)
    assert chain.registry.is_committer(chain.admin.address)


# -- lookups by weights digest and tensor root --------------------------------------


def test_find_by_weights_and_tensor_root_find_a_checkpoint(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    tx = chain.registry.commit_checkpoint(run_id, leaf(5, 10))
    expected = WeightsRecord(
        run_id=run_id,
        is_final=False,
        step=5,
        weights_digest=digest(10),
        tensor_root=digest(1_000_010),
        metrics_digest=digest(2_000_010),
        block_number=tx.block_number,
        tx_hash=tx.tx_hash,
        final=None,
    )
    assert chain.registry.find_by_weights(digest(10)) == [expected]
    assert chain.registry.find_by_tensor_root(digest(1_000_010)) == [expected]


def test_find_by_weights_and_tensor_root_find_final_weights(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    record = final(10)
    tx = chain.registry.finalize_run(run_id, record)
    expected = WeightsRecord(
        run_id=run_id,
        is_final=True,
        step=None,
        weights_digest=digest(10),
        tensor_root=digest(1_000_010),
        metrics_digest=digest(2_000_010),
        block_number=tx.block_number,
        tx_hash=tx.tx_hash,
        final=record,
    )
    assert chain.registry.find_by_weights(digest(10)) == [expected]
    assert chain.registry.find_by_tensor_root(digest(1_000_010)) == [expected]
    assert chain.registry.final_record(run_id) == expected
    found = chain.registry.find_by_weights(digest(10))[0].final
    assert found is not None
    assert chain.registry.is_final_record(run_id, found)


def test_lookups_of_unknown_digests_are_empty(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    chain.registry.commit_checkpoint(run_id, leaf(1, 10))
    chain.registry.finalize_run(run_id, final(20, [leaf(1, 10)]))
    for unknown in (digest(99), digest(1), digest(2_000_010), digest(2_000_020), run_id):
        assert chain.registry.find_by_weights(unknown) == []
        assert chain.registry.find_by_tensor_root(unknown) == []
    assert chain.registry.find_by_weights(ZERO32) == []
    assert chain.registry.final_record(started(chain.registry, 2)) is None


def test_find_by_tensor_root_of_zero_finds_nothing(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    chain.registry.commit_checkpoint(run_id, CheckpointLeaf(1, digest(2), ZERO32, ZERO32))
    chain.registry.finalize_run(run_id, FinalRecord(digest(3), ZERO32, ZERO32, ZERO32, 0))
    assert chain.registry.find_by_tensor_root(ZERO32) == []


def test_a_digest_recorded_by_two_runs_gives_both_records_oldest_first(chain: Chain) -> None:
    alice = with_committer(chain, chain.alice)
    first, second, third = started(chain.registry, 1), started(alice, 2), started(chain.registry, 3)
    shared = CheckpointLeaf(4, digest(10), digest(11), digest(12))
    a = chain.registry.commit_checkpoint(first, shared)
    b = alice.commit_checkpoint(second, replace(shared, step=9))
    c = chain.registry.finalize_run(third, FinalRecord(digest(10), digest(11), ZERO32, ZERO32, 0))
    for found in (
        chain.registry.find_by_weights(digest(10)),
        chain.registry.find_by_tensor_root(digest(11)),
    ):
        assert [(r.run_id, r.is_final, r.step, r.tx_hash) for r in found] == [
            (first, False, 4, a.tx_hash),
            (second, False, 9, b.tx_hash),
            (third, True, None, c.tx_hash),
        ]
        assert [r.block_number for r in found] == sorted(r.block_number for r in found)


def test_final_weights_equal_to_an_own_checkpoint_give_two_records(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    last = leaf(4, 10)
    checkpoint = chain.registry.commit_checkpoint(run_id, last)
    record = FinalRecord(digest(10), digest(1_000_010), ZERO32, checkpoint_root([last]), 1)
    finalized = chain.registry.finalize_run(run_id, record)
    found = chain.registry.find_by_weights(digest(10))
    assert [(r.is_final, r.step, r.tx_hash) for r in found] == [
        (False, 4, checkpoint.tx_hash),
        (True, None, finalized.tx_hash),
    ]
    assert chain.registry.find_by_tensor_root(digest(1_000_010)) == found


def test_a_tensor_root_is_not_taken_for_a_weights_digest(chain: Chain) -> None:
    # digest(50) is the weights of run one's checkpoint and the tensor root of run two's.
    one, two = started(chain.registry, 1), started(chain.registry, 2)
    chain.registry.commit_checkpoint(one, CheckpointLeaf(1, digest(50), digest(51), ZERO32))
    chain.registry.commit_checkpoint(two, CheckpointLeaf(2, digest(52), digest(50), ZERO32))
    # And the same for final weights: digest(60) is weights of one, tensor root of two.
    chain.registry.finalize_run(one, FinalRecord(digest(60), digest(61), ZERO32, ZERO32, 0))
    chain.registry.finalize_run(two, FinalRecord(digest(62), digest(60), ZERO32, ZERO32, 0))
    assert [(r.run_id, r.step) for r in chain.registry.find_by_weights(digest(50))] == [(one, 1)]
    assert [(r.run_id, r.step) for r in chain.registry.find_by_tensor_root(digest(50))] == [
        (two, 2)
    ]
    assert [(r.run_id, r.is_final) for r in chain.registry.find_by_weights(digest(60))] == [
        (one, True)
    ]
    assert [(r.run_id, r.is_final) for r in chain.registry.find_by_tensor_root(digest(60))] == [
        (two, True)
    ]
    assert chain.registry.find_by_weights(digest(51)) == []
    assert chain.registry.find_by_tensor_root(digest(52)) == []


def test_lookups_see_only_their_own_registry(chain: Chain) -> None:
    other, _ = Registry.deploy(chain.w3, chain.admin)
    mine = started(chain.registry, 1)
    theirs, _ = other.start_run(digest(1))
    chain.registry.commit_checkpoint(mine, leaf(1, 10))
    other.commit_checkpoint(theirs, leaf(2, 10))
    assert [(r.run_id, r.step) for r in chain.registry.find_by_weights(digest(10))] == [(mine, 1)]
    assert [(r.run_id, r.step) for r in other.find_by_weights(digest(10))] == [(theirs, 2)]
    # Same committer and manifest: the same run id in both registries, kept apart.
    assert mine == theirs
    assert [c.step for c in chain.registry.checkpoints(mine)] == [1]


# -- a whole life ---------------------------------------------------------------


def test_events_of_one_run_in_order_and_not_of_others(chain: Chain) -> None:
    other = started(chain.registry, 1)
    run_id, start = chain.registry.start_run(digest(2), [(other, Relation.SWEEP_TRIAL)])
    first = chain.registry.commit_checkpoint(run_id, leaf(1, 3))
    second = chain.registry.commit_checkpoint(run_id, leaf(2, 6))
    chain.registry.commit_checkpoint(other, leaf(1, 7))
    record = final(8, [leaf(1, 3), leaf(2, 6)])
    finalized = chain.registry.finalize_run(run_id, record)
    revoke = chain.registry.revoke_run(run_id, "done with it")

    (started_event,) = chain.registry.events("RunStarted", run_id)
    assert started_event["transactionHash"] == start.tx_hash
    assert parents_of(started_event) == [(other, int(Relation.SWEEP_TRIAL))]
    checkpoints = chain.registry.events("CheckpointCommitted", run_id)
    assert [(e["step"], e["weightsDigest"], e["transactionHash"]) for e in checkpoints] == [
        (1, digest(3), first.tx_hash),
        (2, digest(6), second.tx_hash),
    ]
    (finalized_event,) = chain.registry.events("RunFinalized", run_id)
    assert (finalized_event["checkpointRoot"], finalized_event["checkpointCount"]) == (
        record.checkpoint_root,
        2,
    )
    assert finalized_event["transactionHash"] == finalized.tx_hash
    (revoked,) = chain.registry.events("RunRevoked", run_id)
    assert (revoked["revoker"], revoked["reason"]) == (chain.admin.address, "done with it")
    assert revoked["transactionHash"] == revoke.tx_hash
    assert chain.registry.events("RunFailed", run_id) == []
    assert len(chain.registry.events("CheckpointCommitted", other)) == 1


# -- gas --------------------------------------------------------------------------


def test_start_and_finalize_of_one_run_cost_at_most_160k_gas(chain: Chain) -> None:
    """Registry 2's budget was 120k; registry 3's lookups by weights digest and tensor
    root add two storage slots (44,200 gas) to finalization."""
    run_id, start = chain.registry.start_run(digest(1))
    leaves = [leaf(step, 10 + step) for step in (1, 2, 3)]
    checkpoint = chain.registry.commit_checkpoint(run_id, leaves[0])
    chain.registry.commit_checkpoints([(run_id, c) for c in leaves[1:]])
    finalized = chain.registry.finalize_run(run_id, final(20, leaves))
    for tx in (start, checkpoint, finalized):
        assert int(receipt_of(chain, tx)["gasUsed"]) == tx.gas_used
    total = start.gas_used + finalized.gas_used
    print(
        f"\ngas: startRun (no parents) {start.gas_used} + finalizeRun {finalized.gas_used} "
        f"= {total}; commitCheckpoint {checkpoint.gas_used}"
    )
    assert total <= 160_000
