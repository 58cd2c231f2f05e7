"""What the registry stores, as plain values, and what a reader of it must offer.

Kept free of web3 so that read-only code (the verifier, :mod:`ledger.chain.reader`)
starts fast: the dataclasses, the run id derivation and the
:class:`RegistryView` protocol that :class:`~ledger.chain.reader.RegistryReader`
(and so the sender and admin clients built on it) satisfies.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ledger.config import Settings
from ledger.errors import ConfigError
from ledger.hashing.keccak import keccak256
from ledger.hashing.merkle import CheckpointLeaf

ZERO32 = b"\x00" * 32


COMMITTER_ROLE = keccak256(b"COMMITTER_ROLE")
ADMIN_ROLE = ZERO32


def checksum_address(address: str | bytes) -> str:
    """EIP-55 mixed-case form of a 20-byte address given as hex text or bytes."""
    raw = address.hex() if isinstance(address, bytes) else address.lower().removeprefix("0x")
    if len(raw) != 40 or any(c not in "0123456789abcdef" for c in raw):
        raise ValueError(f"{address!r} is not a 20-byte address")
    mask = keccak256(raw.encode()).hex()
    return "0x" + "".join(
        c.upper() if int(m, 16) >= 8 else c for c, m in zip(raw, mask[:40], strict=True)
    )


def configured_registry(settings: Settings, *, why: str = "") -> str:
    """The registry address the settings name, checksummed. A ConfigError when none
    is configured (``why`` says what that stops) or it is not an address."""
    if not settings.registry_address:
        raise ConfigError(
            "no registry address configured" + (f": {why}" if why else ""),
            hint="run `ledger deploy`, or set LEDGER_REGISTRY",
        )
    try:
        return checksum_address(settings.registry_address)
    except ValueError as exc:
        raise ConfigError(
            f"registry address {settings.registry_address!r} is not an address",
            hint="fix registry_address in config.json or LEDGER_REGISTRY",
        ) from exc


def check_chain_id(settings: Settings, chain_id: int) -> None:
    """A ConfigError when the chain that answers is not the one the config names."""
    if settings.chain_id is not None and settings.chain_id != chain_id:
        raise ConfigError(
            f"the config file names chain id {settings.chain_id} but {settings.rpc_url} "
            f"is chain {chain_id}",
            hint="point LEDGER_RPC_URL at the right chain, or run `ledger deploy` again",
        )


def run_id_for(committer: str, manifest_digest: bytes) -> bytes:
    """``keccak256(abi.encode(committer, manifestDigest))``, as the contract derives it."""
    address = bytes.fromhex(checksum_address(committer)[2:])
    return keccak256(b"\x00" * 12 + address + manifest_digest)


class RunStatus(enum.IntEnum):
    NONE = 0
    RUNNING = 1
    FINALIZED = 2
    FAILED = 3


@dataclass(frozen=True)
class RunRecord:
    """A run as ``getRun`` returns it.

    Registry 3 stores the blocks of the run's events (``start_block``,
    ``last_block``, ``revoked_block``: where a reader fetches them with
    single-block log queries); registry 2 stored the start time instead
    (``started_at``), and its block fields are None here. The start time of a
    registry-3 run is its start block's timestamp.
    """

    run_id: bytes
    committer: str
    status: RunStatus
    revoked: bool
    final_commitment: bytes
    start_block: int | None = None
    last_block: int | None = None
    revoked_block: int | None = None
    started_at: int | None = None

    @classmethod
    def from_view(cls, run_id: bytes, values: Sequence[Any]) -> RunRecord:
        """The record from ``getRun``'s decoded return values, in the struct's order
        (seven fields: registry 3; five: registry 2)."""
        if len(values) == 5:
            committer, started_at, status, revoked, commitment = values
            return cls(
                run_id=run_id,
                committer=checksum_address(str(committer)),
                status=RunStatus(status),
                revoked=bool(revoked),
                final_commitment=bytes(commitment),
                started_at=int(started_at),
            )
        committer, status, revoked, start, last, revoked_at, commitment = values
        return cls(
            run_id=run_id,
            committer=checksum_address(str(committer)),
            status=RunStatus(status),
            revoked=bool(revoked),
            final_commitment=bytes(commitment),
            start_block=int(start),
            last_block=int(last),
            revoked_block=int(revoked_at),
        )

    @property
    def exists(self) -> bool:
        return self.status is not RunStatus.NONE


@dataclass(frozen=True)
class FinalRecord:
    """What a run is finalized with; the contract stores ``keccak256(abi.encode(...))``."""

    weights_digest: bytes
    tensor_root: bytes
    metrics_digest: bytes
    checkpoint_root: bytes
    checkpoint_count: int

    def as_tuple(self) -> tuple[bytes, bytes, bytes, bytes, int]:
        return (
            self.weights_digest,
            self.tensor_root,
            self.metrics_digest,
            self.checkpoint_root,
            self.checkpoint_count,
        )

    @property
    def commitment(self) -> bytes:
        # abi.encode of a static struct: its five fields, one 32-byte word each
        return keccak256(
            self.weights_digest
            + self.tensor_root
            + self.metrics_digest
            + self.checkpoint_root
            + self.checkpoint_count.to_bytes(32, "big")
        )


@dataclass(frozen=True)
class WeightsRecord:
    """A weights digest as recorded by one event: a checkpoint or a run's final weights."""

    run_id: bytes
    is_final: bool
    step: int | None
    weights_digest: bytes
    tensor_root: bytes
    metrics_digest: bytes
    block_number: int
    tx_hash: str
    final: FinalRecord | None = None
    log_index: int = 0

    @property
    def position(self) -> tuple[int, int]:
        """Where the record sits in the chain's history: (block, log index)."""
        return (self.block_number, self.log_index)


