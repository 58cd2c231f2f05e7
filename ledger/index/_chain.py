"""What the indexer reads from the chain: registry logs decoded without web3
(per-log web3 decoding is far slower than the 5,000 events/s the indexer aims
for). Block headers come in JSON-RPC batches (:meth:`~ledger.chain.reader.JsonRpc.batch`).

Decoded events are plain JSON values (bytes as ``0x`` hex, relations by name),
so they can be stored as they are and replayed after a reorg.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ledger.chain import abi
from ledger.chain.compiler import load_artifact
from ledger.chain.records import checksum_address
from ledger.errors import ChainError
from ledger.ids import label, to_hex

EVENT_NAMES = ("RunStarted", "CheckpointCommitted", "RunFinalized", "RunFailed", "RunRevoked")


@dataclass(frozen=True)
class Log:
    """One decoded registry event at its place in the chain."""

    block_number: int
    block_hash: str
    log_index: int
    tx_hash: str
    name: str
    run_id: str
    args: dict[str, Any]


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return to_hex(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class LogDecoder:
    """Decodes the registry's five run events from raw ``eth_getLogs`` entries."""

    def __init__(self) -> None:
        entries: list[dict[str, Any]] = load_artifact()["abi"]
        events = {i["name"]: i for i in entries if i.get("type") == "event"}
        self._by_topic: dict[str, tuple[str, list[Any], list[Any]]] = {}
        for name in EVENT_NAMES:
            event = events[name]
            indexed = [p for p in event["inputs"] if p.get("indexed")]
            plain = [p for p in event["inputs"] if not p.get("indexed")]
            self._by_topic["0x" + abi.topic(event).hex()] = (name, indexed, plain)
        self._names = {topic: spec[0] for topic, spec in self._by_topic.items()}

    @property
    def topics(self) -> list[str]:
        return list(self._by_topic)

    def decode(self, raw: dict[str, Any]) -> Log | None:
        """The event, or None for a log that is not one of the run events.

        The five events have fixed layouts, so their words are sliced out of the
        hex directly (about 20 times faster than the generic codec, which
        :meth:`decode_generic` still uses and a test compares against)."""
        topics = raw.get("topics") or []
        name = self._names.get(str(topics[0])) if topics else None
        if name is None:
            return None
        try:
            data = str(raw["data"])[2:]
            args = _FAST[name](topics, data)
            return Log(
                block_number=int(raw["blockNumber"], 16),
                block_hash=str(raw["blockHash"]),
                log_index=int(raw["logIndex"], 16),
                tx_hash=str(raw["transactionHash"]),
                name=name,
                run_id=str(topics[1]).lower(),
                args=args,
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ChainError(f"cannot decode a {name} log: {exc}") from exc

    def decode_generic(self, raw: dict[str, Any]) -> Log | None:
        """The same as :meth:`decode`, through the generic ABI codec."""
        topics = raw.get("topics") or []
        spec = self._by_topic.get(str(topics[0])) if topics else None
        if spec is None:
            return None
        name, indexed, plain = spec
        values = abi.decode_params(plain, bytes.fromhex(str(raw["data"])[2:]))
        args = {str(p["name"]): v for p, v in zip(plain, values, strict=True)}
        for param, word in zip(indexed, topics[1:], strict=True):
            args[str(param["name"])] = abi.decode_params([param], bytes.fromhex(str(word)[2:]))[0]
        if name == "RunStarted":
            args["parents"] = [
                {"runId": p["runId"], "relation": label(int(p["relation"]))}
                for p in args["parents"]
            ]
        return Log(
            block_number=int(raw["blockNumber"], 16),
            block_hash=str(raw["blockHash"]),
            log_index=int(raw["logIndex"], 16),
            tx_hash=str(raw["transactionHash"]),
            name=name,
            run_id=to_hex(bytes(args.pop("runId"))),
            args=_plain(args),
        )


W = 64  # hex digits per ABI word


def _word(data: str, i: int) -> str:
    word = data[i * W : (i + 1) * W]
    if len(word) != W:
        raise ValueError("event data is shorter than its types need")
    return word


def _hex32(word: str) -> str:
    return "0x" + word.lower()


@functools.lru_cache(maxsize=4096)
def _address(word: str) -> str:
    return checksum_address(word[-40:])


def _string(data: str, head: int) -> str:
    start = int(_word(data, head), 16) * 2
    length = int(data[start : start + W], 16)
    raw = bytes.fromhex(data[start + W : start + W + 2 * length])
    if len(raw) != length:
        raise ValueError("event data is shorter than its string")
    return raw.decode("utf-8", errors="replace")


def _started(topics: list[str], data: str) -> dict[str, Any]:
    start = int(_word(data, 1), 16) * 2
    count = int(data[start : start + W], 16)
    parents = []
    at = start + W
    for _ in range(count):
        parents.append(
            {
                "runId": _hex32(data[at : at + W]),
                "relation": label(int(data[at + W : at + 2 * W], 16)),
            }
        )
        at += 2 * W
    if len(data) < at:
        raise ValueError("event data is shorter than its parents")
    return {
        "committer": _address(str(topics[2])),
        "manifestDigest": _hex32(_word(data, 0)),
        "parents": parents,
    }


def _checkpoint(topics: list[str], data: str) -> dict[str, Any]:
    return {
        "weightsDigest": str(topics[2]).lower(),
        "tensorRoot": str(topics[3]).lower(),
        "step": int(_word(data, 0), 16),
        "metricsDigest": _hex32(_word(data, 1)),
    }


def _finalized(topics: list[str], data: str) -> dict[str, Any]:
    return {
        "weightsDigest": str(topics[2]).lower(),
        "tensorRoot": str(topics[3]).lower(),
        "metricsDigest": _hex32(_word(data, 0)),
        "checkpointRoot": _hex32(_word(data, 1)),
        "checkpointCount": int(_word(data, 2), 16),
    }


def _failed(topics: list[str], data: str) -> dict[str, Any]:
    return {"reason": _string(data, 0)}


def _revoked(topics: list[str], data: str) -> dict[str, Any]:
    return {"revoker": _address(str(topics[2])), "reason": _string(data, 0)}


_FAST: dict[str, Callable[[list[str], str], dict[str, Any]]] = {
    "RunStarted": _started,
    "CheckpointCommitted": _checkpoint,
    "RunFinalized": _finalized,
    "RunFailed": _failed,
    "RunRevoked": _revoked,
}
