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

Status 1 alone proves nothing (a transaction to an address without code, or to
code that is not the registry, succeeds too), so every write checks the chain:
nothing is sent to an address without code (:class:`RegistryNotDeployedError`,
no nonce spent); a mined write must carry its expected event (``RunRevoked`` of
that run, ``RoleGranted`` of that role and account, a ``CheckpointCommitted``
per step, ...) from the registry's own address, else
:class:`RegistryNotDeployedError` says the contract there is not the registry;
a deployment must leave code at the created address. Granting a role the account
already holds (or revoking one it does not) sends nothing and returns None.

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
from ledger.chain.rpc import JsonRpc, as_bytes
from ledger.chain.sender import Receipt, RegistrySender, Signer
from ledger.config import Secret, Settings, resolve_private_key
from ledger.errors import ChainError, RegistryNotDeployedError
from ledger.hashing.keccak import keccak256
from ledger.hashing.merkle import CheckpointLeaf
from ledger.ids import Relation, to_hex

RECEIPT_TIMEOUT = 60.0

Want = tuple[str, dict[str, Any]]
"""An event a write must emit from the registry: its name and values it must carry
(``()`` for :meth:`RegistryAdmin.submit_signed`: any registry event)."""


class RegistryAdmin(RegistrySender):
    """A registry client whose writes each send one transaction and wait for it."""

    @classmethod
    def connect(
        cls, settings: Settings, secret: Secret | None = None, *, relay: bool = True
    ) -> RegistryAdmin:
        """The registry named by the settings, signing with ``secret`` (else the
        configured key, resolved for the chain's id); a configured relayer sends
        (and pays for) the writes unless ``relay`` is False."""
        sender = RegistrySender.connect(settings, secret, relay=relay)
        return cls(
            sender.rpc,
            sender.address,
            sender.signer,
            sender.chain_id,
            sender.deploy_block,
            relayer=sender.relayer,
            max_fee_per_gas=sender.max_fee_per_gas,
        )

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
        if rpc("eth_getCode", receipt.contract_address, "latest") in (None, "", "0x"):
            raise ChainError(
                f"deployment {receipt.tx_hash} succeeded but left no code at "
                f"{receipt.contract_address}",
                hint="check that the chain is an EVM chain that keeps contract code "
                "(and that the registry artifact is intact: `make contracts`)",
            )
        registry = cls(rpc, receipt.contract_address, signer, chain_id, receipt.block_number)
        return registry, _result(receipt)

    # -- the admin's writes -------------------------------------------------------------

    def revoke_run(self, run_id: bytes, reason: str) -> TxResult:
        """Revoke a run (its committer or an admin may); its descendants become tainted."""
        return self.transact("revokeRun", run_id, reason)

    def revoke_artifact(self, digest: bytes, reason: str) -> TxResult:
        """Revoke an artifact that is not a run, e.g. a dataset by the digest of its
        fingerprint's CID (admins only, once per digest)."""
        return self.transact("revokeArtifact", digest, reason)

    def attest_replay(
        self, run_id: bytes, from_step: int, to_step: int, reproduced: bool, report_digest: bytes
    ) -> TxResult:
        """Record on chain that this account replayed steps ``from_step``..``to_step``
        of ``run_id`` (any account may; readers choose whose attestations they trust)."""
        return self.transact("attestReplay", run_id, from_step, to_step, reproduced, report_digest)

    def grant_committer(self, account: str) -> TxResult | None:
        return self.grant_role(COMMITTER_ROLE, account)

    def revoke_committer(self, account: str) -> TxResult | None:
        return self.revoke_role(COMMITTER_ROLE, account)

    def grant_role(self, role: bytes, account: str) -> TxResult | None:
        """Grant ``role``; None (nothing sent) when ``account`` already holds it."""
        account = checksum_address(account)
        if self.has_role(role, account):
            return None
        return self.transact("grantRole", role, account)

    def revoke_role(self, role: bytes, account: str) -> TxResult | None:
        """Revoke ``role``; None (nothing sent) when ``account`` does not hold it."""
        account = checksum_address(account)
        if not self.has_role(role, account):
            return None
        return self.transact("revokeRole", role, account)

    def has_role(self, role: bytes, account: str) -> bool:
        return bool(self._call("hasRole", role, checksum_address(account))[0])

    def is_admin(self, account: str) -> bool:
        return self.has_role(ADMIN_ROLE, account)

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
        run_ids = [run_id_for(self.signer.address, m) for m, _ in requests]
        wants = [("RunStarted", {"runId": r}) for r in run_ids]
        return run_ids, self._transact_data(self.batch_call("start", requests), wants)

    def commit_checkpoint(self, run_id: bytes, checkpoint: CheckpointLeaf) -> TxResult:
        return self.transact("commitCheckpoint", run_id, astuple(checkpoint))

    def commit_checkpoints(self, requests: Sequence[tuple[bytes, CheckpointLeaf]]) -> TxResult:
        """Commit several checkpoints (of one or more runs) in one transaction."""
        wants = [("CheckpointCommitted", {"runId": r, "step": c.step}) for r, c in requests]
        return self._transact_data(self.batch_call("checkpoint", requests), wants)

    def finalize_run(self, run_id: bytes, record: FinalRecord) -> TxResult:
        return self.transact("finalizeRun", run_id, record.as_tuple())

    def finalize_runs(self, requests: Sequence[tuple[bytes, FinalRecord]]) -> TxResult:
        wants = [("RunFinalized", {"runId": r}) for r, _ in requests]
        return self._transact_data(self.batch_call("finalize", requests), wants)

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
        """``signer``'s EIP-712 signature of a call to ``function(*args)`` for any relayer
        (:meth:`~ledger.chain.sender.RegistrySender.sign_data`)."""
        data = self.abi.call(function, args)
        return self.sign_data(signer, data, deadline=deadline, nonce=nonce)

    def submit_signed(self, call: SignedCall) -> TxResult:
        """Relay a signed call; this client's account pays, the record names the signer."""
        args = (call.signer, call.nonce, call.deadline, call.data, call.signature)
        return self.transact("executeSigned", *args)

    # -- plumbing ---------------------------------------------------------------------

    def transact(self, function: str, *args: Any) -> TxResult:
        """Call ``function(*args)`` in one transaction and wait for its receipt.

        A refusal raises :class:`~ledger.errors.TransactionRevertedError` before
        anything is sent; a transaction mined but reverted raises :class:`ChainError`.
        """
        return self._transact_data(self.abi.call(function, args), self._wants(function, args))

    def _wants(self, function: str, args: Sequence[Any]) -> list[Want]:
        """The events a successful ``function(*args)`` emits from the registry."""
        if function == "startRun":
            return [("RunStarted", {"runId": run_id_for(self.signer.address, args[0])})]
        if function == "commitCheckpoint":
            return [("CheckpointCommitted", {"runId": args[0], "step": args[1][0]})]
        if function in ("finalizeRun", "markFailed", "revokeRun"):
            name = {"finalizeRun": "RunFinalized", "markFailed": "RunFailed"}.get(
                function, "RunRevoked"
            )
            return [(name, {"runId": args[0]})]
        if function == "revokeArtifact":
            return [("ArtifactRevoked", {"digest": args[0]})]
        if function == "attestReplay":
            return [("ReplayAttested", {"runId": args[0], "attester": self.signer.address})]
        if function in ("grantRole", "revokeRole"):
            name = "RoleGranted" if function == "grantRole" else "RoleRevoked"
            return [(name, {"role": args[0], "account": args[1]})]
        return [("", {})]  # any other write: at least one event of the registry's

    def _transact_data(self, data: bytes, wants: Sequence[Want]) -> TxResult:
        code = self.rpc("eth_getCode", self.address, "latest")
        if code in (None, "", "0x"):
            raise RegistryNotDeployedError(
                f"no contract at {self.address} on chain {self.chain_id} ({self.rpc.url}): "
                "nothing was sent",
                hint="the chain may have been reset; run `ledger deploy` again (the same key "
                "on a fresh chain deploys to the same address), or fix registry_address",
            )
        receipt = self._send(self.prepare(data).raw)
        missing = _missing(self, receipt, wants)
        if missing:
            raise RegistryNotDeployedError(
                f"transaction {receipt.tx_hash} succeeded but carries no {missing} event of "
                f"the registry at {self.address}: the contract there is not the registry, "
                "and nothing was recorded",
                hint="fix registry_address in config.json (or LEDGER_REGISTRY), "
                "or run `ledger deploy`",
            )
        return _result(receipt)

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


