"""Commit one training run: manifest at start, checkpoints, final weights.

For each weights file the recorder stores the file (its CID is the weights
digest), a tensor index (per-tensor digests under the tensor root) and a metrics
document that binds the step, the metrics and both weights identities; then it
sends the registry transaction. The on-chain metrics digest therefore
authenticates everything a verifier needs to explain a mismatch.

:class:`RunRecorder` commits synchronously, one transaction per record: for
scripts and tests that want the receipt in hand. The training hook goes through
the durable outbox instead (:mod:`ledger.record.outbox`), whose worker builds the same
documents with :func:`store_weights`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger.chain.records import FinalRecord, TxResult
from ledger.documents import METRICS_SCHEMA, canonical_json
from ledger.errors import RecordError
from ledger.hashing.cid import Cid
from ledger.hashing.merkle import CheckpointLeaf, checkpoint_root
from ledger.hashing.tensors import TensorDigest, tensor_digest
from ledger.ids import Relation, to_hex
from ledger.store import ArtifactStore

if TYPE_CHECKING:
    from ledger.chain.registry import Registry


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
        return to_hex(self._require_run())

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
            raise RecordError(f"run {to_hex(run_id)} is {self.status}; it takes no more records")
        return run_id


READ_WHOLE = 16 << 20
"""Weights files up to this size are read into memory once and hashed from there."""


def store_weights(
    store: ArtifactStore,
    run_id_hex: str,
    weights: Path,
    metrics: Mapping[str, Any],
    step: int | None,
    tensors: TensorDigest | None = None,
) -> tuple[Cid, TensorDigest, Cid]:
    """Store a weights file, its tensor index and its metrics document.

    ``step`` None marks the final weights. Returns the file CID, the tensor
    digest and the metrics document's CID (the on-chain metrics digest), which
    binds the step, the metrics and both weights identities.
    """
    path = Path(weights)
    if tensors is None and path.is_file() and path.stat().st_size <= READ_WHOLE:
        # one read serves the file CID, the stored copy and the tensor leaves
        data = path.read_bytes()
        file_cid = store.put_bytes(data)
        tensors = tensor_digest(path, data=data)
    else:
        file_cid = store.put_file(path)
        tensors = tensors or tensor_digest(path)
    index_cid = store.put_bytes(canonical_json(tensors.index(), what="tensor index"))
    document = {
        "schema": METRICS_SCHEMA,
        "run_id": run_id_hex,
        "step": step,
        "final": step is None,
        "metrics": dict(metrics),
        "weights": {
            "cid": str(file_cid),
            "tensor_root": tensors.root.hex(),
            "tensor_index": str(index_cid),
        },
    }
    metrics_cid = store.put_bytes(canonical_json(document, what="metrics"))
    return file_cid, tensors, metrics_cid
