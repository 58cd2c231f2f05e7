"""Our RLP, Merkle-Patricia trie builder and proof walk, held to the ``rlp`` package and py-trie
(the libraries they stand in for on ``verify --bundle``'s start-up path)."""

from __future__ import annotations

import random

import pytest
import rlp as rlp_package
from trie.hexary import HexaryTrie

from ledger.chain import rlp
from ledger.chain.mpt import EMPTY_ROOT, ProofError, Trie, value_from_proof
from ledger.errors import InputError
from ledger.hashing.keccak import keccak256


def test_encode_matches_the_yellow_paper_examples() -> None:
    assert rlp.encode(b"dog") == b"\x83dog"
    assert rlp.encode([b"cat", b"dog"]) == b"\xc8\x83cat\x83dog"
    assert rlp.encode(b"") == b"\x80" and rlp.encode([]) == b"\xc0"
    assert rlp.encode(0) == b"\x80" and rlp.encode(15) == b"\x0f"
    assert rlp.encode(1024) == b"\x82\x04\x00"
    assert rlp.encode([[], [[]], [[], [[]]]]) == bytes.fromhex("c7c0c1c0c3c0c1c0")
    long = b"Lorem ipsum dolor sit amet, consectetur adipisicing elit"
    assert rlp.encode(long) == b"\xb8\x38" + long
    with pytest.raises(ValueError):
        rlp.encode(-1)


def _random_item(rng: random.Random, depth: int = 0) -> bytes | list[object]:
    if depth < 3 and rng.random() < 0.4:
        return [_random_item(rng, depth + 1) for _ in range(rng.randrange(0, 6))]
    size = rng.choice([0, 1, 1, 2, 31, 55, 56, 57, 300, 70_000])
    return rng.randbytes(size)


def test_encode_and_decode_agree_with_the_rlp_package() -> None:
    rng = random.Random(7)
    for _ in range(300):
        item = _random_item(rng)
        encoded = rlp.encode(item)
        assert encoded == rlp_package.encode(item)
        assert rlp.decode(encoded) == rlp_package.decode(encoded)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "ends before"),
        (b"\x81\x05", "single byte"),  # 0x05 must encode as itself
        (b"\xb8\x05hello", "short length"),  # the long form for 5 bytes
        (b"\xb9\x00\x38" + b"x" * 56, "leading zeros"),
        (b"\x83do", "ends inside the item"),
        (b"\x83dogs", "after the item"),
        (b"\xc2\x83dog", "overrun"),
        (b"\xb8", "ends inside a length"),
    ],
)
def test_decode_refuses_what_is_not_canonical(data: bytes, why: str) -> None:
    with pytest.raises(rlp.RlpError, match=why):
        rlp.decode(data)
    with pytest.raises(rlp_package.DecodingError):  # the package refuses them too
        rlp_package.decode(data)


def test_decode_refuses_deep_nesting_without_exhausting_the_stack() -> None:
    item: list[object] = []
    for _ in range(rlp.MAX_DEPTH):
        item = [item]
    assert rlp.decode(rlp.encode(item)) == item  # as deep as allowed
    with pytest.raises(rlp.RlpError, match="nested"):
        rlp.decode(rlp.encode([item]))
    # 100,000 nested lists: refused at once, not a RecursionError
    hostile = b"".join(bytes([0xF8, 0xFF]) for _ in range(10)) + b"\xc0" * 100_000
    with pytest.raises(rlp.RlpError):
        rlp.decode(hostile)
    assert issubclass(rlp.RlpError, InputError)


def _trie(rng: random.Random, count: int, key_size: int) -> tuple[HexaryTrie, dict[bytes, bytes]]:
    trie = HexaryTrie({})
    pairs: dict[bytes, bytes] = {}
    for _ in range(count):
        key = rng.randbytes(rng.choice([1, 2, key_size]))
        value = rng.randbytes(rng.choice([1, 5, 40, 200]))
        trie[key] = value
        pairs[key] = value
    return trie, pairs


