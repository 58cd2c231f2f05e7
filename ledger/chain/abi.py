"""The one Solidity ABI codec of ledger (no web3): calls, results, refusals, events.

The generic part encodes call arguments (static words, static tuples,
``bytes``/``string`` and dynamic arrays ``T[]``) and decodes return data and
event data of the types the registry uses: static words, ``string``/``bytes``,
dynamic arrays ``T[]`` and tuples (decoded to dicts keyed by component name, as
web3 does for events). Written from the Solidity ABI specification
(docs.soliditylang.org, "Contract ABI Specification").

:class:`RegistryAbi` applies it to the committed registry artifact: calldata,
results, the contract's custom errors (a refusal's revert data) and its events
as ``eth_getLogs`` returns them. :class:`LogDecoder` is the indexer's fast path
for the run events (five, and replay attestations) and ``ArtifactRevoked``, giving plain
JSON values.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ledger.chain.compiler import load_artifact
from ledger.chain.records import checksum_address
from ledger.chain.rpc import as_bytes, as_int
from ledger.errors import ChainError, TransactionRevertedError
from ledger.hashing.keccak import keccak256
from ledger.ids import label, to_hex

Param = Mapping[str, Any]
"""One ABI parameter as the artifact's JSON describes it (``type``, ``components``...)."""

WORD = 32


def canonical_type(param: Param) -> str:
    """The type as it appears in a signature: tuples spelled out, ``(bytes32,uint8)[]``."""
    kind = str(param["type"])
    if kind.startswith("tuple"):
        inner = ",".join(canonical_type(c) for c in param["components"])
        return f"({inner}){kind[len('tuple') :]}"
    return kind


def signature(item: Param) -> str:
    """``name(type,...)`` of a function, event or error."""
    return f"{item['name']}({','.join(canonical_type(p) for p in item['inputs'])})"


def selector(item: Param) -> bytes:
    return _signature_hash(signature(item))[:4]


def topic(item: Param) -> bytes:
    return _signature_hash(signature(item))


@functools.cache
def _signature_hash(text: str) -> bytes:
    """keccak256 of a signature; a client asks for the same few again and again."""
    return keccak256(text.encode())


def encode_static(kind: str, value: Any) -> bytes:
    """One 32-byte word for a static argument."""
    if kind == "address":
        return bytes(12) + bytes.fromhex(checksum_address(str(value))[2:])
    if kind == "bool":
        return int(bool(value)).to_bytes(WORD, "big")
    if kind.startswith("uint"):
        return int(value).to_bytes(WORD, "big")
    if kind.startswith("bytes") and kind != "bytes":
        raw = bytes(value)
        if len(raw) != int(kind[5:]):
            raise ValueError(f"{kind} needs {kind[5:]} bytes, got {len(raw)}")
        return raw.ljust(WORD, b"\x00")
    raise ValueError(f"encoding {kind} is not supported here")


def encode_call(function: Param, args: Sequence[Any]) -> bytes:
    params = function["inputs"]
    if len(params) != len(args):
        raise ValueError(f"{function['name']} takes {len(params)} arguments, got {len(args)}")
    return selector(function) + encode_params(params, args)


def encode_params(params: Sequence[Param], values: Sequence[Any]) -> bytes:
    """Values laid out as one ABI tuple: static heads inline, dynamic ones by offset."""
    head_size = sum(_head_size(p) for p in params)
    heads: list[bytes] = []
    tails: list[bytes] = []
    for param, value in zip(params, values, strict=True):
        encoded = _encode_value(param, value)
        if _is_dynamic(param):
            offset = head_size + sum(len(t) for t in tails)
            heads.append(offset.to_bytes(WORD, "big"))
            tails.append(encoded)
        else:
            heads.append(encoded)
    return b"".join(heads) + b"".join(tails)


def _encode_value(param: Param, value: Any) -> bytes:
    kind = str(param["type"])
    if kind.endswith("[]"):
        element = {**param, "type": kind[:-2]}
        items = list(value)
        return len(items).to_bytes(WORD, "big") + encode_params([element] * len(items), items)
    if kind == "tuple":
        items = list(value.values()) if isinstance(value, Mapping) else list(value)
        return encode_params(param["components"], items)
    if kind in ("string", "bytes"):
        raw = value.encode() if isinstance(value, str) else bytes(value)
        padded = raw + bytes(-len(raw) % WORD)
        return len(raw).to_bytes(WORD, "big") + padded
    return encode_static(kind, value)


