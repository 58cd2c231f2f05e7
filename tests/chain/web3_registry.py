"""An independent client of the on-chain ProvenanceRegistry, on web3.py 8: the tests' oracle.

ledger talks to the chain through its own transport, ABI codec and signer
(:mod:`ledger.chain.rpc`, :mod:`ledger.chain.abi`, :mod:`ledger.chain.sender`,
:mod:`ledger.chain.admin`); this client shares none of that code (web3, eth_abi,
eth_account instead), so where the tests compare the two, or record with one
and read with the other, a mistake in either shows. The ``chain`` fixture
deploys the registry with it.

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
from web3.exceptions import (
    ContractLogicError,
    TimeExhausted,
    Web3Exception,
)

from ledger.chain.compiler import load_artifact
from ledger.chain.records import (
    ADMIN_ROLE,
    COMMITTER_ROLE,
    ArtifactRevocation,
    EventLookups,
    FinalRecord,
    RunRecord,
    RunStatus,
    SignedCall,
    TxResult,
    WeightsRecord,
    record_leaf,
    record_of,
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
from ledger.hashing.merkle import CheckpointLeaf
from ledger.ids import Relation

__all__ = [
    "ADMIN_ROLE",
    "COMMITTER_ROLE",
    "FinalRecord",
    "Registry",
    "Relation",
    "RunRecord",
    "RunStatus",
    "SignedCall",
    "TxResult",
    "WeightsRecord",
    "connect_web3",
    "load_account",
    "record_leaf",
]


class Registry(EventLookups):
    """One deployed registry, optionally with a signing account."""

    def __init__(
        self,
        w3: Web3,
        address: str,
        account: LocalAccount | None = None,
        deploy_block: int = 0,
        abi: list[dict[str, Any]] | None = None,
    ) -> None:
        """``abi``: another registry version's (the committed artifact's by default)."""
        self.w3 = w3
        self.address = to_checksum_address(address)
        self.account = account
        self.deploy_block = deploy_block  # event scans start here
        self.abi: list[dict[str, Any]] = abi if abi is not None else load_artifact()["abi"]
        self.contract = w3.eth.contract(address=self.address, abi=self.abi)
        self._errors = _error_selectors(self.abi)
        self._chain_id: int | None = None

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
    def deploy(
        cls, w3: Web3, account: LocalAccount, artifact: dict[str, Any] | None = None
    ) -> tuple[Registry, TxResult]:
        """Deploy a new registry whose admin and first committer is ``account``
        (from ``artifact``, the committed one by default)."""
        artifact = artifact if artifact is not None else load_artifact()
        factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        probe = cls.__new__(cls)
        probe.w3, probe.account, probe._errors = w3, account, _error_selectors(artifact["abi"])
        probe._chain_id = None
        result, receipt = probe._send(factory.constructor(account.address), with_receipt=True)
        address = receipt["contractAddress"]
        return cls(w3, address, account, result.block_number, artifact["abi"]), result

    # -- writes ---------------------------------------------------------------

    def start_run(
        self, manifest_digest: bytes, parents: Sequence[tuple[bytes, Relation]] = ()
    ) -> tuple[bytes, TxResult]:
        fn = self.contract.functions.startRun(manifest_digest, _parents(parents))
        return self.run_id_for(self._signer().address, manifest_digest), self._send(fn)[0]

    def start_runs(
        self, requests: Sequence[tuple[bytes, Sequence[tuple[bytes, Relation]]]]
    ) -> tuple[list[bytes], TxResult]:
        """Start several runs in one transaction."""
        fn = self.contract.functions.startRuns([(m, _parents(p)) for m, p in requests])
        committer = self._signer().address
        return [self.run_id_for(committer, m) for m, _ in requests], self._send(fn)[0]

    def commit_checkpoint(self, run_id: bytes, checkpoint: CheckpointLeaf) -> TxResult:
        fn = self.contract.functions.commitCheckpoint(run_id, _checkpoint(checkpoint))
        return self._send(fn)[0]

    def commit_checkpoints(self, requests: Sequence[tuple[bytes, CheckpointLeaf]]) -> TxResult:
        """Commit several checkpoints (of one or more runs) in one transaction."""
        fn = self.contract.functions.commitCheckpoints(
            [(run_id, _checkpoint(c)) for run_id, c in requests]
        )
        return self._send(fn)[0]

    def finalize_run(self, run_id: bytes, record: FinalRecord) -> TxResult:
        return self._send(self.contract.functions.finalizeRun(run_id, record.as_tuple()))[0]

    def finalize_runs(self, requests: Sequence[tuple[bytes, FinalRecord]]) -> TxResult:
        fn = self.contract.functions.finalizeRuns([(r, f.as_tuple()) for r, f in requests])
        return self._send(fn)[0]

    def mark_failed(self, run_id: bytes, reason: str) -> TxResult:
        return self._send(self.contract.functions.markFailed(run_id, reason))[0]

    def revoke_run(self, run_id: bytes, reason: str) -> TxResult:
        return self._send(self.contract.functions.revokeRun(run_id, reason))[0]

    def revoke_artifact(self, digest: bytes, reason: str) -> TxResult:
        return self._send(self.contract.functions.revokeArtifact(digest, reason))[0]

    def attest_replay(
        self, run_id: bytes, from_step: int, to_step: int, reproduced: bool, report: bytes
    ) -> TxResult:
        fn = self.contract.functions.attestReplay(run_id, from_step, to_step, reproduced, report)
        return self._send(fn)[0]

    def grant_committer(self, account: str) -> TxResult:
        fn = self.contract.functions.grantRole(COMMITTER_ROLE, to_checksum_address(account))
        return self._send(fn)[0]

    def revoke_committer(self, account: str) -> TxResult:
        fn = self.contract.functions.revokeRole(COMMITTER_ROLE, to_checksum_address(account))
        return self._send(fn)[0]

    # -- signed calls -----------------------------------------------------------

    def sign_call(
        self,
        signer: LocalAccount,
        function: str,
        *args: Any,
        deadline: int | None = None,
        nonce: int | None = None,
    ) -> SignedCall:
        """``signer``'s EIP-712 signature of a call to ``function(*args)`` for any relayer."""
        data = bytes.fromhex(self.contract.encode_abi(function, args=list(args))[2:])
        if nonce is None:
            nonce = int(self._call(self.contract.functions.nonces(signer.address)))
        if deadline is None:
            deadline = int(self.w3.eth.get_block("latest")["timestamp"]) + 3600
        typed = {
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                "SignedCall": [
                    {"name": "signer", "type": "address"},
                    {"name": "nonce", "type": "uint256"},
                    {"name": "deadline", "type": "uint256"},
                    {"name": "data", "type": "bytes"},
                ],
            },
            "primaryType": "SignedCall",
            "domain": {
                "name": "ProvenanceRegistry",
                "version": "2",
                "chainId": self.w3.eth.chain_id,
                "verifyingContract": self.address,
            },
            "message": {
                "signer": signer.address,
                "nonce": nonce,
                "deadline": deadline,
                "data": data,
            },
        }
        signature = signer.sign_typed_data(full_message=typed).signature
        return SignedCall(signer.address, nonce, deadline, data, bytes(signature))

    def submit_signed(self, call: SignedCall) -> TxResult:
        """Relay a signed call; this client's account pays, the record names the signer."""
        fn = self.contract.functions.executeSigned(
            call.signer, call.nonce, call.deadline, call.data, call.signature
        )
        return self._send(fn)[0]

    # -- reads ----------------------------------------------------------------

    def get_run(self, run_id: bytes) -> RunRecord:
        return RunRecord.from_view(run_id, self._call(self.contract.functions.getRun(run_id)))

    def is_final_record(self, run_id: bytes, record: FinalRecord) -> bool:
        return bool(self._call(self.contract.functions.isFinalRecord(run_id, record.as_tuple())))

    def verify_checkpoint(
        self, run_id: bytes, record: FinalRecord, checkpoint: CheckpointLeaf, proof: Sequence[bytes]
    ) -> bool:
        """The contract's own check of a checkpoint's Merkle proof against the final record."""
        fn = self.contract.functions.verifyCheckpoint(
            run_id, record.as_tuple(), _checkpoint(checkpoint), list(proof)
        )
        return bool(self._call(fn))

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
        return [_event_dict(log) for log in logs]

    def artifact_revocations(self, digests: Sequence[bytes]) -> dict[bytes, ArtifactRevocation]:
        """The revoked ones of ``digests``: their ArtifactRevoked events, read through web3."""
        found: dict[bytes, ArtifactRevocation] = {}
        for digest in dict.fromkeys(bytes(d) for d in digests):
            if not self._call(self.contract.functions.isArtifactRevoked(digest)):
                continue
            logs = self.contract.events.ArtifactRevoked.get_logs(
                argument_filters={"digest": digest}, from_block=self.deploy_block
            )
            log = logs[-1]
            found[digest] = ArtifactRevocation(
                digest,
                int(log["blockNumber"]),
                "0x" + bytes(log["transactionHash"]).hex(),
                str(log["args"]["revoker"]),
                str(log["args"]["reason"]),
            )
        return found

    def all_events(self, name: str) -> list[dict[str, Any]]:
        """Every event ``name`` of the registry, oldest first."""
        event = getattr(self.contract.events, name)
        try:
            logs = event.get_logs(from_block=self.deploy_block)
        except (Web3Exception, OSError) as exc:
            raise ChainError(f"cannot read {name} events from {self.address}: {exc}") from exc
        return [_event_dict(log) for log in logs]

    def _find_weights(self, value: bytes, *, topic_index: int) -> list[WeightsRecord]:
        names = ("CheckpointCommitted", "RunFinalized")
        signatures = [getattr(self.contract.events, n).topic for n in names]
        topics: list[Any] = [signatures, None, None, None]
        topics[topic_index] = "0x" + value.hex()
        try:
            logs = self.w3.eth.get_logs(
                {"address": self.address, "fromBlock": self.deploy_block, "topics": topics}
            )
        except (Web3Exception, OSError) as exc:
            raise ChainError(f"cannot search the logs of {self.address}: {exc}") from exc
        records = []
        for log in logs:
            name = names[signatures.index("0x" + bytes(log["topics"][0]).hex())]
            event = getattr(self.contract.events, name)().process_log(log)
            records.append(record_of(name, _event_dict(event)))
        return records

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


def _parents(parents: Sequence[tuple[bytes, Relation]]) -> list[tuple[bytes, int]]:
    return [(run_id, int(relation)) for run_id, relation in parents]


def _checkpoint(leaf: CheckpointLeaf) -> tuple[int, bytes, bytes, bytes]:
    return (leaf.step, leaf.weights_digest, leaf.tensor_root, leaf.metrics_digest)


def _event_dict(log: Any) -> dict[str, Any]:
    return {
        **dict(log["args"]),
        "blockNumber": int(log["blockNumber"]),
        "logIndex": int(log["logIndex"]),
        "transactionHash": "0x" + bytes(log["transactionHash"]).hex(),
    }
