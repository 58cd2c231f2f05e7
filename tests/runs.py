"""Records runs on the real test chain with real documents in a real store, the way
the recorder does (manifest, metrics documents binding the weights), without torch."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.chain.records import FinalRecord
from ledger.documents import MANIFEST_SCHEMA, METRICS_SCHEMA, canonical_json
from ledger.hashing.cid import Cid
from ledger.hashing.merkle import CheckpointLeaf, checkpoint_root
from ledger.ids import Relation
from ledger.store import LocalStore
from tests.chain.web3_registry import Registry


@dataclass
class Recorded:
    run_id: bytes
    manifest_cid: Cid
    weights: list[bytes] = field(default_factory=list)  # file bytes, checkpoints then final
    final_cid: Cid | None = None
    tensor_root: bytes | None = None

    @property
    def hex(self) -> str:
        return "0x" + self.run_id.hex()


def manifest(
    name: str, parents: Sequence[tuple[bytes, Relation]] = (), **extra: Any
) -> dict[str, Any]:
    return {
        "schema": MANIFEST_SCHEMA,
        "name": name,
        "created_at": os.urandom(8).hex(),  # distinct runs, distinct ids
        "config": {"lr": 0.01},
        "parents": [
            {"run_id": "0x" + p.hex(), "relation": r.name.lower().replace("_", "-")}
            for p, r in parents
        ],
        "distributed": {"world_size": 1},
        **extra,
    }


def record_run(
    registry: Registry,
    store: LocalStore,
    name: str,
    *,
    parents: Sequence[tuple[bytes, Relation]] = (),
    curve: Sequence[Mapping[str, float]] = ({"val_loss": 0.5},),
    final: Mapping[str, Any] | None = None,
    finalize: bool = True,
    final_weights: tuple[bytes, bytes] | None = None,
    **extra: Any,
) -> Recorded:
    """A run with one checkpoint per ``curve`` entry, finalized with ``final`` metrics.

    Weights are random bytes with a random tensor root, unless ``final_weights``
    gives the final file's bytes and its real tensor root."""
    document = manifest(name, parents, **extra)
    manifest_cid = store.put_bytes(canonical_json(document))
    run_id, _ = registry.start_run(manifest_cid.digest, parents)
    recorded = Recorded(run_id, manifest_cid)
    leaves = []
    for step, metrics in enumerate(curve):
        leaf, _ = _weights(store, recorded, step, metrics, is_final=False)
        registry.commit_checkpoint(run_id, leaf)
        leaves.append(leaf)
    if finalize:
        leaf, cid = _weights(
            store, recorded, None, final or curve[-1], is_final=True, given=final_weights
        )
        registry.finalize_run(
            run_id,
            FinalRecord(
                leaf.weights_digest,
                leaf.tensor_root,
                leaf.metrics_digest,
                checkpoint_root(leaves),
                len(leaves),
            ),
        )
        recorded.final_cid = cid
        recorded.tensor_root = leaf.tensor_root
    return recorded


def _weights(
    store: LocalStore,
    recorded: Recorded,
    step: int | None,
    metrics: Mapping[str, Any],
    *,
    is_final: bool,
    given: tuple[bytes, bytes] | None = None,
) -> tuple[CheckpointLeaf, Cid]:
    data, tensor_root = given or (os.urandom(300), os.urandom(32))
    recorded.weights.append(data)
    cid = store.put_bytes(data)
    document = {
        "schema": METRICS_SCHEMA,
        "run_id": recorded.hex,
        "step": step,
        "final": is_final,
        "metrics": dict(metrics),
        "weights": {"cid": str(cid), "tensor_root": tensor_root.hex(), "tensor_index": None},
    }
    metrics_cid = store.put_bytes(canonical_json(document))
    return CheckpointLeaf(step or 0, cid.digest, tensor_root, metrics_cid.digest), cid


def hf_folder(folder: Path, seed: int = 0) -> Path:
    """A small Hugging Face style model folder: config, two safetensors shards
    named by their index, and a tokenizer file in a subfolder."""
    import json

    import numpy as np
    from safetensors.numpy import save

    folder.mkdir(parents=True, exist_ok=True)
    first = {"fc.weight": np.arange(12, dtype=np.float32).reshape(3, 4) + seed}
    second = {"head.bias": np.arange(3, dtype=np.float32) + seed}
    (folder / "model-00001-of-00002.safetensors").write_bytes(save(first))
    (folder / "model-00002-of-00002.safetensors").write_bytes(save(second))
    index = {
        "metadata": {},
        "weight_map": {
            "fc.weight": "model-00001-of-00002.safetensors",
            "head.bias": "model-00002-of-00002.safetensors",
        },
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text(json.dumps({"model_type": "tiny", "hidden": 4}))
    (folder / "tokenizer").mkdir(exist_ok=True)
    (folder / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    return folder


def record_folder_run(registry: Registry, store: LocalStore, name: str, folder: Path) -> Recorded:
    """A run whose final weights are ``folder``, stored as the recorder stores a model
    folder (:func:`ledger.record.artifacts.store_weights`: each file's CID by name)."""
    from ledger.record.artifacts import store_weights

    document = manifest(name)
    manifest_cid = store.put_bytes(canonical_json(document))
    run_id, _ = registry.start_run(manifest_cid.digest, ())
    recorded = Recorded(run_id, manifest_cid)
    cid, tensors, metrics_cid = store_weights(store, recorded.hex, folder, {"loss": 0.1}, None)
    registry.finalize_run(
        run_id, FinalRecord(cid.digest, tensors.root, metrics_cid.digest, checkpoint_root([]), 0)
    )
    recorded.final_cid = cid
    recorded.tensor_root = tensors.root
    return recorded
