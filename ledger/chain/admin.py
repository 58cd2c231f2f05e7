"""Synchronous registry writes: deploy, revoke, roles, and one-off records.

:class:`RegistryAdmin` extends the outbox's :class:`~ledger.chain.sender.RegistrySender`
(EIP-1559 transactions signed with libsecp256k1, gas estimated first so a refusal
names the contract's error) with writes that wait for their receipt:

- the admin's: deploying a registry (:func:`deploy_registry`, ``ledger deploy``),
  revoking a run (``ledger revoke``), granting and revoking the committer role;
- one record at a time (start, checkpoint, finalize, fail, and their batches),
  for scripts and benchmarks that want the receipt in hand (training goes
  through the durable outbox instead);
- EIP-712 signed calls (:meth:`RegistryAdmin.sign_call`) that any account may
  relay (:meth:`RegistryAdmin.submit_signed`), the record naming the signer.

No web3: a test checks every write against an independent web3.py client.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple
from typing import Any

from ledger.chain.compiler import load_artifact
from ledger.chain.records import (
    ADMIN_ROLE,
    COMMITTER_ROLE,
    FinalRecord,
    SignedCall,
    TxResult,
    checksum_address,
    run_id_for,
)
from ledger.chain.rpc import JsonRpc, as_bytes, as_int
from ledger.chain.sender import Receipt, RegistrySender, Signer
from ledger.config import Secret, Settings, resolve_private_key
from ledger.errors import ChainError
from ledger.hashing.keccak import keccak256
from ledger.hashing.merkle import CheckpointLeaf
from ledger.ids import Relation, to_hex

RECEIPT_TIMEOUT = 60.0

_DOMAIN_TYPE = keccak256(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
_SIGNED_CALL_TYPE = keccak256(
    b"SignedCall(address signer,uint256 nonce,uint256 deadline,bytes data)"
)


class RegistryAdmin(RegistrySender):
    """A registry client whose writes each send one transaction and wait for it."""

    _domain: bytes | None = None

    @classmethod
    def connect(cls, settings: Settings, secret: Secret | None = None) -> RegistryAdmin:
        """The registry named by the settings, signing with ``secret`` (else the
        configured key, resolved for the chain's id)."""
        sender = RegistrySender.connect(settings, secret)
        return cls(sender.rpc, sender.address, sender.signer, sender.chain_id, sender.deploy_block)

    @classmethod
    def deploy(
        cls, rpc: JsonRpc, signer: Signer, *, timeout: float = RECEIPT_TIMEOUT
    ) -> tuple[RegistryAdmin, TxResult]:
        """Deploy a new registry whose admin and first committer is ``signer``."""
        chain_id = rpc.chain_id()
        creator = cls(rpc, signer.address, signer, chain_id)  # no registry yet: only sends
        artifact = load_artifact()
        init = as_bytes(artifact["bytecode"]) + creator.abi.constructor_args([signer.address])
        receipt = creator._send(creator.prepare(init, create=True).raw, timeout=timeout)
        if receipt.contract_address is None:
            raise ChainError(f"deployment {receipt.tx_hash} created no contract")
        registry = cls(rpc, receipt.contract_address, signer, chain_id, receipt.block_number)
        return registry, _result(receipt)

    # -- the admin's writes -------------------------------------------------------------

    def revoke_run(self, run_id: bytes, reason: str) -> TxResult:
        """Revoke a run (its committer or an admin may); its descendants become tainted."""
        return self.transact("revokeRun", run_id, reason)

    def grant_committer(self, account: str) -> TxResult:
        return self.transact("grantRole", COMMITTER_ROLE, checksum_address(account))

    def revoke_committer(self, account: str) -> TxResult:
        return self.transact("revokeRole", COMMITTER_ROLE, checksum_address(account))

    def is_admin(self, account: str) -> bool:
        return bool(self._call("hasRole", ADMIN_ROLE, checksum_address(account))[0])

    def version(self) -> str:
        return str(self._call("version")[0])

    # -- one record at a time -------------------------------------------------------------

    def start_run(
        self, manifest_digest: bytes, parents: Sequence[tuple[bytes, Relation]] = ()
    ) -> tuple[bytes, TxResult]:
        tx = self.transact("startRun", manifest_digest, [(p, int(r)) for p, r in parents])
        return run_id_for(self.signer.address, manifest_digest), tx

    def start_runs(
        self, requests: Sequence[tuple[bytes, Sequence[tuple[bytes, Relation]]]]
    ) -> tuple[list[bytes], TxResult]:
        """Start several runs in one transaction."""
        tx = self._transact_data(self.batch_call("start", requests))
        return [run_id_for(self.signer.address, m) for m, _ in requests], tx

    def commit_checkpoint(self, run_id: bytes, checkpoint: CheckpointLeaf) -> TxResult:
        return self.transact("commitCheckpoint", run_id, astuple(checkpoint))

    def commit_checkpoints(self, requests: Sequence[tuple[bytes, CheckpointLeaf]]) -> TxResult:
        """Commit several checkpoints (of one or more runs) in one transaction."""
        return self._transact_data(self.batch_call("checkpoint", requests))

    def finalize_run(self, run_id: bytes, record: FinalRecord) -> TxResult:
        return self.transact("finalizeRun", run_id, record.as_tuple())

    def finalize_runs(self, requests: Sequence[tuple[bytes, FinalRecord]]) -> TxResult:
        return self._transact_data(self.batch_call("finalize", requests))

    def mark_failed(self, run_id: bytes, reason: str) -> TxResult:
        return self.transact("markFailed", run_id, reason)

    # -- signed calls (EIP-712) -------------------------------------------------------------

    def sign_call(
        self,
        signer: Signer,
        function: str,
        *args: Any,
        deadline: int | None = None,
        nonce: int | None = None,
    ) -> SignedCall:
        """``signer``'s EIP-712 signature of a call to ``function(*args)`` for any relayer."""
        data = self.abi.call(function, args)
        if nonce is None:
            nonce = int(self._call("nonces", signer.address)[0])
        if deadline is None:
            block = self.rpc("eth_getBlockByNumber", "latest", False) or {}
            deadline = as_int(block.get("timestamp", "0x0")) + 3600
        struct = keccak256(
            _SIGNED_CALL_TYPE
            + _word(as_bytes(signer.address))
            + _word(nonce)
            + _word(deadline)
            + keccak256(data)
        )
        digest = keccak256(b"\x19\x01" + self._domain_separator() + struct)
        return SignedCall(signer.address, nonce, deadline, data, signer.sign_digest(digest))

    def submit_signed(self, call: SignedCall) -> TxResult:
        """Relay a signed call; this client's account pays, the record names the signer."""
        args = (call.signer, call.nonce, call.deadline, call.data, call.signature)
        return self.transact("executeSigned", *args)

    def _domain_separator(self) -> bytes:
        """The registry's EIP-712 domain, as it reports it (EIP-5267 ``eip712Domain``)."""
        if self._domain is None:
            _, name, version, chain_id, contract, _, _ = self._call("eip712Domain")
            self._domain = keccak256(
                _DOMAIN_TYPE
                + keccak256(str(name).encode())
                + keccak256(str(version).encode())
                + _word(int(chain_id))
                + _word(as_bytes(contract))
            )
        return self._domain

    # -- plumbing ---------------------------------------------------------------------

    def transact(self, function: str, *args: Any) -> TxResult:
        """Call ``function(*args)`` in one transaction and wait for its receipt.

        A refusal raises :class:`~ledger.errors.TransactionRevertedError` before
        anything is sent; a transaction mined but reverted raises :class:`ChainError`.
        """
        return self._transact_data(self.abi.call(function, args))

    def _transact_data(self, data: bytes) -> TxResult:
        return _result(self._send(self.prepare(data).raw))

    def _send(self, raw: bytes, *, timeout: float = RECEIPT_TIMEOUT) -> Receipt:
        """Broadcast a signed transaction and wait until it is mined."""
        tx_hash = to_hex(keccak256(raw))
        self.broadcast(raw)
        receipt = self.wait_for_receipt(tx_hash, timeout)
        if receipt is None:
            raise ChainError(f"no receipt within {timeout:.0f} s for transaction {tx_hash}")
        if not receipt.ok:
            raise ChainError(f"transaction {tx_hash} reverted on chain")
        return receipt


def deploy_registry(settings: Settings) -> tuple[RegistryAdmin, TxResult]:
    """Deploy a registry at the settings' chain, signed by the configured key (or
    Anvil's dev key on a local chain)."""
    rpc = JsonRpc(settings.rpc_url)
    signer = Signer(resolve_private_key(settings, rpc.chain_id()))
    return RegistryAdmin.deploy(rpc, signer)


def _result(receipt: Receipt) -> TxResult:
    return TxResult(receipt.tx_hash, receipt.block_number, receipt.gas_used)


def _word(value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        return value.rjust(32, b"\x00")
    return value.to_bytes(32, "big")


__all__ = ["RegistryAdmin", "deploy_registry"]
