"""Contract tests of signed calls (EIP-712 ``executeSigned``) against the real Anvil.

Alice (granted the committer role) signs registry calls off chain with
:meth:`Registry.sign_call`; Bob, who holds no role, relays them with his own account
and pays the gas. The record must name the signer. The EIP-712 digest is also built
here by hand (domain separator and struct hash), independently of the client, to sign
for tampered domains and to know which address the contract will recover.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import SignableMessage
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from ledger.chain.anvil import rpc_call
from ledger.hashing.merkle import CheckpointLeaf
from tests.chain.test_registry import (
    ZERO_ADDRESS,
    digest,
    events_of,
    expect_revert,
    final,
    leaf,
    receipt_of,
    send_unchecked,
    sole_event,
    started,
    with_committer,
)
from tests.chain.web3_registry import (
    ADMIN_ROLE,
    COMMITTER_ROLE,
    Registry,
    RunStatus,
    SignedCall,
    TxResult,
)
from tests.conftest import Chain

pytestmark = pytest.mark.integration

SIGNED_CALL_TYPE = "SignedCall(address signer,uint256 nonce,uint256 deadline,bytes data)"
DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


# -- helpers ------------------------------------------------------------------------


def eip712_message(
    call: SignedCall,
    *,
    chain_id: int,
    contract: str,
    name: str = "ProvenanceRegistry",
    version: str = "2",
) -> SignableMessage:
    """The EIP-712 message of ``call`` for a domain, built from the spec by hand."""
    domain = keccak(
        abi_encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [keccak(text=DOMAIN_TYPE), keccak(text=name), keccak(text=version), chain_id, contract],
        )
    )
    struct = keccak(
        abi_encode(
            ["bytes32", "address", "uint256", "uint256", "bytes32"],
            [
                keccak(text=SIGNED_CALL_TYPE),
                call.signer,
                call.nonce,
                call.deadline,
                keccak(call.data),
            ],
        )
    )
    return SignableMessage(b"\x01", domain, struct)


def recovered_by(registry: Registry, call: SignedCall) -> str:
    """The address ``registry`` recovers from ``call``'s signature."""
    message = eip712_message(call, chain_id=registry.w3.eth.chain_id, contract=registry.address)
    return str(Account.recover_message(message, signature=call.signature))


def resigned(call: SignedCall, signer: LocalAccount, **domain: Any) -> SignedCall:
    """``call`` signed again by ``signer`` for the domain given by ``domain``."""
    signature = signer.sign_message(eip712_message(call, **domain)).signature
    return replace(call, signature=bytes(signature))


def as_tuple(checkpoint: CheckpointLeaf) -> tuple[int, bytes, bytes, bytes]:
    """A checkpoint as the ABI tuple that ``sign_call`` encodes."""
    c = checkpoint
    return (c.step, c.weights_digest, c.tensor_root, c.metrics_digest)


def signed_start(chain: Chain, signer: LocalAccount, n: int, **kwargs: Any) -> SignedCall:
    return chain.registry.sign_call(signer, "startRun", digest(n), [], **kwargs)


def nonce_of(chain: Chain, account: LocalAccount) -> int:
    return int(chain.registry.contract.functions.nonces(account.address).call())


def latest_time(chain: Chain) -> int:
    return int(chain.w3.eth.get_block("latest")["timestamp"])


def balance_change(chain: Chain, account: LocalAccount, tx: TxResult) -> int:
    before = chain.w3.eth.get_balance(account.address, tx.block_number - 1)
    return int(chain.w3.eth.get_balance(account.address, tx.block_number)) - int(before)


def execute_fn(chain: Chain, call: SignedCall) -> Any:
    """The raw ``executeSigned`` call of ``call``, to send without the client's checks."""
    return chain.registry.contract.functions.executeSigned(
        call.signer, call.nonce, call.deadline, call.data, call.signature
    )


# -- constants and domain ---------------------------------------------------------


def test_signed_call_typehash_and_eip712_domain(chain: Chain) -> None:
    functions = chain.registry.contract.functions
    assert bytes(functions.SIGNED_CALL_TYPEHASH().call()) == keccak(text=SIGNED_CALL_TYPE)
    fields, name, version, chain_id, contract, salt, extensions = functions.eip712Domain().call()
    assert bytes(fields) == b"\x0f"  # name, version, chainId, verifyingContract
    assert (name, version) == ("ProvenanceRegistry", "2")
    assert chain_id == chain.w3.eth.chain_id
    assert contract == chain.registry.address
    assert (bytes(salt), list(extensions)) == (b"\x00" * 32, [])


