"""Sign and send registry transactions over plain JSON-RPC: the outbox's chain client.

The outbox worker runs beside training, so what it costs matters: web3 and
eth_account take 1-2 s of CPU to import and several milliseconds per call to
normalise arguments. This client extends the read-only
:class:`~ledger.chain.reader.RegistryReader` with what sending needs and nothing
more:

- calldata from the committed ABI (:class:`~ledger.chain.abi.RegistryAbi`);
- EIP-1559 (type 2) transactions, RLP-encoded here (Ethereum yellow paper,
  appendix B; EIP-2718, EIP-1559), signed with libsecp256k1 through
  ``coincurve`` (low-s, recoverable signatures);
- gas estimated first, so a refusal surfaces before anything is signed, as a
  :class:`~ledger.errors.TransactionRevertedError` naming the contract's error
  (decoded by :meth:`~ledger.chain.abi.RegistryAbi.refusal`); the estimate, fees
  and nonce come in one batch request (one round trip);
- raw broadcast, receipts, nonces and block hashes for the journal.

A test signs the same transactions with eth_account and compares the bytes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ledger.chain.reader import RegistryReader
from ledger.chain.records import checksum_address
from ledger.chain.rpc import JsonRpc, as_bytes, as_int
from ledger.config import Secret, Settings, resolve_private_key
from ledger.errors import (
    ChainUnavailableError,
    ConfigError,
    NonceTooLowError,
    RpcError,
    TransactionRevertedError,
)
from ledger.hashing.keccak import keccak256
from ledger.hashing.merkle import CheckpointLeaf
from ledger.ids import to_hex

GAS_MARGIN = 1.2  # over the estimate, plus a fixed 10k: storage costs can shift by a block
FIRST_RECEIPT_LOOK = 0.00025  # s after the broadcast: an automining Anvil has the receipt
# in about 0.5 ms on a young chain (a few ms after thousands of blocks), almost never at once


@dataclass(frozen=True)
class PreparedTx:
    """A signed transaction, ready to be saved and broadcast."""

    tx_hash: str
    raw: bytes
    sender: str
    nonce: int
    chain_id: int


@dataclass(frozen=True)
class Receipt:
    tx_hash: str
    ok: bool
    block_number: int
    block_hash: str
    gas_used: int
    contract_address: str | None = None
    """The contract a deployment created (None for calls)."""
    logs: tuple[dict[str, Any], ...] = ()
    """The raw logs the transaction emitted (``eth_getLogs`` entries)."""


class Signer:
    """A secp256k1 key that signs Ethereum transactions; never shows the key."""

    def __init__(self, secret: Secret) -> None:
        from coincurve import PrivateKey

        try:
            raw = bytes.fromhex(secret.reveal().removeprefix("0x"))
            if len(raw) != 32:
                raise ValueError("a secp256k1 key is 32 bytes")
            self._key = PrivateKey(raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError("the configured private key is not a valid secp256k1 key") from exc
        public = self._key.public_key.format(compressed=False)[1:]
        self.address = checksum_address(keccak256(public)[-20:])

    def __repr__(self) -> str:
        return f"Signer({self.address})"

    def sign_1559(
        self, chain_id: int, nonce: int, fields: dict[str, int], to: str | None, data: bytes
    ) -> bytes:
        """The raw bytes of a signed EIP-1559 call of ``to`` (no value, no access list);
        ``to`` None creates a contract whose init code is ``data``."""
        body: list[Any] = [
            chain_id,
            nonce,
            fields["maxPriorityFeePerGas"],
            fields["maxFeePerGas"],
            fields["gas"],
            b"" if to is None else as_bytes(to),
            0,
            data,
            [],
        ]
        digest = keccak256(b"\x02" + rlp_encode(body))
        signature = self._key.sign_recoverable(digest, hasher=None)  # r || s || recovery id
        r, s, parity = signature[:32], signature[32:64], signature[64]
        return b"\x02" + rlp_encode([*body, parity, _int(r), _int(s)])

    def sign_digest(self, digest: bytes) -> bytes:
        """The 65-byte ``r || s || v`` signature (``v`` 27 or 28) of a 32-byte digest,
        as ``ecrecover`` and OpenZeppelin's ``ECDSA.recover`` take it."""
        signature = self._key.sign_recoverable(digest, hasher=None)
        return signature[:64] + bytes([27 + signature[64]])


