"""Chain evidence that checks without trusting a node: headers, receipts, state proofs.

* A block header as JSON-RPC gives it re-hashes to its block hash: keccak-256 of
  the RLP list of its fields in consensus order (:data:`HEADER_FIELDS`; the
  fields forks added -- London's ``baseFeePerGas`` up to Prague's
  ``requestsHash`` -- follow when the node returns them).
* A receipt, RLP-encoded as EIP-2718 wants (``type || rlp([status,
  cumulativeGasUsed, logsBloom, logs])``; a legacy receipt without the type
  byte), sits in its block's receipts trie under ``rlp(transactionIndex)``: a
  Merkle-Patricia proof into ``receiptsRoot`` shows it (:mod:`ledger.chain.mpt`
  builds the trie for ``ledger export`` and walks the proof when checking).
* An EIP-1186 proof (``eth_getProof``) shows an account in ``stateRoot`` and
  storage slots in the account's ``storageRoot``.

Everything here raises :class:`EvidenceError` (an :class:`~ledger.errors.InputError`)
naming what does not check out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ledger.chain import rlp
from ledger.chain.mpt import Trie, value_from_proof
from ledger.chain.rpc import as_bytes, as_int
from ledger.errors import InputError
from ledger.hashing.keccak import keccak256
from ledger.ids import to_hex

__all__ = [
    "HEADER_FIELDS",
    "EvidenceError",
    "account_from_proof",
    "encode_receipt",
    "header_hash",
    "receipt_proof",
    "receipts_root",
    "slot_from_proof",
    "trim_header",
    "verify_receipt",
]

# (JSON-RPC name, kind): "int" quantities, "bytes" data, in the header's RLP order
HEADER_FIELDS: tuple[tuple[str, str], ...] = (
    ("parentHash", "bytes"),
    ("sha3Uncles", "bytes"),
    ("miner", "bytes"),
    ("stateRoot", "bytes"),
    ("transactionsRoot", "bytes"),
    ("receiptsRoot", "bytes"),
    ("logsBloom", "bytes"),
    ("difficulty", "int"),
    ("number", "int"),
    ("gasLimit", "int"),
    ("gasUsed", "int"),
    ("timestamp", "int"),
    ("extraData", "bytes"),
    ("mixHash", "bytes"),
    ("nonce", "bytes"),
    # the fields forks appended: London, Shanghai, Cancun (two), Cancun, Prague
    ("baseFeePerGas", "int"),
    ("withdrawalsRoot", "bytes"),
    ("blobGasUsed", "int"),
    ("excessBlobGas", "int"),
    ("parentBeaconBlockRoot", "bytes"),
    ("requestsHash", "bytes"),
)
_BASE_FIELDS = 15  # up to nonce: present in every header


class EvidenceError(InputError):
    """A piece of the bundle's chain evidence does not check out."""


def _field(header: Mapping[str, Any], name: str, kind: str) -> bytes | int:
    value = header[name]
    if not isinstance(value, str) or not value.startswith("0x"):
        raise EvidenceError(f"header field {name} is not 0x hex")
    try:
        return as_int(value) if kind == "int" else as_bytes(value)
    except ValueError as exc:
        raise EvidenceError(f"header field {name} is not 0x hex") from exc


def trim_header(block: Mapping[str, Any]) -> dict[str, Any]:
    """The header fields of a block as JSON-RPC gives it, and its ``hash``."""
    return {
        name: block[name]
        for name, _ in (*HEADER_FIELDS, ("hash", ""))
        if block.get(name) is not None
    }


def header_hash(header: Mapping[str, Any]) -> bytes:
    """keccak-256 of the header's RLP encoding: the block hash it must carry."""
    values: list[bytes | int] = []
    for position, (name, kind) in enumerate(HEADER_FIELDS):
        if name not in header:
            if position < _BASE_FIELDS:
                raise EvidenceError(f"a block header lacks {name}")
            break
        values.append(_field(header, name, kind))
    later = [name for name, _ in HEADER_FIELDS[len(values) :] if name in header]
    if later:
        raise EvidenceError(f"a block header has {later[0]} but lacks an earlier fork's field")
    return keccak256(rlp.encode(values))