@dataclass(frozen=True)
class ArtifactRevocation:
    """An artifact (a dataset, by its CID's digest) revoked on chain: ``ArtifactRevoked``."""

    digest: bytes
    block_number: int
    tx_hash: str
    revoker: str
    reason: str


@dataclass(frozen=True)
class SignedCall:
    """A registry call signed off chain (EIP-712), ready for any relayer."""

    signer: str
    nonce: int
    deadline: int
    data: bytes
    signature: bytes


@dataclass(frozen=True)
class TxResult:
    tx_hash: str
    block_number: int
    gas_used: int


def record_of(name: str, event: dict[str, Any]) -> WeightsRecord:
    """The record a decoded ``CheckpointCommitted`` or ``RunFinalized`` event makes."""
    final = None
    if name == "RunFinalized":
        final = FinalRecord(
            bytes(event["weightsDigest"]),
            bytes(event["tensorRoot"]),
            bytes(event["metricsDigest"]),
            bytes(event["checkpointRoot"]),
            int(event["checkpointCount"]),
        )
    return WeightsRecord(
        run_id=bytes(event["runId"]),
        is_final=final is not None,
        step=None if final is not None else int(event["step"]),
        weights_digest=bytes(event["weightsDigest"]),
        tensor_root=bytes(event["tensorRoot"]),
        metrics_digest=bytes(event["metricsDigest"]),
        block_number=int(event["blockNumber"]),
        tx_hash=str(event["transactionHash"]),
        final=final,
        log_index=int(event.get("logIndex", 0)),
    )


def record_leaf(record: WeightsRecord) -> CheckpointLeaf:
    """The Merkle leaf of a checkpoint record."""
    return CheckpointLeaf(
        record.step or 0, record.weights_digest, record.tensor_root, record.metrics_digest
    )