def test_nonces_start_at_zero(chain: Chain) -> None:
    for account in (chain.admin, chain.alice, chain.bob):
        assert nonce_of(chain, account) == 0


def test_the_client_signs_the_eip712_digest_of_the_call(chain: Chain) -> None:
    call = signed_start(chain, chain.alice, 1, deadline=12345, nonce=7)
    assert (call.signer, call.nonce, call.deadline) == (chain.alice.address, 7, 12345)
    expected_data = chain.registry.contract.encode_abi("startRun", args=[digest(1), []])
    assert "0x" + call.data.hex() == expected_data
    by_hand = resigned(
        call, chain.alice, chain_id=chain.w3.eth.chain_id, contract=chain.registry.address
    )
    assert call.signature == by_hand.signature
    assert recovered_by(chain.registry, call) == chain.alice.address


# -- alice signs, bob relays --------------------------------------------------------


def test_alice_signs_a_whole_run_and_bob_relays_it(chain: Chain) -> None:
    with_committer(chain, chain.alice)
    assert not chain.registry.is_committer(chain.bob.address)
    bob = chain.as_(chain.bob)
    run_id = Registry.run_id_for(chain.alice.address, digest(1))

    start = bob.submit_signed(signed_start(chain, chain.alice, 1))
    assert sole_event(chain, start, "RunStarted") == {
        "runId": run_id,
        "committer": chain.alice.address,
        "manifestDigest": digest(1),
        "parents": [],
        "previousChildBlocks": [],
    }
    run = chain.registry.get_run(run_id)
    assert (run.committer, run.status) == (chain.alice.address, RunStatus.RUNNING)
    assert not chain.registry.get_run(Registry.run_id_for(chain.bob.address, digest(1))).exists

    checkpoint = leaf(3, 10)
    call = chain.registry.sign_call(
        chain.alice,
        "commitCheckpoint",
        run_id,
        as_tuple(checkpoint),
    )
    committed = bob.submit_signed(call)
    assert sole_event(chain, committed, "CheckpointCommitted") == {
        "runId": run_id,
        "weightsDigest": digest(10),
        "tensorRoot": checkpoint.tensor_root,
        "step": 3,
        "metricsDigest": checkpoint.metrics_digest,
        "previousRunBlock": start.block_number,
        "previousWeightsBlock": 0,
        "previousTensorBlock": 0,
    }

    record = final(20, [checkpoint])
    finalized = bob.submit_signed(
        chain.registry.sign_call(chain.alice, "finalizeRun", run_id, record.as_tuple())
    )
    assert sole_event(chain, finalized, "RunFinalized")["runId"] == run_id
    run = chain.registry.get_run(run_id)
    assert (run.committer, run.status) == (chain.alice.address, RunStatus.FINALIZED)
    assert run.final_commitment == record.commitment

    for tx in (start, committed, finalized):
        receipt = receipt_of(chain, tx)
        assert receipt["from"] == chain.bob.address
        assert receipt["to"] == chain.registry.address
        paid = int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])
        assert paid > 0
        assert balance_change(chain, chain.bob, tx) == -paid
        assert balance_change(chain, chain.alice, tx) == 0
    assert nonce_of(chain, chain.alice) == 3
    assert nonce_of(chain, chain.bob) == 0


def test_a_relaying_committer_does_not_become_the_runs_committer(chain: Chain) -> None:
    with_committer(chain, chain.alice)
    tx = chain.registry.submit_signed(signed_start(chain, chain.alice, 1))  # the admin relays
    args = sole_event(chain, tx, "RunStarted")
    assert args["committer"] == chain.alice.address
    assert chain.registry.get_run(args["runId"]).committer == chain.alice.address
    assert not chain.registry.get_run(Registry.run_id_for(chain.admin.address, digest(1))).exists