@pytest.mark.parametrize(("count", "key_size"), [(1, 32), (3, 1), (40, 2), (300, 32)])
def test_proofs_read_as_py_trie_reads_them(count: int, key_size: int) -> None:
    rng = random.Random(count)
    trie, pairs = _trie(rng, count, key_size)
    root = bytes(trie.root_hash)
    absent = [rng.randbytes(len(k)) for k in list(pairs)[:20]]
    for key in [*list(pairs)[:50], *absent]:
        nodes = [rlp.encode(node) for node in trie.get_proof(key)]
        expected = HexaryTrie.get_from_proof(root, key, [rlp_package.decode(n) for n in nodes])
        assert value_from_proof(root, key, nodes) == expected == pairs.get(key, b"")


def test_receipt_style_keys_with_embedded_nodes() -> None:
    # rlp(index) keys and tiny values give nodes under 32 bytes, embedded in parents
    trie = HexaryTrie({})
    for index in range(200):
        trie[rlp.encode(index)] = bytes([index % 7])
    root = bytes(trie.root_hash)
    for index in (0, 1, 15, 16, 127, 128, 199, 250):
        key = rlp.encode(index)
        nodes = [rlp.encode(node) for node in trie.get_proof(key)]
        assert value_from_proof(root, key, nodes) == (bytes([index % 7]) if index < 200 else b"")


def test_a_tampered_or_missing_node_is_refused() -> None:
    rng = random.Random(3)
    trie, pairs = _trie(rng, 100, 32)
    root = bytes(trie.root_hash)
    key = next(k for k in pairs if len(k) == 32)
    nodes = [rlp.encode(node) for node in trie.get_proof(key)]
    assert value_from_proof(root, key, nodes) == pairs[key] and len(nodes[-1]) >= 32
    with pytest.raises(ProofError, match="lacks node"):
        value_from_proof(root, key, nodes[1:])
    tampered = [*nodes[:-1], nodes[-1][:-1] + bytes([nodes[-1][-1] ^ 1])]
    with pytest.raises(ProofError, match="lacks node"):  # the edited node hashes elsewhere
        value_from_proof(root, key, tampered)
    with pytest.raises(ProofError):
        value_from_proof(keccak256(b"another root"), key, nodes)
    assert value_from_proof(EMPTY_ROOT, key, []) == b""


def test_a_forged_node_cannot_claim_a_value() -> None:
    # a node that hashes to the root but is not a trie node
    forged = rlp.encode([b"\x20" + b"k", b"v", b"extra"])
    with pytest.raises(ProofError, match="3 items"):
        value_from_proof(keccak256(forged), b"k", [forged])
    bad_flag = rlp.encode([b"\x50k", b"v"])
    with pytest.raises(ProofError, match="flag"):
        value_from_proof(keccak256(bad_flag), b"k", [bad_flag])
    not_list = rlp.encode(b"x" * 40)
    with pytest.raises(ProofError, match="not a list"):
        value_from_proof(keccak256(not_list), b"k", [not_list])


@pytest.mark.parametrize(
    ("count", "key_size"), [(0, 1), (1, 32), (2, 1), (17, 1), (40, 2), (300, 32)]
)
def test_built_tries_have_py_tries_roots_and_proofs(count: int, key_size: int) -> None:
    rng = random.Random(100 + count)
    reference, pairs = _trie(rng, count, key_size)
    ours = Trie(pairs)
    assert ours.root == bytes(reference.root_hash)
    absent = [rng.randbytes(key_size) for _ in range(10)]
    for key in [*list(pairs)[:60], *absent]:
        proof = ours.proof(key)
        assert value_from_proof(ours.root, key, proof) == pairs.get(key, b"")
        expected = [rlp.encode(node) for node in reference.get_proof(key)]
        assert [n for n in proof if len(n) >= 32] == [n for n in expected if len(n) >= 32]


def test_a_receipts_trie_as_a_block_holds_one() -> None:
    # keys rlp(0..n-1): 0x80 for index 0, one byte up to 127, two bytes from 128 on
    for count in (1, 2, 16, 128, 129, 300):
        values = {rlp.encode(i): b"receipt %d" % i * (1 + i % 5) for i in range(count)}
        reference = HexaryTrie({})
        for key, value in values.items():
            reference[key] = value
        ours = Trie(values)
        assert ours.root == bytes(reference.root_hash)
        for index in {0, count // 2, count - 1, min(1, count - 1)}:
            key = rlp.encode(index)
            assert value_from_proof(ours.root, key, ours.proof(key)) == values[key]


def test_a_trie_refuses_empty_values() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        Trie({b"k": b""})
    assert Trie({}).root == EMPTY_ROOT and Trie({}).proof(b"k") == []