def dedupe_checkpoints(records: list[WeightsRecord]) -> list[WeightsRecord]:
    """Checkpoint records in order, re-sent duplicates (same leaf) dropped."""
    seen: set[CheckpointLeaf] = set()
    kept = []
    for record in records:
        leaf = record_leaf(record)
        if leaf not in seen:
            seen.add(leaf)
            kept.append(record)
    return kept


class EventLookups:
    """Weights lookups built on two primitives each registry client implements:
    ``events(name, run_id)`` and ``_find_weights(value, topic_index=...)`` (one
    ``eth_getLogs`` over the weights events' indexed topics)."""

    def events(self, name: str, run_id: bytes) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _find_weights(self, value: bytes, *, topic_index: int) -> list[WeightsRecord]:
        raise NotImplementedError

    def all_events(self, name: str) -> list[dict[str, Any]]:
        """Every event ``name`` of the registry, oldest first (one ``eth_getLogs``)."""
        raise NotImplementedError

    def has_revocations(self) -> bool:
        """Whether any run of the registry was ever revoked."""
        return bool(self.all_events("RunRevoked"))

    def find_by_weights(self, digest: bytes) -> list[WeightsRecord]:
        """Every record of a weights file CID digest, oldest first (one ``eth_getLogs``)."""
        return self._find_weights(digest, topic_index=2)

    def find_by_tensor_root(self, root: bytes) -> list[WeightsRecord]:
        """Every record of a tensor root, oldest first; a zero root ("not a tensor
        file") finds nothing."""
        if root == ZERO32:
            return []
        return self._find_weights(root, topic_index=3)

    def checkpoints(self, run_id: bytes) -> list[WeightsRecord]:
        """A run's checkpoint records in commit order, re-sent duplicates dropped."""
        events = self.events("CheckpointCommitted", run_id)
        return dedupe_checkpoints([record_of("CheckpointCommitted", e) for e in events])

    def final_record(self, run_id: bytes) -> WeightsRecord | None:
        """A run's final weights record, if it was finalized."""
        events = self.events("RunFinalized", run_id)
        return record_of("RunFinalized", events[0]) if events else None


class RegistryView(Protocol):
    """The registry's read side, as the verifier uses it."""

    def get_run(self, run_id: bytes) -> RunRecord:
        """The run's stored record (status ``NONE`` when there is no such run)."""
        ...

    def find_by_weights(self, digest: bytes) -> list[WeightsRecord]:
        """Every record of a weights file CID digest, oldest first."""
        ...

    def find_by_tensor_root(self, root: bytes) -> list[WeightsRecord]:
        """Every record of a tensor root, oldest first; none for a zero root."""
        ...

    def checkpoints(self, run_id: bytes) -> list[WeightsRecord]:
        """A run's checkpoint records in commit order, re-sent duplicates dropped."""
        ...

    def final_record(self, run_id: bytes) -> WeightsRecord | None:
        """A run's final weights record, if it was finalized."""
        ...

    def is_final_record(self, run_id: bytes, record: FinalRecord) -> bool:
        """Whether ``record`` matches the final commitment stored for the run."""
        ...

    def verify_checkpoint(
        self,
        run_id: bytes,
        record: FinalRecord,
        checkpoint: CheckpointLeaf,
        proof: Sequence[bytes],
    ) -> bool:
        """The registry's own check of a checkpoint's Merkle proof."""
        ...

    def is_committer(self, account: str) -> bool:
        """Whether ``account`` holds the committer role now."""
        ...

    def has_revocations(self) -> bool:
        """Whether any run of the registry was ever revoked."""
        ...

    def events(self, name: str, run_id: bytes) -> list[dict[str, Any]]:
        """Decoded events ``name`` of one run, oldest first, with ``blockNumber``
        and ``transactionHash`` (``0x`` hex)."""
        ...

    def artifact_revocations(self, digests: Sequence[bytes]) -> dict[bytes, ArtifactRevocation]:
        """The revocations on chain of those of ``digests`` that are revoked (datasets)."""
        ...
