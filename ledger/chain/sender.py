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
- fees: the max fee is twice the next block's base fee (``eth_feeHistory``) plus
  the priority fee, never above the configured cap (``LEDGER_MAX_FEE_GWEI``):
  while the next block needs more than the cap, :class:`FeeAboveCapError` and
  nothing is signed. A stuck transaction is replaced by one with the same nonce
  and fees raised by at least :data:`FEE_BUMP` (``prepare(..., at_least=...)``);
- relaying: with a relayer key, every registry call is signed by the committer's
  key as an EIP-712 ``SignedCall`` (contract nonce ``nonces(signer)``, deadline
  :data:`SIGNED_CALL_LIFETIME` ahead) and sent as ``executeSigned`` from the
  relayer's account, which pays; the record names the committer;
- raw broadcast, receipts, nonces and block hashes for the journal.

A test signs the same transactions with eth_account and compares the bytes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ledger.chain.reader import RegistryReader
from ledger.chain.records import SignedCall, checksum_address
from ledger.chain.rlp import RlpError
from ledger.chain.rlp import decode as rlp_decode
from ledger.chain.rlp import encode as rlp_encode
from ledger.chain.rpc import JsonRpc, as_bytes, as_int
from ledger.config import GWEI, Secret, Settings, resolve_private_key
from ledger.errors import (
    ChainUnavailableError,
    ConfigError,
    FeeAboveCapError,
    InsufficientFundsError,
    NonceTooLowError,
    RpcError,
    TransactionRevertedError,
    UnderpricedError,
)
from ledger.hashing.keccak import keccak256
from ledger.hashing.merkle import CheckpointLeaf
from ledger.ids import to_hex

GAS_MARGIN = 1.2  # over the estimate, plus a fixed 10k: storage costs can shift by a block
FIRST_RECEIPT_LOOK = 0.00025  # s after the broadcast: an automining Anvil has the receipt
# in about 0.5 ms on a young chain (a few ms after thousands of blocks), almost never at once
FEE_BUMP = 1.125  # a replacement raises both fees by this much (geth asks +10% of each;
# +12.5% also clears nodes that ask more, e.g. the 12.5% some L2 sequencers want)
_ZERO = "0x" + "00" * 20
SIGNED_CALL_LIFETIME = 3600  # s: a relayed call's deadline; a replacement signs it again

_SIGNED_CALL_TYPE = keccak256(
    b"SignedCall(address signer,uint256 nonce,uint256 deadline,bytes data)"
)
_DOMAIN_TYPE = keccak256(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)


@dataclass(frozen=True)
class Fees:
    """The fees of an EIP-1559 transaction, in wei per gas."""

    max_fee: int
    priority: int

    def bumped(self) -> Fees:
        """The least a replacement of this transaction offers: both fees up by
        :data:`FEE_BUMP` (rounded up), and at least one wei."""
        return Fees(_raise(self.max_fee), _raise(self.priority))

    @classmethod
    def of(cls, raw: bytes) -> Fees:
        """The fees of a signed EIP-1559 transaction (its raw bytes)."""
        if raw[:1] != b"\x02":
            raise ValueError("not an EIP-1559 (type 2) transaction")
        try:
            fields = rlp_decode(raw[1:])
            if not isinstance(fields, list):
                raise TypeError("not an RLP list")
            return cls(max_fee=_int(_bytes(fields[3])), priority=_int(_bytes(fields[2])))
        except (RlpError, IndexError, TypeError) as exc:
            raise ValueError(f"not a signed EIP-1559 transaction: {exc}") from exc

    def __str__(self) -> str:
        return f"max fee {gwei(self.max_fee)} gwei, tip {gwei(self.priority)} gwei"


