"""ledger's own synchronous writer (deploy, revoke, roles, records, signed calls)
against a real Anvil, checked through the independent web3.py client."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from ledger.chain.abi import LogDecoder
from ledger.chain.admin import RegistryAdmin, deploy_registry
from ledger.chain.records import COMMITTER_ROLE, FinalRecord, RunStatus, run_id_for
from ledger.chain.rpc import JsonRpc
from ledger.chain.sender import Signer
from ledger.config import ANVIL_DEV_KEY, Secret, Settings
from ledger.errors import ChainError, RegistryNotDeployedError, TransactionRevertedError
from ledger.hashing.merkle import CheckpointLeaf, checkpoint_root
from ledger.ids import Relation
from tests.chain.web3_registry import Registry
from tests.conftest import OTHER_KEYS, Chain

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def admin(chain: Chain, tmp_path: Path, key: str = ANVIL_DEV_KEY) -> RegistryAdmin:
    return RegistryAdmin.connect(chain.settings(tmp_path / "ledger"), Secret(key))


def leaf(step: int) -> CheckpointLeaf:
    return CheckpointLeaf(step, os.urandom(32), os.urandom(32), os.urandom(32))


def test_deploy_makes_a_registry_the_web3_client_reads(chain: Chain, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, rpc_url=chain.rpc_url)
    registry, tx = deploy_registry(settings)  # the dev key on the dev chain
    assert registry.address != chain.registry.address
    assert registry.deploy_block == tx.block_number and tx.gas_used > 1_000_000
    oracle = Registry(chain.w3, registry.address, chain.admin, tx.block_number)
    assert oracle.version() == "3.0.0" == registry.version()
    assert oracle.is_admin(chain.admin.address) and oracle.is_committer(chain.admin.address)
    assert registry.is_admin(chain.admin.address) and not registry.is_admin(chain.alice.address)
    receipt = chain.w3.eth.get_transaction_receipt(tx.tx_hash)
    assert receipt["contractAddress"] == registry.address
    assert int(receipt["gasUsed"]) == tx.gas_used


def test_deploy_signs_with_the_given_key(chain: Chain) -> None:
    signer = Signer(Secret(OTHER_KEYS[0]))
    registry, _ = RegistryAdmin.deploy(JsonRpc(chain.rpc_url), signer)
    assert signer.address == chain.alice.address
    oracle = Registry(chain.w3, registry.address)
    assert oracle.is_admin(chain.alice.address) and not oracle.is_admin(chain.admin.address)


def test_records_written_here_read_the_same_through_web3(chain: Chain, tmp_path: Path) -> None:
    writer = admin(chain, tmp_path)
    manifest = os.urandom(32)
    run_id, start = writer.start_run(manifest)
    assert run_id == run_id_for(chain.admin.address, manifest)
    leaves = [leaf(0), leaf(1), leaf(2)]
    writer.commit_checkpoint(run_id, leaves[0])
    writer.commit_checkpoints([(run_id, c) for c in leaves[1:]])
    record = FinalRecord(os.urandom(32), os.urandom(32), os.urandom(32), checkpoint_root(leaves), 3)
    final = writer.finalize_run(run_id, record)
    assert final.block_number > start.block_number
    assert chain.registry.get_run(run_id).status is RunStatus.FINALIZED
    assert chain.registry.is_final_record(run_id, record)
    assert [r.step for r in chain.registry.checkpoints(run_id)] == [0, 1, 2]
    assert int(chain.w3.eth.get_transaction_receipt(final.tx_hash)["gasUsed"]) == final.gas_used

    children, _ = writer.start_runs([(os.urandom(32), [(run_id, Relation.FINE_TUNE)])])
    [started] = chain.registry.events("RunStarted", children[0])
    assert [(bytes(p["runId"]), int(p["relation"])) for p in started["parents"]] == [(run_id, 1)]
    writer.finalize_runs([(children[0], replace(record, checkpoint_count=0))])
    assert chain.registry.get_run(children[0]).status is RunStatus.FINALIZED
    failed, _ = writer.start_run(os.urandom(32))
    writer.mark_failed(failed, "diverged")
    assert chain.registry.events("RunFailed", failed)[0]["reason"] == "diverged"


def test_revoke_and_roles(chain: Chain, tmp_path: Path) -> None:
    writer = admin(chain, tmp_path)
    run_id, _ = chain.registry.start_run(os.urandom(32))
    tx = writer.revoke_run(run_id, "leaked test data")
    assert chain.registry.get_run(run_id).revoked is True
    [event] = chain.registry.events("RunRevoked", run_id)
    assert event["reason"] == "leaked test data" and event["revoker"] == chain.admin.address
    assert event["transactionHash"] == tx.tx_hash

    assert not chain.registry.is_committer(chain.bob.address)
    writer.grant_committer(chain.bob.address.lower())
    assert chain.registry.is_committer(chain.bob.address)
    writer.revoke_committer(chain.bob.address)
    assert not chain.registry.is_committer(chain.bob.address)


def test_a_refusal_names_the_same_error_as_web3(chain: Chain, tmp_path: Path) -> None:
    unknown = os.urandom(32)
    with pytest.raises(TransactionRevertedError) as ours:
        admin(chain, tmp_path).revoke_run(unknown, "no such run")
    with pytest.raises(TransactionRevertedError) as theirs:
        chain.registry.revoke_run(unknown, "no such run")
    assert ours.value.error_name == theirs.value.error_name == "RegistryUnknownRun"
    assert ours.value.error_args == theirs.value.error_args == (unknown,)
    assert str(ours.value) == str(theirs.value)

    run_id, _ = chain.registry.start_run(os.urandom(32))
    with pytest.raises(TransactionRevertedError) as stranger:  # bob holds no role
        admin(chain, tmp_path, OTHER_KEYS[1]).revoke_run(run_id, "not mine")
    assert stranger.value.error_name == "RegistryNotAllowedToRevoke"
    assert stranger.value.error_args == (run_id, chain.bob.address)
    assert chain.registry.get_run(run_id).revoked is False


def test_signed_calls_match_web3_and_name_the_signer(chain: Chain, tmp_path: Path) -> None:
    relayer = admin(chain, tmp_path, OTHER_KEYS[1])  # bob: no role, pays the gas
    alice = Signer(Secret(OTHER_KEYS[0]))
    chain.registry.grant_committer(alice.address)
    manifest = os.urandom(32)
    ours = relayer.sign_call(alice, "startRun", manifest, [])
    theirs = chain.registry.sign_call(
        chain.alice, "startRun", manifest, [], deadline=ours.deadline, nonce=ours.nonce
    )
    assert ours == theirs  # RFC 6979 signatures: the same bytes
    relayer.submit_signed(ours)
    record = chain.registry.get_run(run_id_for(alice.address, manifest))
    assert record.status is RunStatus.RUNNING and record.committer == alice.address
    with pytest.raises(TransactionRevertedError):  # its nonce is used now
        relayer.submit_signed(ours)


def test_the_log_decoders_fast_and_generic_paths_agree(chain: Chain) -> None:
    registry = chain.registry
    parent, _ = registry.start_run(os.urandom(32))
    registry.commit_checkpoint(parent, leaf(3))
    registry.finalize_run(parent, FinalRecord(*(os.urandom(32) for _ in range(4)), 1))
    child, _ = registry.start_run(
        os.urandom(32), [(parent, Relation.FINE_TUNE), (parent, Relation.SWEEP_TRIAL)]
    )
    registry.mark_failed(child, "diverged — ünïcode")
    registry.revoke_run(parent, "bad data")
    decoder = LogDecoder()
    query = {"address": registry.address, "fromBlock": hex(chain.deploy_block)}
    logs = JsonRpc(chain.rpc_url)("eth_getLogs", {**query, "topics": [decoder.topics]})
    fast = [decoder.decode(raw) for raw in logs]
    assert [log.name for log in fast if log][-6:] == [
        "RunStarted", "CheckpointCommitted", "RunFinalized", "RunStarted", "RunFailed", "RunRevoked"
    ]  # fmt: skip
    assert fast == [decoder.decode_generic(raw) for raw in logs]
    [started] = [log for log in fast if log and log.name == "RunStarted" and log.run_id == (
        "0x" + child.hex()
    )]  # fmt: skip
    assert started.args["parents"] == [
        {"runId": "0x" + parent.hex(), "relation": "fine-tune"},
        {"runId": "0x" + parent.hex(), "relation": "sweep-trial"},
    ]
    [failed] = [log for log in fast if log and log.name == "RunFailed"]
    assert failed.args == {"reason": "diverged — ünïcode", "previousRunBlock": started.block_number}


def test_no_module_of_ledger_loads_web3_eth_account_or_eth_abi() -> None:
    code = (
        "import pkgutil, importlib, sys, ledger\n"
        "skip = ('ledger.__main__', 'ledger.training', 'ledger.index.migrations')\n"
        "for m in pkgutil.walk_packages(ledger.__path__, 'ledger.'):\n"
        "    if not m.name.startswith(skip):\n"
        "        importlib.import_module(m.name)\n"
        "found = sorted({'web3', 'eth_account', 'eth_abi'} & set(sys.modules))\n"
        "assert not found, found\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


# -- #20.1 neighbour: an admin write is confirmed by its event, not by status 1 ---------

# runtime code that answers any call with the ABI string "1" and takes any transaction
# with status 1, recording nothing (as in tests/record/outbox/test_chain_truth.py)
ANSWERS_ANYTHING = (
    "0x"
    "6020600052"  # mstore(0x00, 0x20): the offset
    "6001602052"  # mstore(0x20, 1): the length
    "7f31" + "00" * 31 + "604052"  # mstore(0x40, "1")
    "60606000f3"  # return(0x00, 0x60)
)


def _nonce(rpc: JsonRpc, address: str) -> int:
    return int(str(rpc("eth_getTransactionCount", address, "latest")), 16)


def test_admin_writes_send_nothing_to_an_address_without_code(chain: Chain, tmp_path: Path) -> None:
    """A chain reset leaves the registry's address empty: a revoke (or any admin write)
    is refused before it is sent, so no nonce is spent and nothing passes for done."""
    writer = admin(chain, tmp_path)
    run_id, _ = chain.registry.start_run(os.urandom(32))
    rpc = JsonRpc(chain.rpc_url)
    rpc("anvil_setCode", chain.registry.address, "0x")
    before = _nonce(rpc, writer.signer.address)
    with pytest.raises(RegistryNotDeployedError, match="no contract at") as caught:
        writer.revoke_run(run_id, "gone")
    assert caught.value.hint is not None and "ledger deploy" in caught.value.hint
    with pytest.raises(RegistryNotDeployedError):
        writer.start_run(os.urandom(32))
    assert _nonce(rpc, writer.signer.address) == before


def test_admin_writes_need_their_event_from_the_registry(chain: Chain, tmp_path: Path) -> None:
    """Code that is not the registry takes every transaction with status 1: each admin
    write fails in one line naming the event it lacks, never reports success."""
    writer = admin(chain, tmp_path)
    run_id, _ = chain.registry.start_run(os.urandom(32))
    JsonRpc(chain.rpc_url)("anvil_setCode", chain.registry.address, ANSWERS_ANYTHING)
    writes = {
        "RunRevoked": lambda: writer.revoke_run(run_id, "poisoned"),
        "RunStarted": lambda: writer.start_run(os.urandom(32)),
        "CheckpointCommitted": lambda: writer.commit_checkpoint(run_id, leaf(0)),
        "RunFinalized": lambda: writer.finalize_runs(
            [(run_id, FinalRecord(*(os.urandom(32) for _ in range(4)), 0))]
        ),
        "RunFailed": lambda: writer.mark_failed(run_id, "nan"),
        "RoleGranted": lambda: writer.transact("grantRole", COMMITTER_ROLE, chain.bob.address),
        "registry": lambda: writer.transact("renounceRole", os.urandom(32), writer.address),
    }
    for event, write in writes.items():
        with pytest.raises(RegistryNotDeployedError, match=f"no {event} event") as caught:
            write()
        assert "not the registry" in caught.value.message


def test_roles_already_in_place_send_nothing(chain: Chain, tmp_path: Path) -> None:
    writer = admin(chain, tmp_path)
    rpc = JsonRpc(chain.rpc_url)
    before = _nonce(rpc, writer.signer.address)
    assert writer.grant_committer(chain.admin.address) is None  # the deployer holds it
    assert writer.revoke_committer(chain.bob.address) is None  # bob never held it
    assert _nonce(rpc, writer.signer.address) == before
    granted = writer.grant_committer(chain.bob.address)
    assert granted is not None and chain.registry.is_committer(chain.bob.address)


def test_a_deployment_that_leaves_no_code_is_an_error(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Init code that returns empty runtime code: the receipt has status 1 and a contract
    address, but there is no registry there. (The artifact is swapped for that init
    code; the chain and the transaction are real.)"""
    import ledger.chain.admin as admin_module

    real = admin_module.load_artifact()
    empty_runtime = "0x60006000f3"  # return(0, 0)
    monkeypatch.setattr(admin_module, "load_artifact", lambda: {**real, "bytecode": empty_runtime})
    rpc = JsonRpc(chain.rpc_url)
    with pytest.raises(ChainError, match="left no code"):
        RegistryAdmin.deploy(rpc, Signer(Secret(OTHER_KEYS[0])))
