"""Typed client of the on-chain ProvenanceRegistry (web3.py 8).

Transactions are signed locally with the committer's key and sent raw; gas is
estimated first, so a refusal surfaces before anything is sent, as a
:class:`~ledger.errors.TransactionRevertedError` that names the contract's
custom error and its arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from eth_abi.abi import decode as abi_decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3 import Web3
from web3.exceptions import ContractLogicError, TimeExhausted, Web3Exception

from ledger.chain.compiler import load_artifact
from ledger.chain.records import (
    ADMIN_ROLE,
    COMMITTER_ROLE,
    ZERO32,
    Relation,
    RunRecord,
    RunStatus,
    TxResult,
    WeightsRecord,
    run_id_for,
)
from ledger.config import Settings, resolve_private_key
from ledger.errors import (
    ChainError,
    ChainUnavailableError,
    ConfigError,
    RegistryNotDeployedError,
    TransactionRevertedError,
)

__all__ = [
    "ADMIN_ROLE",
    "COMMITTER_ROLE",
    "Registry",
    "Relation",
    "RunRecord",
    "RunStatus",
    "TxResult",
    "WeightsRecord",
    "connect_web3",
    "load_account",
]


class Registry:
    """One deployed registry, optionally with a signing account."""

    def __init__(
        self, w3: Web3, address: str, account: LocalAccount | None = None, deploy_block: int = 0
    ) -> None:
        artifact = load_artifact()
        self.w3 = w3
        self.address = to_checksum_address(address)
        self.account = account
        self.deploy_block = deploy_block  # event scans start here
        self.abi: list[dict[str, Any]] = artifact["abi"]
        self.contract = w3.eth.contract(address=self.address, abi=self.abi)
        self._errors = _error_selectors(self.abi)

    # -- construction ---------------------------------------------------------

    @classmethod
    def connect(cls, settings: Settings, *, signer: bool = True) -> Registry:
        """The registry named by the settings; checks that code is deployed there."""
        w3 = connect_web3(settings.rpc_url)
        if not settings.registry_address:
            raise ConfigError(
                "no registry address configured",
                hint="run `ledger deploy`, or set LEDGER_REGISTRY",
            )
        chain_id = w3.eth.chain_id
        if settings.chain_id is not None and settings.chain_id != chain_id:
            raise ConfigError(
                f"the config file names chain id {settings.chain_id} but {settings.rpc_url} "
                f"is chain {chain_id}",
                hint="point LEDGER_RPC_URL at the right chain, or run `ledger deploy` again",
            )
        address = to_checksum_address(settings.registry_address)
        if not w3.eth.get_code(address):
            raise RegistryNotDeployedError(
                f"no contract at {address} on chain {chain_id} ({settings.rpc_url})",
                hint="the chain may have been reset; run `ledger deploy` again",
            )
        account = load_account(settings, chain_id) if signer else None
        return cls(w3, address, account, settings.deploy_block or 0)

    @classmethod
    def deploy(cls, w3: Web3, account: LocalAccount) -> tuple[Registry, TxResult]:
        """Deploy a new registry whose admin and first committer is ``account``."""
        artifact = load_artifact()
        factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        probe = cls.__new__(cls)
        probe.w3, probe.account, probe._errors = w3, account, _error_selectors(artifact["abi"])
        result, receipt = probe._send(factory.constructor(account.address), with_receipt=True)
        address = receipt["contractAddress"]
        return cls(w3, address, account, result.block_number), result

    # -- writes ---------------------------------------------------------------

    def start_run(
        self, manifest_digest: bytes, parents: Sequence[tuple[bytes, Relation]] = ()
    ) -> tuple[bytes, TxResult]:
        fn = self.contract.functions.startRun(
            manifest_digest, [(pid, int(rel)) for pid, rel in parents]
        )
        return self.run_id_for(self._signer().address, manifest_digest), self._send(fn)[0]

    def commit_checkpoint(
        self,
        run_id: bytes,
        step: int,
        weights_digest: bytes,
        tensor_root: bytes,
        metrics_digest: bytes,
    ) -> TxResult:
        fn = self.contract.functions.commitCheckpoint(
            run_id, step, weights_digest, tensor_root, metrics_digest
        )
        return self._send(fn)[0]

    def finalize_run(
        self,
        run_id: bytes,
        weights_digest: bytes,
        tensor_root: bytes,
        metrics_digest: bytes,
        checkpoint_root: bytes,
        checkpoint_count: int,
    ) -> TxResult:
        fn = self.contract.functions.finalizeRun(
            run_id, weights_digest, tensor_root, metrics_digest, checkpoint_root, checkpoint_count
        )
        return self._send(fn)[0]

    def mark_failed(self, run_id: bytes, reason: str) -> TxResult:
        return self._send(self.contract.functions.markFailed(run_id, reason))[0]

    def revoke_run(self, run_id: bytes, reason: str) -> TxResult:
        return self._send(self.contract.functions.revokeRun(run_id, reason))[0]

    def grant_committer(self, account: str) -> TxResult:
        fn = self.contract.functions.grantRole(COMMITTER_ROLE, to_checksum_address(account))
        return self._send(fn)[0]

    def revoke_committer(self, account: str) -> TxResult:
        fn = self.contract.functions.revokeRole(COMMITTER_ROLE, to_checksum_address(account))
        return self._send(fn)[0]

    # -- reads ----------------------------------------------------------------

    def get_run(self, run_id: bytes) -> RunRecord:
        raw = self._call(self.contract.functions.getRun(run_id))
        committer, started_at, status, revoked, manifest, root = raw
        return RunRecord(
            run_id=run_id,
            committer=to_checksum_address(committer),
            started_at=int(started_at),
            status=RunStatus(status),
            revoked=bool(revoked),
            manifest_digest=bytes(manifest),
            checkpoint_root=bytes(root),
        )

    def find_by_weights(self, digest: bytes) -> WeightsRecord | None:
        return _weights_record(self._call(self.contract.functions.findByWeights(digest)))

    def find_by_tensor_root(self, root: bytes) -> WeightsRecord | None:
        return _weights_record(self._call(self.contract.functions.findByTensorRoot(root)))

    def is_committer(self, account: str) -> bool:
        fn = self.contract.functions.hasRole(COMMITTER_ROLE, to_checksum_address(account))
        return bool(self._call(fn))

    def is_admin(self, account: str) -> bool:
        fn = self.contract.functions.hasRole(ADMIN_ROLE, to_checksum_address(account))
        return bool(self._call(fn))

    def version(self) -> str:
        return str(self._call(self.contract.functions.version()))

    @staticmethod
    def run_id_for(committer: str, manifest_digest: bytes) -> bytes:
        """``keccak256(abi.encode(committer, manifestDigest))``, as the contract derives it."""
        return run_id_for(committer, manifest_digest)

    def events(self, name: str, run_id: bytes) -> list[dict[str, Any]]:
        """Decoded events ``name`` of one run, oldest first."""
        event = getattr(self.contract.events, name)
        try:
            logs = event.get_logs(argument_filters={"runId": run_id}, from_block=self.deploy_block)
        except (Web3Exception, OSError) as exc:
            raise ChainError(f"cannot read {name} events from {self.address}: {exc}") from exc
        return [
            {
                **dict(log["args"]),
                "blockNumber": log["blockNumber"],
                "transactionHash": "0x" + bytes(log["transactionHash"]).hex(),
            }
            for log in logs
        ]

    # -- plumbing -------------------------------------------------------------

    def _signer(self) -> LocalAccount:
        if self.account is None:
            raise ConfigError("this registry client has no signing key")
        return self.account

    def _call(self, fn: Any) -> Any:
        try:
            return fn.call()
        except ContractLogicError as exc:
            raise self._revert_error(exc) from exc
        except (Web3Exception, OSError) as exc:
            raise ChainUnavailableError(f"call to {self.address} failed: {exc}") from exc

    def _send(self, fn: Any, *, with_receipt: bool = False) -> tuple[TxResult, Any]:
        account = self._signer()
        w3 = self.w3
        try:
            params: dict[str, Any] = {"from": account.address}
            gas = fn.estimate_gas(params)
            params.update(
                gas=int(gas * 1.2) + 10_000,
                nonce=w3.eth.get_transaction_count(account.address, "pending"),
                chainId=w3.eth.chain_id,
            )
            tx = fn.build_transaction(params)
            signed = account.sign_transaction(tx)
            tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
            receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60, poll_latency=0.05)
        except ContractLogicError as exc:
            raise self._revert_error(exc) from exc
        except TimeExhausted as exc:
            raise ChainError(f"no receipt within 60 s for a transaction to {w3.provider}") from exc
        except (Web3Exception, OSError) as exc:
            raise ChainUnavailableError(f"transaction failed to send: {exc}") from exc
        if receipt["status"] != 1:
            raise ChainError(f"transaction {tx_hash.hex()} reverted on chain")
        result = TxResult(
            tx_hash="0x" + bytes(tx_hash).hex(),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
        )
        return result, receipt

    def _revert_error(self, exc: ContractLogicError) -> TransactionRevertedError:
        data = exc.data if isinstance(exc.data, str) else None
        if data and data.startswith("0x") and len(data) >= 10:
            selector = bytes.fromhex(data[2:10])
            if selector in self._errors:
                name, types = self._errors[selector]
                args = tuple(
                    to_checksum_address(a) if t == "address" else a
                    for t, a in zip(types, abi_decode(types, bytes.fromhex(data[10:])), strict=True)
                )
                shown = ", ".join(_show(a) for a in args)
                return TransactionRevertedError(
                    f"the registry refused: {name}({shown})", error_name=name, args=args
                )
        return TransactionRevertedError(
            f"the registry refused: {exc.message or exc}", error_name="Unknown"
        )


def connect_web3(rpc_url: str) -> Web3:
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 10}))
    try:
        w3.eth.chain_id  # noqa: B018  (first request: fails fast if nothing answers)
    except (Web3Exception, OSError) as exc:
        raise ChainUnavailableError(
            f"no chain answers at {rpc_url}",
            hint="start one with `ledger chain up`, or set LEDGER_RPC_URL",
        ) from exc
    return w3


def load_account(settings: Settings, chain_id: int) -> LocalAccount:
    key = resolve_private_key(settings, chain_id)
    try:
        return cast(LocalAccount, Account.from_key(key.reveal()))
    except (ValueError, TypeError) as exc:
        raise ConfigError("the configured private key is not a valid secp256k1 key") from exc


def _error_selectors(abi: list[dict[str, Any]]) -> dict[bytes, tuple[str, list[str]]]:
    table: dict[bytes, tuple[str, list[str]]] = {}
    for item in abi:
        if item.get("type") != "error":
            continue
        types = [str(i["type"]) for i in item.get("inputs", [])]
        signature = f"{item['name']}({','.join(types)})"
        table[keccak(text=signature)[:4]] = (item["name"], types)
    return table


def _show(value: object) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


def _weights_record(raw: Any) -> WeightsRecord | None:
    run_id, is_final, step = raw
    if bytes(run_id) == ZERO32:
        return None
    return WeightsRecord(run_id=bytes(run_id), is_final=bool(is_final), step=int(step))