def _is_dynamic(param: Param) -> bool:
    kind = str(param["type"])
    if kind in ("string", "bytes") or kind.endswith("[]"):
        return True
    if kind == "tuple":
        return any(_is_dynamic(c) for c in param["components"])
    return False


def _word(data: bytes, at: int) -> bytes:
    if at + WORD > len(data):
        raise ValueError("ABI data is shorter than its types need")
    return data[at : at + WORD]


def _uint(data: bytes, at: int) -> int:
    return int.from_bytes(_word(data, at), "big")


def _decode_one(param: Param, data: bytes, at: int) -> Any:
    """Decode ``param`` whose head is at ``at`` (offsets are relative to ``data``)."""
    kind = str(param["type"])
    if kind.endswith("[]"):
        start = _uint(data, at)
        count = _uint(data, start)
        element = {**param, "type": kind[:-2]}
        return decode_params([element] * count, data[start + WORD :])
    if kind == "tuple":
        if _is_dynamic(param):
            return decode_tuple(param["components"], data[_uint(data, at) :])
        return decode_tuple(param["components"], data[at:])
    if kind in ("string", "bytes"):
        start = _uint(data, at)
        length = _uint(data, start)
        raw = data[start + WORD : start + WORD + length]
        if len(raw) != length:
            raise ValueError("ABI data is shorter than its types need")
        return raw.decode("utf-8", errors="replace") if kind == "string" else raw
    word = _word(data, at)
    if kind == "address":
        return checksum_address(word[12:])
    if kind == "bool":
        return word[-1] == 1
    if kind.startswith("uint"):
        return int.from_bytes(word, "big")
    if kind.startswith("bytes"):
        return word[: int(kind[5:])]
    raise ValueError(f"decoding {kind} is not supported here")


def _head_size(param: Param) -> int:
    if _is_dynamic(param):
        return WORD
    if param["type"] == "tuple":
        return sum(_head_size(c) for c in param["components"])
    return WORD


def decode_params(params: Sequence[Param], data: bytes) -> list[Any]:
    """Decode a sequence of values laid out as one ABI tuple."""
    values = []
    at = 0
    for param in params:
        values.append(_decode_one(param, data, at))
        at += _head_size(param)
    return values


def decode_tuple(components: Sequence[Param], data: bytes) -> dict[str, Any]:
    values = decode_params(components, data)
    return {str(c["name"]): v for c, v in zip(components, values, strict=True)}


# -- the registry's ABI ------------------------------------------------------------


def _params(spec: str, indexed: int = 0) -> list[dict[str, Any]]:
    """ABI parameters from ``"type name, ..."``; the first ``indexed`` are indexed."""
    params = []
    for i, item in enumerate(spec.split(",")):
        kind, name = item.split()
        params.append({"name": name, "type": kind, "indexed": i < indexed})
    return params


REGISTRY_V2_ITEMS: tuple[dict[str, Any], ...] = (
    {
        "type": "event",
        "name": "RunStarted",
        "inputs": [
            *_params("bytes32 runId, address committer, bytes32 manifestDigest", indexed=2),
            {
                "name": "parents",
                "type": "tuple[]",
                "indexed": False,
                "components": _params("bytes32 runId, uint8 relation"),
            },
        ],
    },
    {
        "type": "event",
        "name": "CheckpointCommitted",
        "inputs": _params(
            "bytes32 runId, bytes32 weightsDigest, bytes32 tensorRoot, uint64 step, "
            "bytes32 metricsDigest",
            indexed=3,
        ),
    },
    {
        "type": "event",
        "name": "RunFinalized",
        "inputs": _params(
            "bytes32 runId, bytes32 weightsDigest, bytes32 tensorRoot, bytes32 metricsDigest, "
            "bytes32 checkpointRoot, uint64 checkpointCount",
            indexed=3,
        ),
    },
    {"type": "event", "name": "RunFailed", "inputs": _params("bytes32 runId, string reason", 1)},
    {
        "type": "function",
        "name": "getRun",
        "inputs": _params("bytes32 runId"),
        "outputs": [
            {
                "name": "",
                "type": "tuple",
                "components": _params(
                    "address committer, uint64 startedAt, uint8 status, bool revoked, "
                    "bytes32 finalCommitment"
                ),
            }
        ],
    },
)
"""What registry 2.0.0 spelled differently from the committed (3.x) artifact: four
events without the previous-block links, and ``getRun`` with a start time instead of
blocks. Logs of a registry-2 deployment decode through these; reads of one choose
``getRun``'s outputs by ``version()``."""


