"""A synchronous recorder for tests and benchmarks: one transaction per record.

:class:`RunRecorder` stores each record's documents with the outbox worker's own
:func:`~ledger.record.artifacts.store_weights` and sends its registry
transaction at once, so the receipt is in hand when a call returns. The
training hook goes through the durable outbox instead (:mod:`ledger.record.outbox`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.chain.records import FinalRecord, TxResult
from ledger.errors import RecordError
from ledger.hashing.cid import Cid
from ledger.hashing.merkle import CheckpointLeaf, checkpoint_root
from ledger.hashing.tensors import TensorDigest
from ledger.ids import Relation
from ledger.record.artifacts import store_weights
from ledger.record.manifest import canonical_json
from ledger.store import ArtifactStore
from tests.chain.web3_registry import Registry


@dataclass(frozen=True)
class WeightsCommit:
    """What was committed for one weights file."""

    step: int | None
    is_final: bool
    file_cid: Cid
    tensor_root: bytes
    metrics_cid: Cid
    tx: TxResult


@dataclass
class RunRecorder:
    registry: Registry
    store: ArtifactStore
    run_id: bytes | None = None
    manifest_cid: Cid | None = None
    checkpoints: list[CheckpointLeaf] = field(default_factory=list)
    status: str = "new"

    @property
    def run_id_hex(self) -> str:
        return "0x" + self._require_run().hex()

    def start(
        self, manifest: Mapping[str, Any], parents: Sequence[tuple[bytes, Relation]] = ()
    ) -> bytes:
        if self.status != "new":
            raise RecordError(f"this recorder already recorded a run ({self.status})")
        self.manifest_cid = self.store.put_bytes(canonical_json(manifest, what="manifest"))
        self.run_id, _ = self.registry.start_run(self.manifest_cid.digest, parents)
        self.status = "running"
        return self.run_id

    def checkpoint(
        self,
        step: int,
        weights: Path,
        metrics: Mapping[str, Any],
        tensors: TensorDigest | None = None,
    ) -> WeightsCommit:
        run_id = self._require_running()
        file_cid, tensors, metrics_cid = store_weights(
            self.store, self.run_id_hex, weights, metrics, step, tensors
        )
        leaf = CheckpointLeaf(step, file_cid.digest, tensors.root, metrics_cid.digest)
        tx = self.registry.commit_checkpoint(run_id, leaf)
        self.checkpoints.append(leaf)
        return WeightsCommit(step, False, file_cid, tensors.root, metrics_cid, tx)

    def finalize(
        self, weights: Path, metrics: Mapping[str, Any], tensors: TensorDigest | None = None
    ) -> WeightsCommit:
        run_id = self._require_running()
        file_cid, tensors, metrics_cid = store_weights(
            self.store, self.run_id_hex, weights, metrics, None, tensors
        )
        record = FinalRecord(
            file_cid.digest,
            tensors.root,
            metrics_cid.digest,
            checkpoint_root(self.checkpoints),
            len(self.checkpoints),
        )
        tx = self.registry.finalize_run(run_id, record)
        self.status = "finalized"
        return WeightsCommit(None, True, file_cid, tensors.root, metrics_cid, tx)

    def fail(self, reason: str) -> TxResult:
        run_id = self._require_running()
        tx = self.registry.mark_failed(run_id, reason[:500])
        self.status = "failed"
        return tx

    def _require_run(self) -> bytes:
        if self.run_id is None:
            raise RecordError("the run was not started yet; call start() first")
        return self.run_id

    def _require_running(self) -> bytes:
        run_id = self._require_run()
        if self.status != "running":
            raise RecordError(f"run 0x{run_id.hex()} is {self.status}; it takes no more records")
        return run_id