def encode_receipt(receipt: Mapping[str, Any]) -> bytes:
    """The consensus encoding of a JSON-RPC receipt (EIP-2718 typed, or legacy)."""
    try:
        kind = as_int(receipt.get("type", "0x0"))
        logs = [
            [as_bytes(log["address"]), [as_bytes(t) for t in log["topics"]], as_bytes(log["data"])]
            for log in receipt["logs"]
        ]
        body: bytes = rlp.encode(
            [
                as_int(receipt["status"]),
                as_int(receipt["cumulativeGasUsed"]),
                as_bytes(receipt["logsBloom"]),
                logs,
            ]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise EvidenceError(f"a receipt cannot be encoded: {exc}") from exc
    if not 0 <= kind < 0x7F:
        raise EvidenceError(f"a receipt has transaction type {kind}")
    return body if kind == 0 else bytes([kind]) + body


def _receipts_trie(receipts: Sequence[Mapping[str, Any]]) -> Trie:
    return Trie(
        {
            rlp.encode(as_int(receipt["transactionIndex"])): encode_receipt(receipt)
            for receipt in receipts
        }
    )


def receipts_root(receipts: Sequence[Mapping[str, Any]]) -> bytes:
    """The root of the receipts trie of a block's receipts (all of them)."""
    return _receipts_trie(receipts).root


def receipt_proof(receipts: Sequence[Mapping[str, Any]], index: int) -> list[str]:
    """The proof nodes (RLP, ``0x`` hex) of receipt ``index`` in its block's receipts trie."""
    return [to_hex(node) for node in _receipts_trie(receipts).proof(rlp.encode(index))]


def _proven(root: bytes, key: bytes, proof: Sequence[object], what: str) -> bytes:
    try:
        nodes = [as_bytes(node) for node in proof]
        return value_from_proof(root, key, nodes)
    except (InputError, ValueError, TypeError) as exc:
        raise EvidenceError(f"{what}: the proof does not lead to its root ({exc})") from exc


def verify_receipt(
    receipt: Mapping[str, Any], index: int, proof: Sequence[object], root: bytes
) -> None:
    """Raises unless the proof shows ``receipt`` at ``index`` under ``root``."""
    what = f"receipt {index}"
    value = _proven(root, rlp.encode(index), proof, what)
    if value != encode_receipt(receipt):
        raise EvidenceError(f"{what} is not the one the block's receipts root holds")


def account_from_proof(
    address: bytes, proof: Sequence[object], state_root: bytes
) -> tuple[int, int, bytes, bytes]:
    """(nonce, balance, storageRoot, codeHash) of ``address`` proven under ``state_root``."""
    value = _proven(state_root, keccak256(address), proof, f"account {to_hex(address)}")
    if not value:
        raise EvidenceError(f"account {to_hex(address)} does not exist at that block")
    try:
        fields = rlp.decode(value)
    except rlp.RlpError as exc:
        raise EvidenceError(f"account {to_hex(address)}: undecodable account") from exc
    items = fields if isinstance(fields, list) else []
    words = [field for field in items if isinstance(field, bytes)]
    if len(words) != 4 or len(items) != 4:
        raise EvidenceError(f"account {to_hex(address)}: not four byte strings")
    nonce, balance, storage_root, code_hash = words
    return (
        int.from_bytes(nonce, "big"),
        int.from_bytes(balance, "big"),
        bytes(storage_root),
        bytes(code_hash),
    )


def slot_from_proof(slot: bytes, proof: Sequence[object], storage_root: bytes) -> bytes:
    """The 32-byte value of storage ``slot`` proven under ``storage_root`` (zero if unset)."""
    value = _proven(storage_root, keccak256(slot), proof, f"storage slot {to_hex(slot)}")
    if not value:
        return b"\x00" * 32
    try:
        raw = rlp.decode(value)
    except rlp.RlpError as exc:
        raise EvidenceError(f"storage slot {to_hex(slot)}: undecodable value") from exc
    if not isinstance(raw, bytes) or len(raw) > 32:
        raise EvidenceError(f"storage slot {to_hex(slot)}: not a 32-byte word")
    return raw.rjust(32, b"\x00")