def test_execute_signed_returns_the_inner_calls_result(chain: Chain) -> None:
    with_committer(chain, chain.alice)
    call = signed_start(chain, chain.alice, 1)
    result = execute_fn(chain, call).call({"from": chain.bob.address})
    (run_id,) = abi_decode(["bytes32"], bytes(result))
    assert run_id == Registry.run_id_for(chain.alice.address, digest(1))


def test_nonces_increase_by_one_per_use(chain: Chain) -> None:
    with_committer(chain, chain.alice)
    bob = chain.as_(chain.bob)
    for n in range(4):
        assert nonce_of(chain, chain.alice) == n
        call = signed_start(chain, chain.alice, n)
        assert call.nonce == n
        bob.submit_signed(call)
    assert nonce_of(chain, chain.alice) == 4
    assert nonce_of(chain, chain.bob) == 0


def test_signed_mark_failed(chain: Chain) -> None:
    alice = with_committer(chain, chain.alice)
    run_id = started(alice, 1)
    call = chain.registry.sign_call(chain.alice, "markFailed", run_id, "diverged")
    tx = chain.as_(chain.bob).submit_signed(call)
    assert sole_event(chain, tx, "RunFailed") == {
        "runId": run_id,
        "reason": "diverged",
        "previousRunBlock": chain.registry.get_run(run_id).start_block,
    }
    assert chain.registry.get_run(run_id).status is RunStatus.FAILED


# -- batches and admin calls, signed ---------------------------------------------------


def test_signed_batches(chain: Chain) -> None:
    with_committer(chain, chain.alice)
    bob = chain.as_(chain.bob)
    requests = [(digest(1), []), (digest(2), [])]
    started_tx = bob.submit_signed(chain.registry.sign_call(chain.alice, "startRuns", requests))
    events = events_of(chain, started_tx, "RunStarted")
    one, two = (Registry.run_id_for(chain.alice.address, digest(n)) for n in (1, 2))
    assert [(e["runId"], e["committer"]) for e in events] == [
        (one, chain.alice.address),
        (two, chain.alice.address),
    ]

    leaves = [(one, leaf(1, 10)), (two, leaf(1, 20)), (one, leaf(2, 30))]
    raw = [(r, as_tuple(c)) for r, c in leaves]
    committed = bob.submit_signed(chain.registry.sign_call(chain.alice, "commitCheckpoints", raw))
    events = events_of(chain, committed, "CheckpointCommitted")
    assert [(e["runId"], e["step"], e["weightsDigest"]) for e in events] == [
        (r, c.step, c.weights_digest) for r, c in leaves
    ]

    records = [(one, final(40)), (two, final(50))]
    raw_records = [(r, f.as_tuple()) for r, f in records]
    finalized = bob.submit_signed(
        chain.registry.sign_call(chain.alice, "finalizeRuns", raw_records)
    )
    assert [e["runId"] for e in events_of(chain, finalized, "RunFinalized")] == [one, two]
    for run_id, record in records:
        assert chain.registry.is_final_record(run_id, record)
    assert nonce_of(chain, chain.alice) == 3


def test_signed_revoke_run_by_an_admin(chain: Chain) -> None:
    alice = with_committer(chain, chain.alice)
    run_id = started(alice, 1)
    call = chain.registry.sign_call(chain.admin, "revokeRun", run_id, "policy")
    tx = chain.as_(chain.bob).submit_signed(call)
    assert sole_event(chain, tx, "RunRevoked") == {
        "runId": run_id,
        "revoker": chain.admin.address,
        "reason": "policy",
    }
    assert chain.registry.get_run(run_id).revoked is True
    assert nonce_of(chain, chain.admin) == 1


