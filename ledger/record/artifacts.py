"""The documents stored for one weights file, as the outbox worker stores them.

:func:`store_weights` stores the file (its CID is the weights digest), a tensor
index (per-tensor digests under the tensor root) and a metrics document that
binds the step, the metrics and both weights identities. The on-chain metrics
digest (the metrics document's) therefore authenticates everything a verifier
needs to explain a mismatch.

The embedded store (:meth:`~ledger.store.LocalStore.put_weights`) reads the
weights file once: the tensors' byte ranges are found from the file's header
(:func:`~ledger.hashing.tensors.tensor_plan`), then the same blocks give the
file CID, each tensor's digest and the store's copy (or, in reference mode,
only the two hashes). Other stores (an IPFS node) get the file, and the
tensors are hashed from a second read. The outbox worker
(:mod:`ledger.record.outbox.worker`) calls it for each checkpoint and final
weights file, then sends the chain record it yields.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ledger.documents import METRICS_SCHEMA, canonical_json
from ledger.hashing.cid import Cid
from ledger.hashing.tensors import TensorDigest, tensor_digest, tensor_plan
from ledger.store import ArtifactStore

__all__ = ["READ_WHOLE", "store_weights"]

READ_WHOLE = 16 << 20
"""For stores without ``put_weights``: weights files up to this size are read into
memory once and hashed from there."""


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
    put_weights = getattr(store, "put_weights", None)
    if put_weights is not None:  # the embedded store: one read for all three
        plan = tensor_plan(path) if tensors is None else None
        file_cid, digests = put_weights(path, plan.spans if plan is not None else ())
        if tensors is None:
            # None: only torch reads this file (legacy format...); a second read
            tensors = plan.digest(digests) if plan is not None else tensor_digest(path)
    elif tensors is None and path.is_file() and path.stat().st_size <= READ_WHOLE:
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
