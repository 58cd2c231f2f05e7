"""The checkpoint Merkle tree (``ledger.hashing.merkle``) is OpenZeppelin's StandardMerkleTree.

The shape is taken from OpenZeppelin's ``@openzeppelin/merkle-tree`` (read at
github.com/OpenZeppelin/merkle-tree):

* ``src/core.ts`` (commit 9f9311b2ec407093536470892f2a9d591e053304),
  ``makeMerkleTree``: ``tree = new Array(2 * leaves.length - 1)``; leaf ``i`` goes
  to ``tree[tree.length - 1 - i]`` (leaves stored in reverse at the end); then
  for ``i = tree.length - 1 - leaves.length`` down to 0,
  ``tree[i] = nodeHash(tree[2i + 1], tree[2i + 2])``. ``getProof`` walks up from a
  leaf, pushing ``tree[siblingIndex(i)]`` with ``siblingIndex(i) = i - (-1) ** (i % 2)``
  and ``parentIndex(i) = floor((i - 1) / 2)``.
* ``src/hashes.ts`` (same commit): ``standardLeafHash = keccak256(keccak256(
  abi.encode(types, value)))`` and ``standardNodeHash(a, b) = keccak256(concat(
  [a, b].sort(compare)))``.
* ``src/merkletree.ts`` (commit 5d8941e4cdafabeb2d3691e08bc3ff2f8d99528f),
  ``prepare``: leaves are sorted by hash (``sortLeaves`` defaults to true) before
  ``makeMerkleTree``.

So for three leaves with sorted hashes ``l0 < l1 < l2`` the array is
``[root, n1, l2, l1, l0]`` with ``n1 = hashPair(l1, l0)`` and
``root = hashPair(n1, l2)``, i.e. ``hashPair(hashPair(l0, l1), l2)``: the two
*smallest* leaves are paired, not the two largest.
"""

from __future__ import annotations

import hashlib

import pytest
from eth_abi import encode
from eth_utils import keccak

from ledger.hashing.merkle import (
    CheckpointLeaf,
    MerkleTree,
    checkpoint_root,
    verify_proof,
)


def hash_pair(a: bytes, b: bytes) -> bytes:
    """OpenZeppelin's standardNodeHash: keccak256 of the two hashes in ascending order."""
    return keccak(b"".join(sorted((a, b))))


def make_leaf(step: int) -> CheckpointLeaf:
    def h(tag: str) -> bytes:
        return hashlib.sha256(f"{tag}-{step}".encode()).digest()

    return CheckpointLeaf(step, h("weights"), h("tensors"), h("metrics"))


def leaf_hashes(count: int) -> list[bytes]:
    return [make_leaf(step).hash for step in range(count)]


# -- leaves ---------------------------------------------------------------------


def test_leaf_hash_is_double_keccak_of_the_abi_encoding() -> None:
    leaf = CheckpointLeaf(
        step=2**64 - 1,
        weights_digest=bytes(range(32)),
        tensor_root=bytes(range(32, 64)),
        metrics_digest=b"\xff" * 32,
    )
    encoded = encode(
        ["uint64", "bytes32", "bytes32", "bytes32"],
        [leaf.step, leaf.weights_digest, leaf.tensor_root, leaf.metrics_digest],
    )
    assert len(encoded) == 4 * 32
    # abi.encode pads the uint64 to a 32-byte big-endian word
    assert encoded[:32] == bytes(24) + b"\xff" * 8
    assert leaf.hash == keccak(keccak(encoded))
    assert leaf.hash != keccak(encoded)


def test_every_field_of_a_leaf_is_bound() -> None:
    base = make_leaf(5)
    variants = [
        CheckpointLeaf(6, base.weights_digest, base.tensor_root, base.metrics_digest),
        CheckpointLeaf(5, b"\x00" * 32, base.tensor_root, base.metrics_digest),
        CheckpointLeaf(5, base.weights_digest, b"\x00" * 32, base.metrics_digest),
        CheckpointLeaf(5, base.weights_digest, base.tensor_root, b"\x00" * 32),
        # swapping two digests is a different leaf
        CheckpointLeaf(5, base.tensor_root, base.weights_digest, base.metrics_digest),
    ]
    hashes = {base.hash, *(v.hash for v in variants)}
    assert len(hashes) == len(variants) + 1


# -- proofs -----------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8, 13])
def test_every_leaf_proof_verifies(count: int) -> None:
    hashes = leaf_hashes(count)
    tree = MerkleTree(hashes)
    assert tree.root == checkpoint_root([make_leaf(s) for s in range(count)])
    for leaf in hashes:
        proof = tree.proof(leaf)
        assert verify_proof(proof, tree.root, leaf)
        # a complete binary tree of n leaves has depth floor(log2(2n - 1))
        assert len(proof) <= (2 * count - 1).bit_length() - 1


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8, 13])
def test_a_proof_fails_for_a_foreign_leaf_or_a_wrong_root(count: int) -> None:
    hashes = leaf_hashes(count)
    tree = MerkleTree(hashes)
    outsider = make_leaf(1000).hash
    other_root = MerkleTree(leaf_hashes(count + 1)).root
    for leaf in hashes:
        proof = tree.proof(leaf)
        assert not verify_proof(proof, tree.root, outsider)
        assert not verify_proof(proof, other_root, leaf)
        assert not verify_proof(proof, b"\x00" * 32, leaf)
    with pytest.raises(ValueError, match="not in this tree"):
        tree.proof(outsider)


def test_a_proof_for_one_leaf_does_not_verify_another() -> None:
    hashes = leaf_hashes(5)
    tree = MerkleTree(hashes)
    proof = tree.proof(hashes[0])
    assert all(not verify_proof(proof, tree.root, h) for h in hashes[1:])