def address_of(secret: Secret) -> str:
    """The address of a private key (no chain needed)."""
    return Signer(secret).address


class RegistrySender(RegistryReader):
    """A registry client that signs with one key and sends raw transactions."""

    def __init__(
        self, rpc: JsonRpc, address: str, signer: Signer, chain_id: int, deploy_block: int = 0
    ) -> None:
        super().__init__(rpc, address, deploy_block)
        self.signer = signer
        self.chain_id = chain_id

    @classmethod
    def connect(cls, settings: Settings, secret: Secret | None = None) -> RegistrySender:
        """The registry named by the settings, signing with ``secret`` (else the
        configured key, resolved for the chain's id)."""
        reader = RegistryReader.connect(settings)
        chain_id = reader.rpc.chain_id()
        key = secret if secret is not None else resolve_private_key(settings, chain_id)
        return cls(reader.rpc, reader.address, Signer(key), chain_id, reader.deploy_block)

    # -- calldata -------------------------------------------------------------------

    def batch_call(self, kind: str, items: Sequence[Any]) -> bytes:
        """Calldata committing ``items`` of one kind in one transaction.

        ``start``: (manifest digest, parents); ``checkpoint``: (run id, leaf);
        ``finalize``: (run id, FinalRecord); ``fail`` and ``revoke``: one (run id, reason).
        """
        if kind == "start":
            starts = [(m, [(p, int(r)) for p, r in parents]) for m, parents in items]
            return self._calldata("startRuns", [starts])
        if kind == "checkpoint":
            return self._calldata("commitCheckpoints", [[(r, _leaf(c)) for r, c in items]])
        if kind == "finalize":
            return self._calldata("finalizeRuns", [[(r, f.as_tuple()) for r, f in items]])
        if kind == "fail" and len(items) == 1:
            run_id, reason = items[0]
            return self._calldata("markFailed", [run_id, reason])
        if kind == "revoke" and len(items) == 1:
            run_id, reason = items[0]
            return self._calldata("revokeRun", [run_id, reason])
        raise ValueError(f"no batch call for {len(items)} {kind!r} items")

    def _calldata(self, function: str, args: Sequence[Any]) -> bytes:
        return self.abi.call(function, args)

    # -- sign, broadcast, confirm -----------------------------------------------------

    def prepare(self, data: bytes, *, nonce: int | None = None, create: bool = False) -> PreparedTx:
        """Estimate gas (a refusal raises here, naming the contract's error) and sign.

        The estimate, the priority fee, the latest block's base fee and, without
        ``nonce``, the sender's pending nonce are asked in one batch request.
        ``create``: ``data`` is the init code of a new contract, not a registry call.
        """
        to = None if create else self.address
        call = {"from": self.signer.address, "data": to_hex(data)}
        if to is not None:
            call["to"] = to
        calls: list[tuple[str, Sequence[object]]] = [
            ("eth_estimateGas", [call]),
            ("eth_maxPriorityFeePerGas", []),
            ("eth_getBlockByNumber", ["latest", False]),
        ]
        if nonce is None:
            calls.append(("eth_getTransactionCount", [self.signer.address, "pending"]))
        answers = self.rpc.batch(calls)
        refusal = answers.error(0)
        if refusal is not None:
            raise self._revert_error(refusal) from refusal
        gas = as_int(answers[0])
        priority = as_int(answers[1])
        block = answers[2] or {}
        if nonce is None:
            nonce = as_int(answers[3])
        base = as_int(block.get("baseFeePerGas", "0x0"))
        fields = {
            "gas": int(gas * GAS_MARGIN) + 10_000,
            "maxPriorityFeePerGas": priority,
            "maxFeePerGas": 2 * base + priority,
        }
        raw = self.signer.sign_1559(self.chain_id, nonce, fields, to, data)
        return PreparedTx(
            tx_hash=to_hex(keccak256(raw)),
            raw=raw,
            sender=self.signer.address,
            nonce=nonce,
            chain_id=self.chain_id,
        )

    def broadcast(self, raw: bytes) -> None:
        """Send a signed transaction; one the node already holds counts as sent.

        Raises :class:`NonceTooLowError` when its nonce is already used.
        """
        try:
            self.rpc("eth_sendRawTransaction", to_hex(raw))
        except RpcError as exc:
            text = str(exc).lower()
            if "already known" in text or "already imported" in text:
                return
            if "nonce too low" in text or "nonce is too low" in text:
                # our own earlier send, whose answer a dropped connection lost, and
                # which was mined since: sent, not a nonce clash
                if self.rpc("eth_getTransactionByHash", to_hex(keccak256(raw))):
                    return
                raise NonceTooLowError(f"nonce already used: {exc.message}") from exc
            raise ChainUnavailableError(f"transaction failed to send: {exc.message}") from exc

    def receipt(self, tx_hash: str) -> Receipt | None:
        """The receipt of a transaction, or None while it is not mined (or unknown)."""
        found = self.rpc("eth_getTransactionReceipt", tx_hash)
        if not found or found.get("blockNumber") is None:
            return None
        created = found.get("contractAddress")
        return Receipt(
            tx_hash=tx_hash,
            ok=as_int(found["status"]) == 1,
            block_number=as_int(found["blockNumber"]),
            block_hash=str(found["blockHash"]),
            gas_used=as_int(found["gasUsed"]),
            contract_address=checksum_address(str(created)) if created else None,
            logs=tuple(log for log in found.get("logs") or () if isinstance(log, dict)),
        )

    def wait_for_receipt(self, tx_hash: str, timeout: float) -> Receipt | None:
        """The receipt of a broadcast transaction, or None if it is not mined within
        ``timeout`` seconds: first looked at after ``FIRST_RECEIPT_LOOK``, then after
        twice as long each time (at most a quarter of a second)."""
        deadline = time.monotonic() + timeout
        delay = FIRST_RECEIPT_LOOK
        while True:
            time.sleep(delay)
            receipt = self.receipt(tx_hash)
            if receipt is not None or time.monotonic() > deadline:
                return receipt
            delay = min(delay * 2, 0.25)

    def pending_nonce(self) -> int:
        return as_int(self.rpc("eth_getTransactionCount", self.signer.address, "pending"))

    def mined_nonce(self, sender: str) -> int:
        """How many transactions of ``sender`` are mined (its next nonce in a block)."""
        return as_int(self.rpc("eth_getTransactionCount", checksum_address(sender), "latest"))

    def block_hashes(self, numbers: Sequence[int]) -> dict[int, str | None]:
        """The hashes of blocks ``numbers`` on the chain now (None beyond its head),
        a few hundred per batch request."""
        found: dict[int, str | None] = {}
        wanted = sorted(set(numbers))
        for start in range(0, len(wanted), 256):
            chunk = wanted[start : start + 256]
            answers = self.rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in chunk])
            for number, block in zip(chunk, answers, strict=True):
                found[number] = str(block["hash"]) if block else None
        return found

    def block_hash(self, number: int) -> str | None:
        """The hash of block ``number`` on the chain now, or None beyond its head."""
        block = self.rpc("eth_getBlockByNumber", hex(number), False)
        return str(block["hash"]) if block else None

    def _revert_error(self, exc: RpcError) -> TransactionRevertedError:
        return self.abi.refusal(exc.message, exc.data)


