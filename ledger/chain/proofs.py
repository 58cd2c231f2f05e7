"""A checkpoint's Merkle inclusion proof under its run's committed checkpoint root,
read from the registry and checked by the registry itself (``verifyCheckpoint``).

``ledger proof RUN STEP`` prints it; ``GET /api/v1/runs/{id}/checkpoints/{step}/proof``
answers it. Both read the chain, never the index.
"""

from __future__ import annotations

from typing import Any

from ledger.chain.reader import RegistryReader
from ledger.chain.records import record_leaf
from ledger.errors import InputError, NotFoundError
from ledger.hashing.merkle import MerkleTree
from ledger.ids import to_hex


def checkpoint_proof(
    registry: RegistryReader, run_id: bytes, step: int, *, shown: str
) -> dict[str, Any]:
    """The proof of every checkpoint of ``run_id`` at ``step`` (``shown`` names the run
    in errors): the leaf, the sibling path, and whether the registry accepts it."""
    final = registry.final_record(run_id)
    if final is None or final.final is None:
        raise InputError(
            f"run {shown} is not finalized, so it has no checkpoint root yet",
            hint="proofs exist once the run's final record commits to its checkpoints",
        )
    leaves = [record_leaf(r) for r in registry.checkpoints(run_id)]
    matches = [leaf for leaf in leaves if leaf.step == step]
    if not matches:
        steps = ", ".join(str(leaf.step) for leaf in leaves) or "none"
        raise NotFoundError(f"run {shown} has no checkpoint at step {step} (steps: {steps})")
    tree = MerkleTree([leaf.hash for leaf in leaves])
    proofs = []
    for leaf in matches:
        path = tree.proof(leaf.hash)
        proofs.append(
            {
                "step": leaf.step,
                "weights_digest": leaf.weights_digest.hex(),
                "tensor_root": leaf.tensor_root.hex(),
                "metrics_digest": leaf.metrics_digest.hex(),
                "leaf": to_hex(leaf.hash),
                "proof": [to_hex(node) for node in path],
                "verified_by_registry": registry.verify_checkpoint(run_id, final.final, leaf, path),
            }
        )
    return {
        "run_id": to_hex(run_id),
        "checkpoint_root": to_hex(final.final.checkpoint_root),
        "root_matches": tree.root == final.final.checkpoint_root,
        "checkpoints": proofs,
    }