def test_a_tampered_proof_fails() -> None:
    hashes = leaf_hashes(8)
    tree = MerkleTree(hashes)
    proof = tree.proof(hashes[3])
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
        assert not verify_proof(bad, tree.root, hashes[3])
    assert not verify_proof(proof[:-1], tree.root, hashes[3])


def test_a_single_leaf_is_its_own_root_with_an_empty_proof() -> None:
    leaf = make_leaf(0)
    tree = MerkleTree([leaf.hash])
    assert tree.root == leaf.hash
    assert tree.proof(leaf.hash) == []
    assert verify_proof([], tree.root, leaf.hash)
    assert checkpoint_root([leaf]) == leaf.hash


def test_no_checkpoints_give_the_zero_root() -> None:
    assert checkpoint_root([]) == b"\x00" * 32
    with pytest.raises(ValueError):
        MerkleTree([])


@pytest.mark.parametrize("count", [2, 3, 5, 8, 13])
def test_the_root_does_not_depend_on_leaf_order(count: int) -> None:
    leaves = [make_leaf(s) for s in range(count)]
    forward = checkpoint_root(leaves)
    assert checkpoint_root(list(reversed(leaves))) == forward
    rotated = leaves[count // 2 :] + leaves[: count // 2]
    assert checkpoint_root(rotated) == forward
    assert MerkleTree([leaf.hash for leaf in rotated]).root == forward


def test_different_checkpoints_give_different_roots() -> None:
    leaves = [make_leaf(s) for s in range(4)]
    assert checkpoint_root(leaves) != checkpoint_root(leaves[:3])
    assert checkpoint_root(leaves) != checkpoint_root([*leaves[:3], make_leaf(9)])


# -- golden: the shape of OpenZeppelin's StandardMerkleTree ---------------------------


def test_two_leaves_hash_in_sorted_order() -> None:
    a, b = sorted(leaf_hashes(2))
    assert MerkleTree([b, a]).root == keccak(a + b)
    assert MerkleTree([a, b]).root == keccak(a + b)


def test_three_leaves_have_openzeppelins_shape() -> None:
    l0, l1, l2 = sorted(leaf_hashes(3))
    assert l0 < l1 < l2
    tree = MerkleTree([l2, l0, l1])
    # Derived from makeMerkleTree (see the module docstring): tree = [root, n1, l2, l1, l0].
    n1 = hash_pair(l1, l0)
    assert tree.root == hash_pair(n1, l2)
    assert tree.root == hash_pair(hash_pair(l0, l1), l2)
    # the other two possible shapes are *not* what OpenZeppelin builds
    assert tree.root != hash_pair(l0, hash_pair(l1, l2))
    assert tree.root != hash_pair(l1, hash_pair(l0, l2))
    # proofs walk the same array: l2 sits next to n1; l0 and l1 are siblings
    assert tree.proof(l2) == [n1]
    assert tree.proof(l0) == [l1, l2]
    assert tree.proof(l1) == [l0, l2]


def test_five_leaves_have_openzeppelins_shape() -> None:
    # makeMerkleTree for n=5: array of 9; leaves l0..l4 at 8..4; internal 3..0.
    l0, l1, l2, l3, l4 = sorted(leaf_hashes(5))
    tree = [b""] * 9
    for i, leaf in enumerate((l0, l1, l2, l3, l4)):
        tree[8 - i] = leaf
    for i in range(3, -1, -1):
        tree[i] = hash_pair(tree[2 * i + 1], tree[2 * i + 2])
    assert tree[3] == hash_pair(l1, l0)
    assert tree[2] == hash_pair(l3, l2)
    assert tree[1] == hash_pair(tree[3], l4)
    # l4 (the largest) sits one level higher, beside the pair of the two smallest
    assert tree[0] == hash_pair(hash_pair(hash_pair(l0, l1), l4), hash_pair(l2, l3))
    assert MerkleTree([l3, l1, l4, l0, l2]).root == tree[0]


def test_openzeppelin_published_vector() -> None:
    """OpenZeppelin's own expected root, for leaves 'a'..'f' with leaf encoding ['string'].

    From github.com/OpenZeppelin/merkle-tree ``src/standard.test.ts`` (commit
    2da68b173baf4a6e3e083181e4cfa3b6142e708f), test "renders tree representation"
    with ``sortLeaves`` true (the default): node 0 is
    0x6deb52b5da8fd108f79fab00341f38d2587896634c646ee52e49f845680a70c8, nodes 5..10
    are the sorted leaves, node 2 is 0xfd3cf456... and node 3 is 0x8076923e...
    """
    hashes = [keccak(keccak(encode(["string"], [c]))) for c in "abcdef"]
    tree = MerkleTree(hashes)
    assert tree.root.hex() == "6deb52b5da8fd108f79fab00341f38d2587896634c646ee52e49f845680a70c8"

    smallest = bytes.fromhex("19ba6c6333e0e9a15bf67523e0676e2f23eb8e574092552d5e888c64a4bb3681")
    assert min(hashes) == smallest  # node 10, the last cell of the array
    assert tree.proof(smallest) == [
        bytes.fromhex("9a4f64e953595df82d1b4f570d34c4f4f0cfaf729a61e9d60e83e579e1aa283e"),
        bytes.fromhex("8076923e76cf01a7c048400a2304c9a9c23bbbdac3a98ea3946340fdafbba34f"),
        bytes.fromhex("fd3cf45654e88d1cc5d663578c82c76f4b5e3826bacaa1216441443504538f51"),
    ]
    assert verify_proof(tree.proof(smallest), tree.root, smallest)