# -- RLP (yellow paper, appendix B) ----------------------------------------------------


def rlp_encode(item: bytes | int | Sequence[Any]) -> bytes:
    """RLP of a byte string, a non-negative integer (big-endian, no leading zeros)
    or a list of such items."""
    if isinstance(item, int):
        if item < 0:
            raise ValueError("RLP encodes non-negative integers only")
        return rlp_encode(item.to_bytes((item.bit_length() + 7) // 8, "big"))
    if isinstance(item, bytes | bytearray):
        raw = bytes(item)
        if len(raw) == 1 and raw[0] < 0x80:
            return raw
        return _length_prefix(len(raw), 0x80) + raw
    payload = b"".join(rlp_encode(part) for part in item)
    return _length_prefix(len(payload), 0xC0) + payload


def _length_prefix(length: int, offset: int) -> bytes:
    if length < 56:
        return bytes([offset + length])
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([offset + 55 + len(size)]) + size


def _int(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def _leaf(leaf: CheckpointLeaf) -> tuple[int, bytes, bytes, bytes]:
    return (leaf.step, leaf.weights_digest, leaf.tensor_root, leaf.metrics_digest)


__all__ = [
    "PreparedTx",
    "Receipt",
    "RegistrySender",
    "Signer",
    "address_of",
    "rlp_encode",
]