def test_a_signed_revoke_by_someone_else_is_refused(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    call = chain.registry.sign_call(chain.bob, "revokeRun", run_id, "not mine")
    with expect_revert("RegistryNotAllowedToRevoke", run_id, chain.bob.address):
        chain.registry.submit_signed(call)  # relayed by the admin, signed by bob
    assert chain.registry.get_run(run_id).revoked is False


def test_signed_grant_role_by_an_admin_and_by_a_non_admin(chain: Chain) -> None:
    bob = chain.as_(chain.bob)
    call = chain.registry.sign_call(chain.admin, "grantRole", COMMITTER_ROLE, chain.alice.address)
    tx = bob.submit_signed(call)
    assert sole_event(chain, tx, "RoleGranted") == {
        "role": COMMITTER_ROLE,
        "account": chain.alice.address,
        "sender": chain.admin.address,
    }
    assert chain.registry.is_committer(chain.alice.address)
    call = chain.registry.sign_call(chain.alice, "grantRole", COMMITTER_ROLE, chain.bob.address)
    with expect_revert("AccessControlUnauthorizedAccount", chain.alice.address, ADMIN_ROLE):
        chain.registry.submit_signed(call)  # an admin relays, but alice signed
    assert not chain.registry.is_committer(chain.bob.address)


# -- refusals -----------------------------------------------------------------------


def test_a_replayed_signature_is_refused(chain: Chain) -> None:
    with_committer(chain, chain.alice)
    call = signed_start(chain, chain.alice, 1)
    chain.as_(chain.bob).submit_signed(call)
    with expect_revert("InvalidAccountNonce", chain.alice.address, 1):
        chain.as_(chain.bob).submit_signed(call)
    with expect_revert("InvalidAccountNonce", chain.alice.address, 1):
        chain.registry.submit_signed(call)
    assert nonce_of(chain, chain.alice) == 1


def test_a_signature_with_a_future_nonce_is_refused(chain: Chain) -> None:
    with_committer(chain, chain.alice)
    call = signed_start(chain, chain.alice, 1, nonce=1)
    with expect_revert("InvalidAccountNonce", chain.alice.address, 0):
        chain.as_(chain.bob).submit_signed(call)
    assert nonce_of(chain, chain.alice) == 0


@pytest.mark.parametrize(
    "domain",
    [
        {"chain_id": 1},
        {"chain_id": 31338},
        {"name": "OtherRegistry"},
        {"version": "1"},
        {"contract": "0x" + "11" * 20},
    ],
    ids=["mainnet", "another-chain-id", "name", "version", "contract"],
)
def test_a_signature_for_another_domain_is_refused(chain: Chain, domain: dict[str, Any]) -> None:
    with_committer(chain, chain.alice)
    fields = {"chain_id": chain.w3.eth.chain_id, "contract": chain.registry.address, **domain}
    if "contract" in domain:
        fields["contract"] = chain.w3.to_checksum_address(domain["contract"])
    call = resigned(signed_start(chain, chain.alice, 1), chain.alice, **fields)
    recovered = recovered_by(chain.registry, call)
    assert recovered != chain.alice.address
    with expect_revert("RegistryInvalidSigner", chain.alice.address, recovered):
        chain.as_(chain.bob).submit_signed(call)
    assert nonce_of(chain, chain.alice) == 0
    assert not chain.registry.get_run(Registry.run_id_for(chain.alice.address, digest(1))).exists


def test_a_signature_made_with_another_chain_id_by_the_client_is_refused(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_committer(chain, chain.alice)
    real_chain_id = chain.w3.eth.chain_id
    with monkeypatch.context() as patch:
        patch.setattr(type(chain.w3.eth), "chain_id", property(lambda _self: 1))
        assert chain.w3.eth.chain_id == 1
        call = signed_start(chain, chain.alice, 1)
    assert chain.w3.eth.chain_id == real_chain_id
    recovered = recovered_by(chain.registry, call)
    with expect_revert("RegistryInvalidSigner", chain.alice.address, recovered):
        chain.as_(chain.bob).submit_signed(call)


def test_a_signature_for_another_registry_is_refused(chain: Chain) -> None:
    other, _ = Registry.deploy(chain.w3, chain.admin)
    other.grant_committer(chain.alice.address)
    with_committer(chain, chain.alice)
    call = signed_start(chain, chain.alice, 1)  # made for chain.registry
    recovered = recovered_by(other, call)
    assert recovered != chain.alice.address
    relay = Registry(chain.w3, other.address, chain.bob, other.deploy_block)
    with expect_revert("RegistryInvalidSigner", chain.alice.address, recovered):
        relay.submit_signed(call)
    assert not other.get_run(Registry.run_id_for(chain.alice.address, digest(1))).exists
    # The signature was good for the registry it was made for.
    tx = chain.as_(chain.bob).submit_signed(call)
    assert sole_event(chain, tx, "RunStarted")["committer"] == chain.alice.address


def test_an_expired_signature_is_refused(chain: Chain) -> None:
    with_committer(chain, chain.alice)
    deadline = latest_time(chain) - 1
    call = signed_start(chain, chain.alice, 1, deadline=deadline)
    with expect_revert("RegistrySignatureExpired", deadline):
        chain.as_(chain.bob).submit_signed(call)
    assert nonce_of(chain, chain.alice) == 0


def test_the_deadline_is_the_last_valid_block_time(chain: Chain) -> None:
    with_committer(chain, chain.alice)
    when = latest_time(chain) + 1000
    late = signed_start(chain, chain.alice, 1, deadline=when - 1)
    rpc_call(chain.rpc_url, "evm_setNextBlockTimestamp", [when])
    receipt = send_unchecked(chain, chain.bob, execute_fn(chain, late))
    assert int(chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]) == when
    assert (receipt["status"], receipt["logs"]) == (0, [])
    on_time = signed_start(chain, chain.alice, 1, deadline=when + 1)
    rpc_call(chain.rpc_url, "evm_setNextBlockTimestamp", [when + 1])
    receipt = send_unchecked(chain, chain.bob, execute_fn(chain, on_time))
    assert int(chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]) == when + 1
    assert receipt["status"] == 1
    assert nonce_of(chain, chain.alice) == 1


