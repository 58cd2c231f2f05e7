"""Reading one key out of a Merkle-Patricia proof (Ethereum's hexary trie, yellow paper,
appendix D): what ``eth_getProof`` returns and what a receipts-trie proof holds.

:class:`Trie` builds a whole trie from its keys and values (a block's receipts
trie, for ``ledger export``): its root and the proof of one key.

Our own, not py-trie's ``HexaryTrie``: py-trie imports the ``rlp`` package,
which imports ``eth_utils`` and pydantic (see :mod:`ledger.chain.rlp`), about
0.25 s of CPU on each start of ``ledger export`` and ``verify --bundle``, half
the time the bundle goal allows over hashing the file; walking a proof and
building a trie from a sorted key set are short. The tests hold both to py-trie
(roots, proofs and answers on random tries, keys present and absent).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ledger.chain import rlp
from ledger.errors import InputError
from ledger.hashing.keccak import keccak256

__all__ = ["EMPTY_ROOT", "ProofError", "Trie", "value_from_proof"]

EMPTY_ROOT = keccak256(rlp.encode(b""))
"""The root of a trie with no keys."""


class ProofError(InputError):
    """A proof that does not lead from its root to an answer for the key."""


def value_from_proof(root: bytes, key: bytes, nodes: Sequence[bytes]) -> bytes:
    """The value stored under ``key`` in the trie whose root hash is ``root``, as the
    RLP-encoded ``nodes`` prove it; ``b""`` when they prove the key is absent.

    Raises :class:`ProofError` when a node the walk needs is not among ``nodes``,
    or a node is not a trie node.
    """
    if root == EMPTY_ROOT:
        return b""
    by_hash = {keccak256(node): node for node in nodes}
    path = _nibbles(key)
    reference: rlp.Item = root
    while True:
        node = _resolve(reference, by_hash)
        if len(node) == 17:  # a branch: sixteen children and a value
            if not path:
                return _value(node[16])
            reference, path = node[path[0]], path[1:]
            if reference == b"":
                return b""
            continue
        if len(node) != 2:
            raise ProofError(f"a trie node with {len(node)} items")
        prefix, is_leaf = _compact(node[0])
        if path[: len(prefix)] != prefix or (is_leaf and len(path) != len(prefix)):
            return b""  # the key parts ways with the trie here: it is absent
        if is_leaf:
            return _value(node[1])
        reference, path = node[1], path[len(prefix) :]


def _resolve(reference: rlp.Item, by_hash: dict[bytes, bytes]) -> list[rlp.Item]:
    """The node a parent points at: by its hash, or embedded when its encoding is
    shorter than 32 bytes."""
    if isinstance(reference, list):
        if len(rlp.encode(reference)) >= 32:
            raise ProofError("a trie node of 32 bytes or more embedded in its parent")
        return reference
    if len(reference) != 32:
        raise ProofError(f"a trie reference of {len(reference)} bytes")
    raw = by_hash.get(reference)
    if raw is None:
        raise ProofError(f"the proof lacks node 0x{reference.hex()}")
    node = rlp.decode(raw)
    if not isinstance(node, list):
        raise ProofError(f"node 0x{reference.hex()} is not a list")
    return node


def _value(item: rlp.Item) -> bytes:
    if not isinstance(item, bytes):
        raise ProofError("a trie value that is a list")
    return item


def _nibbles(key: bytes) -> tuple[int, ...]:
    return tuple(half for byte in key for half in (byte >> 4, byte & 0x0F))


def _compact(item: rlp.Item) -> tuple[tuple[int, ...], bool]:
    """The nibbles of a hex-prefix (compact) encoded path, and whether it ends a leaf."""
    if not isinstance(item, bytes) or not item:
        raise ProofError("a trie path that is not a byte string")
    flag = item[0] >> 4
    if flag > 3:
        raise ProofError(f"a trie path with flag {flag}")
    nibbles = _nibbles(item)
    odd = flag & 1
    if not odd and nibbles[1] != 0:
        raise ProofError("an even trie path with padding that is not zero")
    return nibbles[1:] if odd else nibbles[2:], bool(flag & 2)


@dataclass
class _Node:
    """A node being built: a leaf (``value`` set, no children), an extension (one
    child under ``path``) or a branch (``children`` by nibble, ``value`` its own)."""

    kind: str  # "leaf", "extension" or "branch"
    path: tuple[int, ...] = ()
    value: bytes = b""
    children: dict[int, _Node] = field(default_factory=dict)
    item: rlp.Item = b""  # its RLP structure, once built

    def reference(self) -> rlp.Item:
        """How a parent names it: embedded when its encoding is under 32 bytes."""
        encoded = rlp.encode(self.item)
        return self.item if len(encoded) < 32 else keccak256(encoded)


def _build(pairs: list[tuple[tuple[int, ...], bytes]]) -> _Node:
    """The node holding ``pairs`` (paths relative to it, distinct)."""
    if len(pairs) == 1:
        path, value = pairs[0]
        node = _Node("leaf", path=path, value=value)
        node.item = [_hex_prefix(path, leaf=True), value]
        return node
    first = pairs[0][0]
    common = 0
    while all(len(p) > common and p[common] == first[common] for p, _ in pairs):
        common += 1
    if common:
        child = _build([(p[common:], v) for p, v in pairs])
        node = _Node("extension", path=first[:common], children={0: child})
        node.item = [_hex_prefix(node.path, leaf=False), child.reference()]
        return node
    node = _Node("branch")
    groups: dict[int, list[tuple[tuple[int, ...], bytes]]] = {}
    for path, value in pairs:
        if path:
            groups.setdefault(path[0], []).append((path[1:], value))
        else:
            node.value = value
    node.children = {nibble: _build(group) for nibble, group in groups.items()}
    node.item = [node.children[n].reference() if n in node.children else b"" for n in range(16)] + [
        node.value
    ]
    return node


def _hex_prefix(nibbles: tuple[int, ...], *, leaf: bool) -> bytes:
    """The compact (hex-prefix) encoding of a path."""
    flag = (2 if leaf else 0) + (len(nibbles) % 2)
    rest = nibbles if flag % 2 else (0, *nibbles)
    body = (flag, *rest)
    return bytes(body[i] * 16 + body[i + 1] for i in range(0, len(body), 2))


class Trie:
    """A hexary Merkle-Patricia trie of ``items`` (non-empty values), built at once."""

    def __init__(self, items: Mapping[bytes, bytes]) -> None:
        if any(not value for value in items.values()):
            raise ValueError("a trie holds non-empty values only")
        pairs = sorted((_nibbles(key), value) for key, value in items.items())
        self._root = _build(pairs) if pairs else None

    @property
    def root(self) -> bytes:
        return EMPTY_ROOT if self._root is None else keccak256(rlp.encode(self._root.item))

    def proof(self, key: bytes) -> list[bytes]:
        """The RLP-encoded nodes from the root toward ``key`` (present or absent),
        which :func:`value_from_proof` reads back."""
        nodes: list[bytes] = []
        node, path = self._root, _nibbles(key)
        while node is not None:
            nodes.append(rlp.encode(node.item))
            if node.kind == "leaf":
                break
            if node.kind == "extension":
                if path[: len(node.path)] != node.path:
                    break
                node, path = node.children[0], path[len(node.path) :]
                continue
            if not path:
                break
            node, path = node.children.get(path[0]), path[1:]
        return nodes
