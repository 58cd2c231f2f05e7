"""The checkpoint Merkle root that a finalized run commits to.

Shaped like OpenZeppelin's ``StandardMerkleTree`` so that OpenZeppelin's
``MerkleProof.verify`` accepts its proofs: each leaf is
``keccak256(keccak256(abi.encode(uint64 step, bytes32 weightsDigest,
bytes32 tensorRoot, bytes32 metricsDigest)))``; leaves are sorted; the tree is
a complete binary tree stored as an array whose last ``n`` cells are the
leaves; a parent hashes its two children in sorted order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ledger.hashing.keccak import keccak256 as keccak


@dataclass(frozen=True)
class CheckpointLeaf:
    step: int
    weights_digest: bytes
    tensor_root: bytes
    metrics_digest: bytes

    @property
    def hash(self) -> bytes:
        # abi.encode of four static values: each one 32-byte word
        encoded = (
            self.step.to_bytes(32, "big")
            + _word(self.weights_digest)
            + _word(self.tensor_root)
            + _word(self.metrics_digest)
        )
        return keccak(keccak(encoded))


def _word(value: bytes) -> bytes:
    if len(value) != 32:
        raise ValueError(f"a bytes32 value must have 32 bytes, not {len(value)}")
    return value


def _hash_pair(a: bytes, b: bytes) -> bytes:
    return keccak(a + b) if a < b else keccak(b + a)


class MerkleTree:
    """A tree over leaf hashes, with the root and proofs OpenZeppelin checks."""

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        if not leaf_hashes:
            raise ValueError("a Merkle tree needs at least one leaf")
        self.leaves = sorted(leaf_hashes)
        n = len(self.leaves)
        tree: list[bytes] = [b""] * (2 * n - 1)
        for i, leaf in enumerate(self.leaves):
            tree[len(tree) - 1 - i] = leaf
        for i in range(len(tree) - 1 - n, -1, -1):
            tree[i] = _hash_pair(tree[2 * i + 1], tree[2 * i + 2])
        self._tree = tree

    @property
    def root(self) -> bytes:
        return self._tree[0]

    def proof(self, leaf_hash: bytes) -> list[bytes]:
        try:
            index = len(self._tree) - 1 - self.leaves.index(leaf_hash)
        except ValueError as exc:
            raise ValueError("leaf is not in this tree") from exc
        path: list[bytes] = []
        while index > 0:
            sibling = index - 1 if index % 2 == 0 else index + 1
            path.append(self._tree[sibling])
            index = (index - 1) // 2
        return path


def verify_proof(proof: Sequence[bytes], root: bytes, leaf_hash: bytes) -> bool:
    computed = leaf_hash
    for node in proof:
        computed = _hash_pair(computed, node)
    return computed == root


def checkpoint_root(leaves: Sequence[CheckpointLeaf]) -> bytes:
    """The root over a run's checkpoints; zero when there are none."""
    if not leaves:
        return b"\x00" * 32
    return MerkleTree([leaf.hash for leaf in leaves]).root
