"""What the registry stores, as plain values, and what a reader of it must offer.

Kept free of web3 so that read-only code (the verifier, :mod:`ledger.chain.reader`)
starts fast: the dataclasses, the run id derivation and the
:class:`RegistryView` protocol that both :class:`~ledger.chain.registry.Registry`
(web3, can sign) and :class:`~ledger.chain.reader.RegistryReader` (plain
JSON-RPC, read-only) satisfy.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Protocol

from Crypto.Hash import keccak as _keccak

ZERO32 = b"\x00" * 32


def keccak256(data: bytes) -> bytes:
    """Ethereum's keccak-256 (not NIST SHA3-256)."""
    return _keccak.new(data=data, digest_bits=256).digest()


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


def run_id_for(committer: str, manifest_digest: bytes) -> bytes:
    """``keccak256(abi.encode(committer, manifestDigest))``, as the contract derives it."""
    address = bytes.fromhex(checksum_address(committer)[2:])
    return keccak256(b"\x00" * 12 + address + manifest_digest)


class RunStatus(enum.IntEnum):
    NONE = 0
    RUNNING = 1
    FINALIZED = 2
    FAILED = 3


class Relation(enum.IntEnum):
    """How a run derives from a parent; values match the contract's enum."""

    NONE = 0
    FINE_TUNE = 1
    DISTILLATION = 2
    PRUNING = 3
    QUANTIZATION = 4
    RESUME = 5
    SWEEP_TRIAL = 6
    OTHER = 7

    @classmethod
    def parse(cls, text: str) -> Relation:
        key = text.strip().upper().replace("-", "_")
        if key in cls.__members__ and key != "NONE":
            return cls[key]
        names = ", ".join(m.name.lower().replace("_", "-") for m in cls if m is not cls.NONE)
        raise ValueError(f"unknown relation {text!r}; use one of: {names}")


@dataclass(frozen=True)
class RunRecord:
    run_id: bytes
    committer: str
    started_at: int
    status: RunStatus
    revoked: bool
    manifest_digest: bytes
    checkpoint_root: bytes

    @property
    def exists(self) -> bool:
        return self.status is not RunStatus.NONE


@dataclass(frozen=True)
class WeightsRecord:
    run_id: bytes
    is_final: bool
    step: int


@dataclass(frozen=True)
class TxResult:
    tx_hash: str
    block_number: int
    gas_used: int


class RegistryView(Protocol):
    """The registry's read side, as the verifier uses it."""

    def get_run(self, run_id: bytes) -> RunRecord:
        """The run's record (status ``NONE`` when there is no such run)."""
        ...

    def find_by_weights(self, digest: bytes) -> WeightsRecord | None:
        """The run whose checkpoint or final weights have this file digest."""
        ...

    def find_by_tensor_root(self, root: bytes) -> WeightsRecord | None:
        """The run whose checkpoint or final weights have this tensor root."""
        ...

    def is_committer(self, account: str) -> bool:
        """Whether ``account`` holds the committer role now."""
        ...

    def events(self, name: str, run_id: bytes) -> list[dict[str, Any]]:
        """Decoded events ``name`` of one run, oldest first, with ``blockNumber``
        and ``transactionHash`` (``0x`` hex)."""
        ...