def _missing(registry: RegistryAdmin, receipt: Receipt, wants: Sequence[Want]) -> str:
    """The name of the first wanted event the receipt lacks ("" when none is missing):
    only logs from the registry's own address count."""
    found: list[tuple[str, dict[str, Any]]] = []
    for log in receipt.logs:
        if str(log.get("address", "")).lower() != registry.address.lower():
            continue
        try:
            decoded = registry.abi.decode_log(log)
        except ChainError:
            continue
        if decoded is not None:
            found.append(decoded)
    for name, values in wants:
        if not any(
            (not name or name == got)
            and all(_same(event.get(key), value) for key, value in values.items())
            for got, event in found
        ):
            return name or "registry"
    return ""


def _same(got: Any, wanted: Any) -> bool:
    if isinstance(wanted, str) and isinstance(got, str):
        return got.lower() == wanted.lower()
    if isinstance(wanted, bytes | bytearray) and isinstance(got, bytes | bytearray):
        return bytes(got) == bytes(wanted)
    return bool(got == wanted)


def deploy_registry(settings: Settings) -> tuple[RegistryAdmin, TxResult]:
    """Deploy a registry at the settings' chain, signed by the configured key (or
    Anvil's dev key on a local chain)."""
    rpc = JsonRpc(settings.rpc_url)
    signer = Signer(resolve_private_key(settings, rpc.chain_id()))
    return RegistryAdmin.deploy(rpc, signer)


def _result(receipt: Receipt) -> TxResult:
    return TxResult(receipt.tx_hash, receipt.block_number, receipt.gas_used)


__all__ = ["RegistryAdmin", "deploy_registry"]