class RegistryAbi:
    """The registry's functions, events and custom errors, from the committed artifact."""

    def __init__(self, entries: Sequence[Mapping[str, Any]] | None = None) -> None:
        items: Sequence[Mapping[str, Any]] = load_artifact()["abi"] if entries is None else entries
        self.functions = {str(i["name"]): i for i in items if i.get("type") == "function"}
        self.events = {str(i["name"]): i for i in items if i.get("type") == "event"}
        self.constructor = next((i for i in items if i.get("type") == "constructor"), None)
        self._errors = {selector(i): i for i in items if i.get("type") == "error"}
        self._by_topic = {to_hex(topic(e)): e for e in self.events.values()}
        self.v2_functions = {
            str(i["name"]): i for i in REGISTRY_V2_ITEMS if i["type"] == "function"
        }
        self._v2_topics: dict[str, str] = {}
        for item in REGISTRY_V2_ITEMS:
            if item["type"] == "event" and item["name"] in self.events:
                self._by_topic.setdefault(to_hex(topic(item)), item)
                self._v2_topics[str(item["name"])] = to_hex(topic(item))

    # -- calls -----------------------------------------------------------------------

    def call(self, function: str, args: Sequence[Any]) -> bytes:
        """Calldata of ``function(*args)``."""
        return encode_call(self.functions[function], args)

    def constructor_args(self, args: Sequence[Any]) -> bytes:
        """The constructor's arguments, as they follow the bytecode of a deployment."""
        params = self.constructor["inputs"] if self.constructor else []
        return encode_params(params, args)

    def outputs(self, function: str, data: bytes, *, v2: bool = False) -> list[Any]:
        """The decoded return values of ``function`` (as registry 2 returned them,
        with ``v2``, where they differ)."""
        item = self.v2_functions.get(function) if v2 else None
        try:
            return decode_params((item or self.functions[function])["outputs"], data)
        except ValueError as exc:
            raise ChainError(f"{function} answered undecodable data: {exc}") from exc

    def refusal(self, message: str, data: object) -> TransactionRevertedError:
        """The error for a refused call, naming the contract's custom error when the
        revert data (``0x`` hex, as a node reports it) is one of the registry's."""
        text = data if isinstance(data, str) else ""
        error = self._errors.get(as_bytes(text[:10])) if len(text) >= 10 else None
        if error is None:
            return TransactionRevertedError(
                f"the registry refused: {message}", error_name="Unknown"
            )
        try:
            args = tuple(decode_params(error["inputs"], as_bytes(text[10:])))
        except ValueError as exc:
            raise ChainError(f"cannot decode the registry's refusal {text}: {exc}") from exc
        shown = ", ".join(to_hex(a) if isinstance(a, bytes) else str(a) for a in args)
        name = str(error["name"])
        return TransactionRevertedError(
            f"the registry refused: {name}({shown})", error_name=name, args=args
        )

    # -- events ----------------------------------------------------------------------

    def event_topic(self, name: str) -> str:
        """Topic 0 of event ``name``, as ``0x`` hex."""
        return to_hex(topic(self.events[name]))

    def event_topics(self, name: str) -> list[str]:
        """Every topic 0 event ``name`` has had (this version's first, then registry
        2's where it differed): a log filter that matches either deployment."""
        current = self.event_topic(name)
        old = self._v2_topics.get(name)
        return [current] if old is None else [current, old]

    def decode_log(self, log: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """A raw ``eth_getLogs`` entry as ``(event name, values)``, or None for a log
        that is none of the registry's events.

        Values are decoded (bytes, ints, checksummed addresses, tuples as dicts) and
        keyed by parameter name in the event's order, followed by ``blockNumber``
        and ``logIndex`` (ints) and ``transactionHash`` (``0x`` hex)."""
        topics = log.get("topics") or []
        event = self._by_topic.get(str(topics[0]).lower()) if topics else None
        if event is None:
            return None
        inputs = event["inputs"]
        indexed = [p for p in inputs if p.get("indexed")]
        plain = [p for p in inputs if not p.get("indexed")]
        try:
            names = (str(p["name"]) for p in plain)
            values = dict(zip(names, decode_params(plain, as_bytes(log["data"])), strict=True))
            for param, word in zip(indexed, topics[1:], strict=True):
                values[str(param["name"])] = decode_params([param], as_bytes(word))[0]
            return str(event["name"]), {
                **{str(p["name"]): values[str(p["name"])] for p in inputs},
                "blockNumber": as_int(log["blockNumber"]),
                "logIndex": as_int(log.get("logIndex", 0)),
                "transactionHash": str(log["transactionHash"]),
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise ChainError(f"cannot decode a {event['name']} log: {exc}") from exc


@functools.cache
def registry_abi() -> RegistryAbi:
    """The committed registry's ABI (read once per process)."""
    return RegistryAbi()


# -- the indexer's events -----------------------------------------------------------

EVENT_NAMES = (
    "RunStarted",
    "CheckpointCommitted",
    "RunFinalized",
    "RunFailed",
    "RunRevoked",
    "ReplayAttested",
)
INDEXED_EVENTS = (*EVENT_NAMES, "ArtifactRevoked")
"""What the indexer reads: the run events (replay attestations included), and artifact
(dataset) revocations, whose :attr:`Log.run_id` is the revoked digest (their first
indexed topic)."""


@dataclass(frozen=True)
class Log:
    """One decoded run event at its place in the chain, as plain JSON values
    (bytes as ``0x`` hex, relations by name): stored as it is, replayed after a reorg."""

    block_number: int
    block_hash: str
    log_index: int
    tx_hash: str
    name: str
    run_id: str
    args: dict[str, Any]


class LogDecoder:
    """Decodes the registry's run events and ``ArtifactRevoked`` from raw ``eth_getLogs`` entries.

    Per-log generic decoding is far slower than the 5,000 events/s the indexer
    aims for, and the events have fixed layouts: :meth:`decode` slices their
    words out of the hex directly (about 20 times faster).
    :meth:`decode_generic` gives the same through :meth:`RegistryAbi.decode_log`,
    and a test compares the two."""

    def __init__(self, registry: RegistryAbi | None = None) -> None:
        self._abi = registry or registry_abi()
        self._names: dict[str, str] = {}
        self._fast: dict[str, Callable[[Sequence[str], str], dict[str, Any]]] = {}
        for name in INDEXED_EVENTS:
            current, *older = self._abi.event_topics(name)
            self._names[current] = name
            self._fast[current] = _FAST[name]
            for old in older:  # registry 2: the same fields without the block links
                self._names[old] = name
                self._fast[old] = _FAST_V2[name]

    @property
    def topics(self) -> list[str]:
        return list(self._names)

    def decode(self, raw: Mapping[str, Any]) -> Log | None:
        """The event, or None for a log that is not one of the run events."""
        topics = raw.get("topics") or []
        name = self._names.get(str(topics[0])) if topics else None
        if name is None:
            return None
        try:
            args = self._fast[str(topics[0])](topics, str(raw["data"])[2:])
            return _log(raw, name, str(topics[1]).lower(), args)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ChainError(f"cannot decode a {name} log: {exc}") from exc

    def decode_generic(self, raw: Mapping[str, Any]) -> Log | None:
        """The same as :meth:`decode`, through the generic ABI codec."""
        topics = raw.get("topics") or []
        if not topics or str(topics[0]) not in self._names:
            return None
        decoded = self._abi.decode_log(raw)
        if decoded is None:
            return None
        name, values = decoded
        args = {
            k: v
            for k, v in values.items()
            if k not in ("blockNumber", "logIndex", "transactionHash")
        }
        if name == "RunStarted":
            args["parents"] = [
                {"runId": p["runId"], "relation": label(int(p["relation"]))}
                for p in args["parents"]
            ]
        key = bytes(args.pop("runId")) if "runId" in args else bytes(args["digest"])
        return _log(raw, name, to_hex(key), _plain(args))


def _log(raw: Mapping[str, Any], name: str, run_id: str, args: dict[str, Any]) -> Log:
    return Log(
        block_number=as_int(raw["blockNumber"]),
        block_hash=str(raw["blockHash"]),
        log_index=as_int(raw["logIndex"]),
        tx_hash=str(raw["transactionHash"]),
        name=name,
        run_id=run_id,
        args=args,
    )


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return to_hex(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


HEX_WORD = 64  # hex digits per ABI word


def _hex_word(data: str, i: int) -> str:
    word = data[i * HEX_WORD : (i + 1) * HEX_WORD]
    if len(word) != HEX_WORD:
        raise ValueError("event data is shorter than its types need")
    return word


def _hex32(word: str) -> str:
    return "0x" + word.lower()


@functools.lru_cache(maxsize=4096)
def _address(word: str) -> str:
    return checksum_address(word[-40:])


def _string(data: str, head: int) -> str:
    start = int(_hex_word(data, head), 16) * 2
    length = int(data[start : start + HEX_WORD], 16)
    raw = bytes.fromhex(data[start + HEX_WORD : start + HEX_WORD + 2 * length])
    if len(raw) != length:
        raise ValueError("event data is shorter than its string")
    return raw.decode("utf-8", errors="replace")


def _started_v2(topics: Sequence[str], data: str) -> dict[str, Any]:
    start = int(_hex_word(data, 1), 16) * 2
    count = int(data[start : start + HEX_WORD], 16)
    parents = []
    at = start + HEX_WORD
    for _ in range(count):
        parents.append(
            {
                "runId": _hex32(data[at : at + HEX_WORD]),
                "relation": label(int(data[at + HEX_WORD : at + 2 * HEX_WORD], 16)),
            }
        )
        at += 2 * HEX_WORD
    if len(data) < at:
        raise ValueError("event data is shorter than its parents")
    return {
        "committer": _address(str(topics[2])),
        "manifestDigest": _hex32(_hex_word(data, 0)),
        "parents": parents,
    }


def _started(topics: Sequence[str], data: str) -> dict[str, Any]:
    start = int(_hex_word(data, 2), 16) * 2
    count = int(data[start : start + HEX_WORD], 16)
    links = [int(_hex_word(data[start + HEX_WORD :], i), 16) for i in range(count)]
    return {**_started_v2(topics, data), "previousChildBlocks": links}


def _checkpoint_v2(topics: Sequence[str], data: str) -> dict[str, Any]:
    return {
        "weightsDigest": str(topics[2]).lower(),
        "tensorRoot": str(topics[3]).lower(),
        "step": int(_hex_word(data, 0), 16),
        "metricsDigest": _hex32(_hex_word(data, 1)),
    }


def _links(data: str, first: int) -> dict[str, Any]:
    """The three previous-block links of a registry-3 weights event, from word ``first``."""
    return {
        "previousRunBlock": int(_hex_word(data, first), 16),
        "previousWeightsBlock": int(_hex_word(data, first + 1), 16),
        "previousTensorBlock": int(_hex_word(data, first + 2), 16),
    }


def _checkpoint(topics: Sequence[str], data: str) -> dict[str, Any]:
    return {**_checkpoint_v2(topics, data), **_links(data, 2)}


def _finalized_v2(topics: Sequence[str], data: str) -> dict[str, Any]:
    return {
        "weightsDigest": str(topics[2]).lower(),
        "tensorRoot": str(topics[3]).lower(),
        "metricsDigest": _hex32(_hex_word(data, 0)),
        "checkpointRoot": _hex32(_hex_word(data, 1)),
        "checkpointCount": int(_hex_word(data, 2), 16),
    }


def _finalized(topics: Sequence[str], data: str) -> dict[str, Any]:
    return {**_finalized_v2(topics, data), **_links(data, 3)}


def _failed_v2(topics: Sequence[str], data: str) -> dict[str, Any]:
    return {"reason": _string(data, 0)}


def _failed(topics: Sequence[str], data: str) -> dict[str, Any]:
    return {"reason": _string(data, 0), "previousRunBlock": int(_hex_word(data, 1), 16)}


def _artifact_revoked(topics: Sequence[str], data: str) -> dict[str, Any]:
    return {
        "digest": str(topics[1]).lower(),
        "revoker": _address(str(topics[2])),
        "reason": _string(data, 0),
    }


def _revoked(topics: Sequence[str], data: str) -> dict[str, Any]:
    return {"revoker": _address(str(topics[2])), "reason": _string(data, 0)}


def _attested(topics: Sequence[str], data: str) -> dict[str, Any]:
    return {
        "attester": _address(str(topics[2])),
        "fromStep": int(_hex_word(data, 0), 16),
        "toStep": int(_hex_word(data, 1), 16),
        "reproduced": bool(int(_hex_word(data, 2), 16)),
        "reportDigest": _hex32(_hex_word(data, 3)),
        "previousBlock": int(_hex_word(data, 4), 16),
    }


_FAST: dict[str, Callable[[Sequence[str], str], dict[str, Any]]] = {
    "RunStarted": _started,
    "CheckpointCommitted": _checkpoint,
    "RunFinalized": _finalized,
    "RunFailed": _failed,
    "RunRevoked": _revoked,
    "ArtifactRevoked": _artifact_revoked,
    "ReplayAttested": _attested,
}
_FAST_V2 = {
    **_FAST,
    "RunStarted": _started_v2,
    "CheckpointCommitted": _checkpoint_v2,
    "RunFinalized": _finalized_v2,
    "RunFailed": _failed_v2,
}