def _raise(value: int) -> int:
    return max(value + 1, -(-value * int(FEE_BUMP * 1000) // 1000))


def gwei(wei: int) -> str:
    """``wei`` in gwei, for people (at most 3 decimals)."""
    return f"{wei / GWEI:.3f}".rstrip("0").rstrip(".")


@dataclass(frozen=True)
class PreparedTx:
    """A signed transaction, ready to be saved and broadcast."""

    tx_hash: str
    raw: bytes
    sender: str
    nonce: int
    chain_id: int
    fees: Fees | None = None


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

    def __init__(self, secret: Secret, *, what: str = "private key") -> None:
        from coincurve import PrivateKey

        try:
            raw = bytes.fromhex(secret.reveal().removeprefix("0x"))
            if len(raw) != 32:
                raise ValueError("a secp256k1 key is 32 bytes")
            self._key = PrivateKey(raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"the configured {what} is not a valid secp256k1 key",
                hint="64 hex digits (with or without 0x)",
            ) from exc
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
        self,
        rpc: JsonRpc,
        address: str,
        signer: Signer,
        chain_id: int,
        deploy_block: int = 0,
        *,
        relayer: Signer | None = None,
        max_fee_per_gas: int | None = None,
    ) -> None:
        super().__init__(rpc, address, deploy_block)
        self.signer = signer
        """The committer: its key signs every registry call (and, without a relayer,
        the transactions that carry them)."""
        self.relayer = relayer
        """The account that sends (and pays for) the transactions, if not the signer."""
        self.chain_id = chain_id
        self.max_fee_per_gas = max_fee_per_gas
        self._domain: bytes | None = None

    @property
    def payer(self) -> Signer:
        """The account whose transactions these are (its nonce, its ETH)."""
        return self.relayer or self.signer

    @classmethod
    def connect(
        cls, settings: Settings, secret: Secret | None = None, *, relay: bool = True
    ) -> RegistrySender:
        """The registry named by the settings, signing with ``secret`` (else the
        configured key, resolved for the chain's id); with ``relay`` and a
        configured relayer key, its transactions are sent by the relayer."""
        reader = RegistryReader.connect(settings)
        chain_id = reader.rpc.chain_id()
        key = secret if secret is not None else resolve_private_key(settings, chain_id)
        relayer = None
        if relay and settings.relayer_key is not None:
            relayer = Signer(settings.relayer_key, what="LEDGER_RELAYER_KEY")
        return cls(
            reader.rpc,
            reader.address,
            Signer(key),
            chain_id,
            reader.deploy_block,
            relayer=relayer,
            max_fee_per_gas=settings.max_fee_per_gas,
        )

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

    def prepare(
        self,
        data: bytes,
        *,
        nonce: int | None = None,
        create: bool = False,
        at_least: Fees | None = None,
    ) -> PreparedTx:
        """Estimate gas (a refusal raises here, naming the contract's error) and sign.

        The estimate, the priority fee, the latest block, the next block's base fee
        and, without ``nonce``, the payer's pending nonce are asked in one batch
        request (a relayed call first asks its contract nonce and the time: one
        more). ``create``: ``data`` is the init code of a new contract, not a
        registry call (never relayed). ``at_least``: the fees a replacement must
        reach (see :meth:`Fees.bumped`). Raises :class:`FeeAboveCapError` when the
        next block (or the replacement) needs more per gas than the cap.
        """
        to = None if create else self.address
        if self.relayer is not None and not create:
            call = self.sign_data(self.signer, data)
            data = self.abi.call(
                "executeSigned",
                [call.signer, call.nonce, call.deadline, call.data, call.signature],
            )
        account = self.signer if create else self.payer  # a deployment is never relayed
        payer = account.address
        tx_call = {"from": payer, "data": to_hex(data)}
        if to is not None:
            tx_call["to"] = to
        # a replacement is estimated on the latest block: some nodes (Anvil) estimate on
        # the pending one, where the transaction it replaces has already run
        estimate: list[object] = [tx_call, "latest"] if at_least is not None else [tx_call]
        calls: list[tuple[str, Sequence[object]]] = [
            ("eth_estimateGas", estimate),
            ("eth_maxPriorityFeePerGas", []),
            ("eth_getBlockByNumber", ["latest", False]),
            ("eth_feeHistory", ["0x1", "latest", []]),
        ]
        if nonce is None:
            calls.append(("eth_getTransactionCount", [payer, "pending"]))
        answers = self.rpc.batch(calls)
        refusal = answers.error(0)
        if refusal is not None:
            raise self._revert_error(refusal) from refusal
        gas = as_int(answers[0])
        priority = as_int(answers[1])
        block = answers[2] or {}
        if nonce is None:
            nonce = as_int(answers[4])
        base = max(as_int(block.get("baseFeePerGas", "0x0")), _next_base_fee(answers, 3))
        fees = self._fees(base, priority, at_least)
        fields = {
            "gas": int(gas * GAS_MARGIN) + 10_000,
            "maxPriorityFeePerGas": fees.priority,
            "maxFeePerGas": fees.max_fee,
        }
        raw = account.sign_1559(self.chain_id, nonce, fields, to, data)
        return PreparedTx(
            tx_hash=to_hex(keccak256(raw)),
            raw=raw,
            sender=payer,
            nonce=nonce,
            chain_id=self.chain_id,
            fees=fees,
        )

    def _fees(self, base: int, priority: int, at_least: Fees | None) -> Fees:
        """Twice the next base fee plus the tip (room for a few full blocks), raised to
        ``at_least``, and held to the cap: above it, :class:`FeeAboveCapError`."""
        if at_least is not None:
            priority = max(priority, at_least.priority)
        max_fee = max(2 * base + priority, at_least.max_fee if at_least else 0)
        cap = self.max_fee_per_gas
        if cap is None:
            return Fees(max_fee, priority)
        needed = max(base + min(priority, cap), at_least.max_fee if at_least else 0)
        if needed > cap:
            what = "a replacement of the stuck transaction" if at_least else "the next block"
            raise FeeAboveCapError(
                f"{what} needs {gwei(needed)} gwei per gas (base fee {gwei(base)} gwei), "
                f"above LEDGER_MAX_FEE_GWEI={gwei(cap)}",
                needed=needed,
                cap=cap,
                hint="records wait in the outbox and go out once fees fall; "
                "raise LEDGER_MAX_FEE_GWEI to send them now",
            )
        return Fees(min(max_fee, cap), min(priority, cap))

    def fee_market(self) -> tuple[int, int]:
        """The base fee the next block will ask (``eth_feeHistory``; the latest
        block's where a node does not answer it) and the node's suggested tip."""
        answers = self.rpc.batch(
            [
                ("eth_getBlockByNumber", ["latest", False]),
                ("eth_feeHistory", ["0x1", "latest", []]),
                ("eth_maxPriorityFeePerGas", []),
            ]
        )
        block = answers[0] or {}
        base = max(as_int(block.get("baseFeePerGas", "0x0")), _next_base_fee(answers, 1))
        return base, as_int(answers[2])

    # -- signed calls (EIP-712) -------------------------------------------------------------

    def sign_data(
        self,
        signer: Signer,
        data: bytes,
        *,
        deadline: int | None = None,
        nonce: int | None = None,
    ) -> SignedCall:
        """``signer``'s EIP-712 signature of the registry call ``data``, for any relayer:
        its contract nonce ``nonces(signer)`` (used up when the call is executed, so the
        signature works once) and a deadline :data:`SIGNED_CALL_LIFETIME` after the
        latest block, unless given."""
        calls: list[tuple[str, Sequence[object]]] = []
        if nonce is None:
            ask = to_hex(self.abi.call("nonces", [signer.address]))
            calls.append(("eth_call", [{"to": self.address, "data": ask}, "latest"]))
        if deadline is None:
            calls.append(("eth_getBlockByNumber", ["latest", False]))
        answers = self.rpc.batch(calls) if calls else None
        if nonce is None:
            assert answers is not None
            nonce = int(self.abi.outputs("nonces", as_bytes(answers[0]))[0])
        if deadline is None:
            assert answers is not None
            block = answers[len(calls) - 1] or {}
            deadline = as_int(block.get("timestamp", "0x0")) + SIGNED_CALL_LIFETIME
        struct = keccak256(
            _SIGNED_CALL_TYPE
            + _word(as_bytes(signer.address))
            + _word(nonce)
            + _word(deadline)
            + keccak256(data)
        )
        digest = keccak256(b"\x19\x01" + self._domain_separator() + struct)
        return SignedCall(signer.address, nonce, deadline, data, signer.sign_digest(digest))

    def signed_call_used(self, raw: bytes) -> bool:
        """Whether the signed call a relayed transaction (its raw bytes) carries can no
        longer run: its signer's contract nonce has moved past it (the call ran in
        another transaction, e.g. a copy someone else relayed). False for a
        transaction that carries no signed call."""
        from ledger.chain.abi import decode_params

        try:
            fields = rlp_decode(raw[1:]) if raw[:1] == b"\x02" else []
            data = _bytes(fields[7]) if fields else b""
        except (RlpError, IndexError, TypeError):
            return False
        function = self.abi.functions["executeSigned"]
        if data[:4] != self.abi.call("executeSigned", [_ZERO, 0, 0, b"", b""])[:4]:
            return False
        try:
            signer, nonce = decode_params(function["inputs"], data[4:])[:2]
        except ValueError:
            return False
        return int(self._call("nonces", signer)[0]) > int(nonce)

    def _domain_separator(self) -> bytes:
        """The registry's EIP-712 domain, as it reports it (EIP-5267 ``eip712Domain``)."""
        if self._domain is None:
            _, name, version, chain_id, contract, _, _ = self._call("eip712Domain")
            self._domain = keccak256(
                _DOMAIN_TYPE
                + keccak256(str(name).encode())
                + keccak256(str(version).encode())
                + _word(int(chain_id))
                + _word(as_bytes(contract))
            )
        return self._domain

    def broadcast(self, raw: bytes) -> None:
        """Send a signed transaction; one the node already holds counts as sent.

        Raises :class:`NonceTooLowError` when its nonce is already used,
        :class:`UnderpricedError` when the node wants higher fees (under the base
        fee, or too small a raise over a pending transaction of the same nonce),
        :class:`InsufficientFundsError` when the payer cannot cover the gas.
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
            if "underpriced" in text or "less than block base fee" in text:
                raise UnderpricedError(f"fees too low for the node: {exc.message}") from exc
            if "insufficient funds" in text:
                raise InsufficientFundsError(
                    f"{self.payer.address} cannot pay for the gas of its transaction "
                    f"({exc.message})",
                    hint=f"send ETH to {self.payer.address}"
                    + (" (the relayer, LEDGER_RELAYER_KEY)" if self.relayer else "")
                    + "; the records wait in the outbox until then",
                ) from exc
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

    def head_and_hash(self, number: int) -> tuple[int, str | None]:
        """The chain's head block number and the hash of block ``number`` on it now
        (None beyond the head), in one batch request: how deep a receipt's block is,
        and whether it is still the chain's."""
        answers = self.rpc.batch(
            [("eth_blockNumber", []), ("eth_getBlockByNumber", [hex(number), False])]
        )
        block = answers[1]
        return as_int(answers[0]), str(block["hash"]) if block else None

    def block_hash(self, number: int) -> str | None:
        """The hash of block ``number`` on the chain now, or None beyond its head."""
        block = self.rpc("eth_getBlockByNumber", hex(number), False)
        return str(block["hash"]) if block else None

    def _revert_error(self, exc: RpcError) -> TransactionRevertedError:
        return self.abi.refusal(exc.message, exc.data)


def _bytes(item: object) -> bytes:
    """An RLP item that must be a byte string."""
    if not isinstance(item, bytes):
        raise TypeError("an RLP list where a byte string belongs")
    return item


def _int(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def _next_base_fee(answers: Any, index: int) -> int:
    """The next block's base fee from an ``eth_feeHistory`` answer in a batch (its
    last ``baseFeePerGas``); 0 when the node refused or left it out."""
    if answers.error(index) is not None:
        return 0
    history = answers[index] or {}
    fees = history.get("baseFeePerGas") or []
    return as_int(fees[-1]) if fees else 0


def _word(value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        return value.rjust(32, b"\x00")
    return value.to_bytes(32, "big")


def _leaf(leaf: CheckpointLeaf) -> tuple[int, bytes, bytes, bytes]:
    return (leaf.step, leaf.weights_digest, leaf.tensor_root, leaf.metrics_digest)


__all__ = [
    "FEE_BUMP",
    "Fees",
    "PreparedTx",
    "Receipt",
    "RegistrySender",
    "Signer",
    "address_of",
    "gwei",
]