def test_a_signer_without_the_committer_role_is_refused(chain: Chain) -> None:
    call = signed_start(chain, chain.bob, 1)
    with expect_revert("AccessControlUnauthorizedAccount", chain.bob.address, COMMITTER_ROLE):
        chain.registry.submit_signed(call)  # the relayer holds the role; the signer does not
    assert nonce_of(chain, chain.bob) == 0
    assert not chain.registry.get_run(Registry.run_id_for(chain.bob.address, digest(1))).exists


@pytest.mark.parametrize("field", ["data", "signer", "nonce", "deadline"])
def test_a_call_changed_after_signing_is_refused(chain: Chain, field: str) -> None:
    with_committer(chain, chain.alice)
    call = signed_start(chain, chain.alice, 1)
    changed = {
        "data": {"data": signed_start(chain, chain.alice, 2).data},
        "signer": {"signer": chain.admin.address},
        "nonce": {"nonce": 1},
        "deadline": {"deadline": call.deadline + 1},
    }[field]
    tampered = replace(call, **changed)
    recovered = recovered_by(chain.registry, tampered)
    assert recovered not in (chain.alice.address, chain.admin.address)
    with expect_revert("RegistryInvalidSigner", tampered.signer, recovered):
        chain.as_(chain.bob).submit_signed(tampered)
    assert nonce_of(chain, chain.alice) == 0
    assert nonce_of(chain, chain.admin) == 0


def test_a_signature_by_someone_else_is_refused(chain: Chain) -> None:
    with_committer(chain, chain.alice)
    call = signed_start(chain, chain.alice, 1)
    forged = resigned(
        call, chain.bob, chain_id=chain.w3.eth.chain_id, contract=chain.registry.address
    )
    with expect_revert("RegistryInvalidSigner", chain.alice.address, chain.bob.address):
        chain.as_(chain.bob).submit_signed(forged)


def test_malformed_and_malleable_signatures_are_refused(chain: Chain) -> None:
    with_committer(chain, chain.alice)
    call = signed_start(chain, chain.alice, 1)
    r, s, v = call.signature[:32], int.from_bytes(call.signature[32:64], "big"), call.signature[64]
    malleated = r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])  # v: 27 <-> 28
    message = eip712_message(call, chain_id=chain.w3.eth.chain_id, contract=chain.registry.address)
    other_form = (55 - v, int.from_bytes(r, "big"), SECP256K1_N - s)
    # The same signer in the other (high-s) form of the signature, which OpenZeppelin refuses.
    assert Account.recover_message(message, vrs=other_form) == chain.alice.address
    for signature in (b"", call.signature[:64], b"\x00" * 65, malleated):
        with expect_revert("RegistryInvalidSigner", chain.alice.address, ZERO_ADDRESS):
            chain.as_(chain.bob).submit_signed(replace(call, signature=signature))
    assert nonce_of(chain, chain.alice) == 0


