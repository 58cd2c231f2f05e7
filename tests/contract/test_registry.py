"""Contract tests of ProvenanceRegistry against the real Anvil of the test session.

Every test uses the ``chain`` fixture (state reverted after each test) and drives
the deployed contract through the typed client :class:`ledger.chain.registry.Registry`,
or through its web3 contract object where the client has no wrapper. Refusals are
asserted by the custom error's name and arguments; events are read back from the
transaction receipt, which must hold exactly one log, emitted by the registry.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_typing import HexStr
from eth_utils.crypto import keccak
from web3.logs import DISCARD

from ledger.chain.registry import (
    ADMIN_ROLE,
    COMMITTER_ROLE,
    ZERO32,
    Registry,
    Relation,
    RunStatus,
    TxResult,
    WeightsRecord,
)
from ledger.errors import TransactionRevertedError
from tests.conftest import Chain

pytestmark = pytest.mark.integration

ZERO_ADDRESS = "0x" + "00" * 20
MAX_UINT64 = 2**64 - 1

Parents = Sequence[tuple[bytes, Relation]]


# -- helpers --------------------------------------------------------------------


def digest(n: int) -> bytes:
    """A distinct, non-zero 32-byte value for each ``n``."""
    return keccak(b"digest" + n.to_bytes(8, "big"))


@contextmanager
def expect_revert(name: str, *args: object) -> Iterator[pytest.ExceptionInfo[Any]]:
    """The block must be refused with custom error ``name(*args)``."""
    with pytest.raises(TransactionRevertedError) as info:
        yield info
    assert info.value.error_name == name, str(info.value)
    assert info.value.error_args == args, str(info.value)  # addresses come checksummed


def receipt_of(chain: Chain, tx: TxResult) -> Any:
    return chain.w3.eth.get_transaction_receipt(HexStr(tx.tx_hash))


def sole_event(chain: Chain, tx: TxResult, name: str) -> dict[str, Any]:
    """The arguments of the one event the transaction emitted, which must be ``name``."""
    receipt = receipt_of(chain, tx)
    assert receipt["status"] == 1
    assert len(receipt["logs"]) == 1, receipt["logs"]
    assert receipt["logs"][0]["address"] == chain.registry.address
    event = getattr(chain.registry.contract.events, name)()
    decoded = event.process_receipt(receipt, errors=DISCARD)
    assert len(decoded) == 1, f"the log is not a {name} event"
    return dict(decoded[0]["args"])


def parents_of(args: dict[str, Any]) -> list[tuple[bytes, int]]:
    return [(bytes(p["runId"]), int(p["relation"])) for p in args["parents"]]


def with_committer(chain: Chain, account: Any) -> Registry:
    """The registry signing as ``account``, after the admin granted it the committer role."""
    chain.registry.grant_committer(account.address)
    return chain.as_(account)


def started(registry: Registry, n: int, parents: Parents = ()) -> bytes:
    run_id, _ = registry.start_run(digest(n), parents)
    return run_id


def block_time(chain: Chain, tx: TxResult) -> int:
    return int(chain.w3.eth.get_block(tx.block_number)["timestamp"])


# -- version, ids, reads of unknown things --------------------------------------


def test_version_is_1_0_0(chain: Chain) -> None:
    assert chain.registry.version() == "1.0.0"
    assert chain.registry.contract.functions.VERSION().call() == "1.0.0"


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


def test_same_manifest_from_two_committers_gives_two_runs(chain: Chain) -> None:
    alice = with_committer(chain, chain.alice)
    admin_run, _ = chain.registry.start_run(digest(1))
    alice_run, _ = alice.start_run(digest(1))
    assert admin_run != alice_run
    for run_id, account in ((admin_run, chain.admin), (alice_run, chain.alice)):
        run = chain.registry.get_run(run_id)
        assert run.committer == account.address
        assert run.status is RunStatus.RUNNING
        assert run.manifest_digest == digest(1)


def test_get_run_of_unknown_id_is_empty(chain: Chain) -> None:
    run = chain.registry.get_run(digest(1))
    assert not run.exists
    assert run.status is RunStatus.NONE
    assert run.committer == ZERO_ADDRESS
    assert (run.started_at, run.revoked) == (0, False)
    assert run.manifest_digest == ZERO32
    assert run.checkpoint_root == ZERO32


def test_find_unknown_digests_gives_zero_record(chain: Chain) -> None:
    functions = chain.registry.contract.functions
    for fn in (functions.findByWeights, functions.findByTensorRoot):
        run_id, is_final, step = fn(digest(1)).call()
        assert (bytes(run_id), is_final, step) == (ZERO32, False, 0)
    assert chain.registry.find_by_weights(digest(1)) is None
    assert chain.registry.find_by_tensor_root(digest(1)) is None
    assert chain.registry.find_by_weights(ZERO32) is None
    assert chain.registry.find_by_tensor_root(ZERO32) is None


# -- startRun ---------------------------------------------------------------------


def test_start_run_stores_the_run_and_emits_run_started(chain: Chain) -> None:
    run_id, tx = chain.registry.start_run(digest(1))
    run = chain.registry.get_run(run_id)
    assert run.committer == chain.admin.address
    assert run.started_at == block_time(chain, tx)
    assert run.status is RunStatus.RUNNING
    assert run.revoked is False
    assert run.manifest_digest == digest(1)
    assert run.checkpoint_root == ZERO32
    raw = chain.registry.contract.functions.getRun(run_id).call()
    assert tuple(raw) == (chain.admin.address, run.started_at, 1, False, digest(1), ZERO32)
    args = sole_event(chain, tx, "RunStarted")
    assert args["runId"] == run_id
    assert args["committer"] == chain.admin.address
    assert args["manifestDigest"] == digest(1)
    assert args["parents"] == []


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
    assert logged["runId"] == child
    assert parents_of(logged) == [(first, 1), (second, 2)]
    assert logged["transactionHash"] == tx.tx_hash
    assert logged["blockNumber"] == tx.block_number


def test_start_run_accepts_every_relation_but_none(chain: Chain) -> None:
    relations = [r for r in Relation if r is not Relation.NONE]
    parents = [(started(chain.registry, 100 + int(r)), r) for r in relations]
    child, tx = chain.registry.start_run(digest(1), parents)
    assert parents_of(sole_event(chain, tx, "RunStarted")) == [(p, int(r)) for p, r in parents]
    assert chain.registry.get_run(child).status is RunStatus.RUNNING


def test_a_finalized_failed_or_revoked_run_can_be_a_parent(chain: Chain) -> None:
    done, failed, revoked = (started(chain.registry, n) for n in (1, 2, 3))
    chain.registry.finalize_run(done, digest(11), ZERO32, ZERO32, ZERO32, 0)
    chain.registry.mark_failed(failed, "diverged")
    chain.registry.revoke_run(revoked, "bad data")
    parents = [(done, Relation.RESUME), (failed, Relation.RESUME), (revoked, Relation.OTHER)]
    child, tx = chain.registry.start_run(digest(4), parents)
    assert parents_of(sole_event(chain, tx, "RunStarted")) == [(done, 5), (failed, 5), (revoked, 7)]
    assert chain.registry.get_run(child).exists


def test_start_run_refuses_a_zero_manifest(chain: Chain) -> None:
    with expect_revert("RegistryZeroDigest"):
        chain.registry.start_run(ZERO32)
    assert not chain.registry.get_run(Registry.run_id_for(chain.admin.address, ZERO32)).exists


def test_start_run_refuses_an_existing_run(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    with expect_revert("RegistryRunExists", run_id):
        chain.registry.start_run(digest(1))
    chain.registry.finalize_run(run_id, digest(2), ZERO32, ZERO32, ZERO32, 0)
    with expect_revert("RegistryRunExists", run_id):
        chain.registry.start_run(digest(1))
    assert chain.registry.get_run(run_id).status is RunStatus.FINALIZED


def test_start_run_refuses_an_unknown_parent(chain: Chain) -> None:
    known = started(chain.registry, 1)
    with expect_revert("RegistryUnknownParent", digest(99)):
        chain.registry.start_run(
            digest(2), [(known, Relation.FINE_TUNE), (digest(99), Relation.FINE_TUNE)]
        )
    assert not chain.registry.get_run(Registry.run_id_for(chain.admin.address, digest(2))).exists


def test_start_run_refuses_itself_as_parent(chain: Chain) -> None:
    own_id = Registry.run_id_for(chain.admin.address, digest(1))
    with expect_revert("RegistryUnknownParent", own_id):
        chain.registry.start_run(digest(1), [(own_id, Relation.RESUME)])
    assert not chain.registry.get_run(own_id).exists


def test_start_run_refuses_relation_none(chain: Chain) -> None:
    parent = started(chain.registry, 1)
    with expect_revert("RegistryInvalidRelation", parent):
        chain.registry.start_run(digest(2), [(parent, Relation.NONE)])
    assert not chain.registry.get_run(Registry.run_id_for(chain.admin.address, digest(2))).exists


@pytest.mark.parametrize("relation", [len(Relation), 99, 255])
def test_start_run_refuses_an_out_of_range_relation(chain: Chain, relation: int) -> None:
    parent = started(chain.registry, 1)
    # The enum check of the ABI decoder reverts with empty data: no custom error to name.
    with pytest.raises(TransactionRevertedError) as info:
        chain.registry.start_run(digest(2), [(parent, relation)])  # type: ignore[list-item]
    assert info.value.error_name == "Unknown"
    assert info.value.error_args == ()
    assert not chain.registry.get_run(Registry.run_id_for(chain.admin.address, digest(2))).exists


def test_start_run_needs_the_committer_role(chain: Chain) -> None:
    with expect_revert("AccessControlUnauthorizedAccount", chain.alice.address, COMMITTER_ROLE):
        chain.as_(chain.alice).start_run(digest(1))
    assert not chain.registry.get_run(Registry.run_id_for(chain.alice.address, digest(1))).exists


# -- commitCheckpoint ------------------------------------------------------------


def test_commit_checkpoint_records_weights_and_tensor_root(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    tx = chain.registry.commit_checkpoint(run_id, 7, digest(2), digest(3), digest(4))
    args = sole_event(chain, tx, "CheckpointCommitted")
    assert args == {
        "runId": run_id,
        "step": 7,
        "weightsDigest": digest(2),
        "tensorRoot": digest(3),
        "metricsDigest": digest(4),
    }
    assert chain.registry.find_by_weights(digest(2)) == WeightsRecord(run_id, False, 7)
    assert chain.registry.find_by_tensor_root(digest(3)) == WeightsRecord(run_id, False, 7)
    raw = chain.registry.contract.functions.findByWeights(digest(2)).call()
    assert (bytes(raw[0]), raw[1], raw[2]) == (run_id, False, 7)
    # The metrics digest is carried by the event only.
    assert chain.registry.find_by_weights(digest(4)) is None
    assert chain.registry.find_by_tensor_root(digest(4)) is None
    assert chain.registry.get_run(run_id).status is RunStatus.RUNNING


def test_checkpoint_at_step_zero_is_not_a_final_record(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    chain.registry.commit_checkpoint(run_id, 0, digest(2), digest(3), ZERO32)
    assert chain.registry.find_by_weights(digest(2)) == WeightsRecord(run_id, False, 0)
    assert chain.registry.find_by_tensor_root(digest(3)) == WeightsRecord(run_id, False, 0)


def test_checkpoint_at_the_largest_step_that_fits(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    chain.registry.commit_checkpoint(run_id, MAX_UINT64 - 1, digest(2), ZERO32, ZERO32)
    record = chain.registry.find_by_weights(digest(2))
    assert record == WeightsRecord(run_id, False, MAX_UINT64 - 1)


def test_the_largest_uint64_step_is_refused_by_name(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    with expect_revert("RegistryStepOutOfRange", MAX_UINT64):
        chain.registry.commit_checkpoint(run_id, MAX_UINT64, digest(2), ZERO32, ZERO32)
    assert chain.registry.find_by_weights(digest(2)) is None


def test_zero_tensor_root_is_allowed_and_not_recorded(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    tx = chain.registry.commit_checkpoint(run_id, 1, digest(2), ZERO32, ZERO32)
    args = sole_event(chain, tx, "CheckpointCommitted")
    assert (args["tensorRoot"], args["metricsDigest"]) == (ZERO32, ZERO32)
    assert chain.registry.find_by_weights(digest(2)) == WeightsRecord(run_id, False, 1)
    assert chain.registry.find_by_tensor_root(ZERO32) is None


def test_commit_checkpoint_refuses_zero_weights(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    with expect_revert("RegistryZeroDigest"):
        chain.registry.commit_checkpoint(run_id, 1, ZERO32, digest(3), ZERO32)
    assert chain.registry.find_by_tensor_root(digest(3)) is None


def test_commit_checkpoint_refuses_an_unknown_run(chain: Chain) -> None:
    with expect_revert("RegistryUnknownRun", digest(1)):
        chain.registry.commit_checkpoint(digest(1), 1, digest(2), ZERO32, ZERO32)
    assert chain.registry.find_by_weights(digest(2)) is None


def test_resent_checkpoint_is_refused(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    chain.registry.commit_checkpoint(run_id, 5, digest(2), digest(3), ZERO32)
    with expect_revert("RegistryCheckpointExists", run_id, 5):
        chain.registry.commit_checkpoint(run_id, 5, digest(2), digest(3), ZERO32)
    with expect_revert("RegistryCheckpointExists", run_id, 5):
        chain.registry.commit_checkpoint(run_id, 5, digest(2), ZERO32, digest(9))
    assert len(chain.registry.events("CheckpointCommitted", run_id)) == 1


def test_same_weights_at_a_later_step_keep_the_first_record(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    chain.registry.commit_checkpoint(run_id, 5, digest(2), digest(3), ZERO32)
    tx = chain.registry.commit_checkpoint(run_id, 6, digest(2), digest(3), ZERO32)
    assert sole_event(chain, tx, "CheckpointCommitted")["step"] == 6
    assert chain.registry.find_by_weights(digest(2)) == WeightsRecord(run_id, False, 5)
    assert chain.registry.find_by_tensor_root(digest(3)) == WeightsRecord(run_id, False, 5)


@pytest.mark.xfail(
    strict=True,
    reason="contract limitation: the re-send check reads the first-writer weights index, "
    "so a re-sent checkpoint whose digest another run recorded first is accepted twice",
)
def test_resent_checkpoint_is_refused_when_another_run_recorded_the_digest(
    chain: Chain,
) -> None:
    first, run_id = started(chain.registry, 1), started(chain.registry, 2)
    chain.registry.commit_checkpoint(first, 1, digest(3), ZERO32, ZERO32)
    chain.registry.commit_checkpoint(run_id, 5, digest(3), ZERO32, ZERO32)
    with expect_revert("RegistryCheckpointExists", run_id, 5):
        chain.registry.commit_checkpoint(run_id, 5, digest(3), ZERO32, ZERO32)


def test_commit_checkpoint_needs_the_committer_role(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    with expect_revert("AccessControlUnauthorizedAccount", chain.bob.address, COMMITTER_ROLE):
        chain.as_(chain.bob).commit_checkpoint(run_id, 1, digest(2), ZERO32, ZERO32)
    assert chain.registry.find_by_weights(digest(2)) is None


def test_only_the_runs_committer_may_commit_a_checkpoint(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    alice = with_committer(chain, chain.alice)
    with expect_revert("RegistryNotRunCommitter", run_id, chain.alice.address):
        alice.commit_checkpoint(run_id, 1, digest(2), ZERO32, ZERO32)
    assert chain.registry.find_by_weights(digest(2)) is None


# -- first writer wins -------------------------------------------------------------


def test_a_digest_recorded_by_another_run_keeps_its_first_record(chain: Chain) -> None:
    alice = with_committer(chain, chain.alice)
    first = started(chain.registry, 1)
    second = started(alice, 1)
    chain.registry.commit_checkpoint(first, 3, digest(10), digest(11), ZERO32)
    # The second run may record the same bytes, but the lookup still names the first.
    alice.commit_checkpoint(second, 4, digest(10), digest(11), ZERO32)
    expected = WeightsRecord(first, False, 3)
    assert chain.registry.find_by_weights(digest(10)) == expected
    assert chain.registry.find_by_tensor_root(digest(11)) == expected
    alice.finalize_run(second, digest(10), digest(11), ZERO32, ZERO32, 1)
    assert chain.registry.find_by_weights(digest(10)) == expected
    assert chain.registry.find_by_tensor_root(digest(11)) == expected


def test_final_weights_of_one_run_are_not_taken_over_by_another(chain: Chain) -> None:
    first, second, third = (started(chain.registry, n) for n in (1, 2, 3))
    chain.registry.finalize_run(first, digest(10), digest(11), ZERO32, ZERO32, 0)
    chain.registry.commit_checkpoint(second, 1, digest(10), digest(11), ZERO32)
    chain.registry.finalize_run(third, digest(10), digest(11), ZERO32, ZERO32, 0)
    expected = WeightsRecord(first, True, 0)
    assert chain.registry.find_by_weights(digest(10)) == expected
    assert chain.registry.find_by_tensor_root(digest(11)) == expected


# -- finalizeRun -------------------------------------------------------------------


def test_finalize_run_records_final_weights_and_checkpoint_root(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    tx = chain.registry.finalize_run(run_id, digest(2), digest(3), digest(4), digest(5), 12)
    args = sole_event(chain, tx, "RunFinalized")
    assert args == {
        "runId": run_id,
        "weightsDigest": digest(2),
        "tensorRoot": digest(3),
        "metricsDigest": digest(4),
        "checkpointRoot": digest(5),
        "checkpointCount": 12,
    }
    run = chain.registry.get_run(run_id)
    assert run.status is RunStatus.FINALIZED
    assert run.checkpoint_root == digest(5)
    assert run.revoked is False
    assert run.manifest_digest == digest(1)
    assert chain.registry.find_by_weights(digest(2)) == WeightsRecord(run_id, True, 0)
    assert chain.registry.find_by_tensor_root(digest(3)) == WeightsRecord(run_id, True, 0)
    raw = chain.registry.contract.functions.findByTensorRoot(digest(3)).call()
    assert (bytes(raw[0]), raw[1], raw[2]) == (run_id, True, 0)
    assert chain.registry.find_by_weights(digest(4)) is None
    assert chain.registry.find_by_weights(digest(5)) is None


def test_finalize_with_zero_roots_records_no_root(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    tx = chain.registry.finalize_run(run_id, digest(2), ZERO32, ZERO32, ZERO32, 0)
    args = sole_event(chain, tx, "RunFinalized")
    assert (args["tensorRoot"], args["checkpointRoot"], args["checkpointCount"]) == (
        ZERO32,
        ZERO32,
        0,
    )
    assert chain.registry.get_run(run_id).checkpoint_root == ZERO32
    assert chain.registry.find_by_weights(digest(2)) == WeightsRecord(run_id, True, 0)
    assert chain.registry.find_by_tensor_root(ZERO32) is None


def test_final_weights_equal_to_an_own_checkpoint_become_final(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    chain.registry.commit_checkpoint(run_id, 3, digest(2), digest(3), ZERO32)
    chain.registry.commit_checkpoint(run_id, 4, digest(4), digest(5), ZERO32)
    chain.registry.finalize_run(run_id, digest(4), digest(5), ZERO32, digest(6), 2)
    assert chain.registry.find_by_weights(digest(4)) == WeightsRecord(run_id, True, 0)
    assert chain.registry.find_by_tensor_root(digest(5)) == WeightsRecord(run_id, True, 0)
    # The other checkpoint keeps its record.
    assert chain.registry.find_by_weights(digest(2)) == WeightsRecord(run_id, False, 3)
    assert chain.registry.find_by_tensor_root(digest(3)) == WeightsRecord(run_id, False, 3)


def test_finalize_run_refuses_zero_weights(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    with expect_revert("RegistryZeroDigest"):
        chain.registry.finalize_run(run_id, ZERO32, digest(3), ZERO32, digest(5), 1)
    assert chain.registry.get_run(run_id).status is RunStatus.RUNNING
    assert chain.registry.find_by_tensor_root(digest(3)) is None


def test_finalize_run_refuses_an_unknown_run(chain: Chain) -> None:
    with expect_revert("RegistryUnknownRun", digest(1)):
        chain.registry.finalize_run(digest(1), digest(2), ZERO32, ZERO32, ZERO32, 0)
    assert chain.registry.find_by_weights(digest(2)) is None


def test_finalize_run_needs_the_committer_role(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    with expect_revert("AccessControlUnauthorizedAccount", chain.bob.address, COMMITTER_ROLE):
        chain.as_(chain.bob).finalize_run(run_id, digest(2), ZERO32, ZERO32, ZERO32, 0)
    assert chain.registry.get_run(run_id).status is RunStatus.RUNNING


def test_only_the_runs_committer_may_finalize(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    alice = with_committer(chain, chain.alice)
    with expect_revert("RegistryNotRunCommitter", run_id, chain.alice.address):
        alice.finalize_run(run_id, digest(2), ZERO32, ZERO32, ZERO32, 0)
    assert chain.registry.get_run(run_id).status is RunStatus.RUNNING
    assert chain.registry.find_by_weights(digest(2)) is None


def test_a_finalized_run_cannot_be_extended_or_ended_again(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    chain.registry.finalize_run(run_id, digest(2), ZERO32, ZERO32, ZERO32, 0)
    with expect_revert("RegistryRunNotRunning", run_id, RunStatus.FINALIZED):
        chain.registry.commit_checkpoint(run_id, 9, digest(3), ZERO32, ZERO32)
    with expect_revert("RegistryRunNotRunning", run_id, RunStatus.FINALIZED):
        chain.registry.finalize_run(run_id, digest(4), ZERO32, ZERO32, ZERO32, 0)
    with expect_revert("RegistryRunNotRunning", run_id, RunStatus.FINALIZED):
        chain.registry.mark_failed(run_id, "too late")
    assert chain.registry.get_run(run_id).status is RunStatus.FINALIZED
    assert chain.registry.find_by_weights(digest(3)) is None
    assert chain.registry.find_by_weights(digest(4)) is None


# -- markFailed --------------------------------------------------------------------


def test_mark_failed_sets_failed_and_emits_the_reason(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    tx = chain.registry.mark_failed(run_id, "loss is NaN at step 40")
    assert sole_event(chain, tx, "RunFailed") == {
        "runId": run_id,
        "reason": "loss is NaN at step 40",
    }
    run = chain.registry.get_run(run_id)
    assert run.status is RunStatus.FAILED
    assert run.revoked is False
    assert run.checkpoint_root == ZERO32
    (logged,) = chain.registry.events("RunFailed", run_id)
    assert logged["reason"] == "loss is NaN at step 40"


def test_a_failed_run_cannot_be_extended_or_ended_again(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    chain.registry.mark_failed(run_id, "")
    with expect_revert("RegistryRunNotRunning", run_id, RunStatus.FAILED):
        chain.registry.commit_checkpoint(run_id, 1, digest(2), ZERO32, ZERO32)
    with expect_revert("RegistryRunNotRunning", run_id, RunStatus.FAILED):
        chain.registry.finalize_run(run_id, digest(3), ZERO32, ZERO32, ZERO32, 0)
    with expect_revert("RegistryRunNotRunning", run_id, RunStatus.FAILED):
        chain.registry.mark_failed(run_id, "again")
    assert chain.registry.get_run(run_id).status is RunStatus.FAILED
    assert chain.registry.find_by_weights(digest(2)) is None
    assert chain.registry.find_by_weights(digest(3)) is None


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


# -- revokeRun ---------------------------------------------------------------------


@pytest.mark.parametrize("status", [RunStatus.RUNNING, RunStatus.FINALIZED, RunStatus.FAILED])
def test_revoke_sets_revoked_and_keeps_the_status(chain: Chain, status: RunStatus) -> None:
    run_id = started(chain.registry, 1)
    if status is RunStatus.FINALIZED:
        chain.registry.finalize_run(run_id, digest(2), ZERO32, ZERO32, digest(3), 1)
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
    assert after.revoked is True
    assert before.revoked is False
    assert after.status is before.status
    assert before.status is status
    assert (after.committer, after.started_at) == (before.committer, before.started_at)
    assert (after.manifest_digest, after.checkpoint_root) == (
        before.manifest_digest,
        before.checkpoint_root,
    )
    with expect_revert("RegistryRunRevoked", run_id):
        chain.registry.revoke_run(run_id, "twice")
    assert len(chain.registry.events("RunRevoked", run_id)) == 1


def test_revoke_refuses_an_unknown_run(chain: Chain) -> None:
    with expect_revert("RegistryUnknownRun", digest(1)):
        chain.registry.revoke_run(digest(1), "no such run")


def test_the_runs_committer_may_revoke_it(chain: Chain) -> None:
    alice = with_committer(chain, chain.alice)
    run_id = started(alice, 1)
    tx = alice.revoke_run(run_id, "mine")
    args = sole_event(chain, tx, "RunRevoked")
    assert (args["runId"], args["revoker"]) == (run_id, chain.alice.address)
    assert chain.registry.get_run(run_id).revoked is True
    with expect_revert("RegistryRunRevoked", run_id):
        chain.registry.revoke_run(run_id, "the admin, after the committer")


def test_an_admin_may_revoke_another_committers_run(chain: Chain) -> None:
    alice = with_committer(chain, chain.alice)
    run_id = started(alice, 1)
    assert not chain.registry.is_committer(chain.bob.address)
    tx = chain.registry.revoke_run(run_id, "policy")
    args = sole_event(chain, tx, "RunRevoked")
    assert (args["runId"], args["revoker"], args["reason"]) == (
        run_id,
        chain.admin.address,
        "policy",
    )
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


def test_revoke_is_independent_of_status_so_a_revoked_run_still_runs(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    chain.registry.revoke_run(run_id, "early")
    chain.registry.commit_checkpoint(run_id, 1, digest(2), ZERO32, ZERO32)
    chain.registry.finalize_run(run_id, digest(3), ZERO32, ZERO32, ZERO32, 1)
    run = chain.registry.get_run(run_id)
    assert (run.status, run.revoked) == (RunStatus.FINALIZED, True)


# -- roles -------------------------------------------------------------------------


def test_deployer_holds_admin_and_committer_roles(chain: Chain) -> None:
    functions = chain.registry.contract.functions
    assert bytes(functions.COMMITTER_ROLE().call()) == COMMITTER_ROLE == keccak(b"COMMITTER_ROLE")
    assert bytes(functions.DEFAULT_ADMIN_ROLE().call()) == ADMIN_ROLE
    assert bytes(functions.getRoleAdmin(COMMITTER_ROLE).call()) == ADMIN_ROLE
    assert chain.registry.is_admin(chain.admin.address)
    assert chain.registry.is_committer(chain.admin.address)
    for account in (chain.alice, chain.bob):
        assert not chain.registry.is_admin(account.address)
        assert not chain.registry.is_committer(account.address)
    assert functions.hasRole(COMMITTER_ROLE, chain.admin.address).call() is True
    assert functions.hasRole(COMMITTER_ROLE, chain.alice.address).call() is False


def test_admin_grants_and_revokes_the_committer_role(chain: Chain) -> None:
    tx = chain.registry.grant_committer(chain.alice.address)
    granted = sole_event(chain, tx, "RoleGranted")
    assert granted == {
        "role": COMMITTER_ROLE,
        "account": chain.alice.address,
        "sender": chain.admin.address,
    }
    assert chain.registry.is_committer(chain.alice.address)
    assert not chain.registry.is_admin(chain.alice.address)
    alice = chain.as_(chain.alice)
    run_id, _ = alice.start_run(digest(1))
    alice.commit_checkpoint(run_id, 1, digest(2), ZERO32, ZERO32)

    tx = chain.registry.revoke_committer(chain.alice.address)
    revoked = sole_event(chain, tx, "RoleRevoked")
    assert revoked == {
        "role": COMMITTER_ROLE,
        "account": chain.alice.address,
        "sender": chain.admin.address,
    }
    assert not chain.registry.is_committer(chain.alice.address)
    unauthorized = ("AccessControlUnauthorizedAccount", chain.alice.address, COMMITTER_ROLE)
    with expect_revert(*unauthorized):
        alice.start_run(digest(3))
    with expect_revert(*unauthorized):
        alice.commit_checkpoint(run_id, 2, digest(4), ZERO32, ZERO32)
    with expect_revert(*unauthorized):
        alice.finalize_run(run_id, digest(5), ZERO32, ZERO32, ZERO32, 1)
    run = chain.registry.get_run(run_id)
    assert (run.status, run.revoked) == (RunStatus.RUNNING, False)
    assert chain.registry.find_by_weights(digest(4)) is None


def test_a_committer_without_the_role_may_still_end_or_revoke_its_run(chain: Chain) -> None:
    # markFailed and revokeRun check only the run's committer, not the committer role.
    alice = with_committer(chain, chain.alice)
    failing, revoking = started(alice, 1), started(alice, 2)
    chain.registry.revoke_committer(chain.alice.address)
    alice.mark_failed(failing, "winding down")
    alice.revoke_run(revoking, "winding down")
    assert chain.registry.get_run(failing).status is RunStatus.FAILED
    assert chain.registry.get_run(revoking).revoked is True


def test_role_granted_again_restores_the_committer(chain: Chain) -> None:
    alice = with_committer(chain, chain.alice)
    run_id = started(alice, 1)
    chain.registry.revoke_committer(chain.alice.address)
    chain.registry.grant_committer(chain.alice.address)
    alice.commit_checkpoint(run_id, 1, digest(2), ZERO32, ZERO32)
    assert chain.registry.find_by_weights(digest(2)) == WeightsRecord(run_id, False, 1)


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


# -- events of a whole life --------------------------------------------------------


def test_events_of_one_run_in_order_and_not_of_others(chain: Chain) -> None:
    other = started(chain.registry, 1)
    run_id, start = chain.registry.start_run(digest(2), [(other, Relation.SWEEP_TRIAL)])
    first = chain.registry.commit_checkpoint(run_id, 1, digest(3), digest(4), digest(5))
    second = chain.registry.commit_checkpoint(run_id, 2, digest(6), ZERO32, ZERO32)
    chain.registry.commit_checkpoint(other, 1, digest(7), ZERO32, ZERO32)
    final = chain.registry.finalize_run(run_id, digest(8), digest(9), ZERO32, digest(10), 2)
    revoke = chain.registry.revoke_run(run_id, "done with it")

    (started_event,) = chain.registry.events("RunStarted", run_id)
    assert started_event["transactionHash"] == start.tx_hash
    assert parents_of(started_event) == [(other, int(Relation.SWEEP_TRIAL))]
    checkpoints = chain.registry.events("CheckpointCommitted", run_id)
    assert [(e["step"], e["weightsDigest"], e["transactionHash"]) for e in checkpoints] == [
        (1, digest(3), first.tx_hash),
        (2, digest(6), second.tx_hash),
    ]
    (finalized,) = chain.registry.events("RunFinalized", run_id)
    assert (finalized["checkpointRoot"], finalized["checkpointCount"]) == (digest(10), 2)
    assert finalized["transactionHash"] == final.tx_hash
    (revoked,) = chain.registry.events("RunRevoked", run_id)
    assert (revoked["revoker"], revoked["reason"]) == (chain.admin.address, "done with it")
    assert revoked["transactionHash"] == revoke.tx_hash
    assert chain.registry.events("RunFailed", run_id) == []
    assert len(chain.registry.events("CheckpointCommitted", other)) == 1


# -- gas ---------------------------------------------------------------------------


def test_start_and_finalize_cost_less_than_200k_gas(chain: Chain) -> None:
    run_id, start = chain.registry.start_run(digest(1))
    checkpoint = chain.registry.commit_checkpoint(run_id, 1, digest(2), digest(3), digest(4))
    final = chain.registry.finalize_run(run_id, digest(5), digest(6), digest(7), digest(8), 1)
    for tx in (start, checkpoint, final):
        assert int(receipt_of(chain, tx)["gasUsed"]) == tx.gas_used
    total = start.gas_used + final.gas_used
    print(
        f"\ngas: startRun (no parents) {start.gas_used}, finalizeRun {final.gas_used}, "
        f"sum {total}; commitCheckpoint {checkpoint.gas_used}"
    )
    assert total < 200_000