def test_a_nested_signed_call_is_refused(chain: Chain) -> None:
    with_committer(chain, chain.alice)
    inner = signed_start(chain, chain.alice, 1, nonce=1)
    outer = chain.registry.sign_call(
        chain.alice,
        "executeSigned",
        inner.signer,
        inner.nonce,
        inner.deadline,
        inner.data,
        inner.signature,
    )
    assert outer.nonce == 0
    with expect_revert("RegistryNestedSignedCall"):
        chain.as_(chain.bob).submit_signed(outer)
    receipt = send_unchecked(chain, chain.bob, execute_fn(chain, outer))
    assert (receipt["status"], receipt["logs"]) == (0, [])
    assert nonce_of(chain, chain.alice) == 0
    assert not chain.registry.get_run(Registry.run_id_for(chain.alice.address, digest(1))).exists


def test_the_inner_calls_refusal_bubbles_up(chain: Chain) -> None:
    alice = with_committer(chain, chain.alice)
    bob = chain.as_(chain.bob)
    run_id = started(alice, 1)
    alice.finalize_run(run_id, final(2))
    call = chain.registry.sign_call(chain.alice, "commitCheckpoint", run_id, as_tuple(leaf(1, 3)))
    with expect_revert("RegistryRunNotRunning", run_id, RunStatus.FINALIZED):
        bob.submit_signed(call)
    receipt = send_unchecked(chain, chain.bob, execute_fn(chain, call))
    assert (receipt["status"], receipt["logs"]) == (0, [])
    assert nonce_of(chain, chain.alice) == 0  # the whole call reverted, nonce included

    admins_run = started(chain.registry, 6)
    call = chain.registry.sign_call(chain.alice, "finalizeRun", admins_run, final(7).as_tuple())
    with expect_revert("RegistryNotRunCommitter", admins_run, chain.alice.address):
        bob.submit_signed(call)
    call = chain.registry.sign_call(chain.alice, "startRun", b"\x00" * 32, [])
    with expect_revert("RegistryZeroDigest"):
        bob.submit_signed(call)
    call = chain.registry.sign_call(chain.alice, "commitCheckpoints", [])
    with expect_revert("RegistryEmptyBatch"):
        bob.submit_signed(call)


def test_a_signed_call_leaves_no_signer_behind(chain: Chain) -> None:
    # After a relayed call, bob's own calls are bob's again (the signer is per call).
    with_committer(chain, chain.alice)
    bob = chain.as_(chain.bob)
    bob.submit_signed(signed_start(chain, chain.alice, 1))
    with expect_revert("AccessControlUnauthorizedAccount", chain.bob.address, COMMITTER_ROLE):
        bob.start_run(digest(2))


def test_signed_revoke_artifact_by_an_admin_and_by_a_non_admin(chain: Chain) -> None:
    dataset = digest(77)
    refused = chain.registry.sign_call(chain.alice, "revokeArtifact", dataset, "not an admin")
    with expect_revert("AccessControlUnauthorizedAccount", chain.alice.address, ADMIN_ROLE):
        chain.as_(chain.bob).submit_signed(refused)
    call = chain.registry.sign_call(chain.admin, "revokeArtifact", dataset, "licence withdrawn")
    tx = chain.as_(chain.bob).submit_signed(call)  # bob relays and pays; the admin revokes
    assert sole_event(chain, tx, "ArtifactRevoked") == {
        "digest": dataset,
        "revoker": chain.admin.address,
        "reason": "licence withdrawn",
    }
    assert chain.registry.contract.functions.isArtifactRevoked(dataset).call() is True
    assert nonce_of(chain, chain.admin) == 1


def test_signed_attest_replay_names_the_signer(chain: Chain) -> None:
    run_id = started(chain.registry, 1)
    call = chain.registry.sign_call(chain.alice, "attestReplay", run_id, 3, 9, True, digest(5))
    tx = chain.as_(chain.bob).submit_signed(call)
    args = sole_event(chain, tx, "ReplayAttested")
    assert (args["runId"], args["attester"], args["fromStep"], args["toStep"]) == (
        run_id,
        chain.alice.address,
        3,
        9,
    )
    assert nonce_of(chain, chain.alice) == 1
    unknown = chain.registry.sign_call(
        chain.alice, "attestReplay", digest(9), 0, 1, True, digest(5)
    )
    with expect_revert("RegistryUnknownRun", digest(9)):
        chain.as_(chain.bob).submit_signed(unknown)
