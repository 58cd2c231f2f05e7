"""``eth_getLogs`` over any block range, through providers that cap it.

Providers refuse wide queries: by block range (QuickNode: -32614 "eth_getLogs is
limited to a 10,000 range", with HTTP 413; Infura's live API: -32602 "range N
exceeds limit of 10000"; others "block range too large"...) or by result count
(Infura: -32005 "query returned more than 10000 results", some with a
``data: {from, to}`` range that fits; Alchemy names one in its message as
``[0x.., 0x..]``). :func:`scan_logs` asks for the whole range first and, when
refused, splits it: into the range a hint names, else into the block count the
message names, else in halves, and goes on chunk by chunk. A block-range cap it
learns is remembered per endpoint URL for the rest of the process, so later
scans start at the right size instead of being refused again.

Nothing here waits or retries a lost answer: :class:`~ledger.chain.rpc.JsonRpc`
does that below.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from ledger.chain.rpc import JsonRpc, as_int
from ledger.errors import ChainError, RpcError

__all__ = ["forget_learned_caps", "learned_cap", "scan_logs"]

_caps: dict[str, int] = {}
_caps_lock = threading.Lock()

_RANGE_WORDS = re.compile(r"range|block", re.I)
_LIMIT_WORDS = re.compile(r"limit|exceed|too (large|wide|high|big|many)|max", re.I)
_HEX_RANGE = re.compile(r"\[\s*(0x[0-9a-fA-F]+)\s*,\s*(0x[0-9a-fA-F]+)\s*\]")
_NUMBER = re.compile(r"\d[\d,_]*")


def learned_cap(url: str) -> int | None:
    """The widest block range (in blocks) ``url`` is known to accept, if it refused one."""
    with _caps_lock:
        return _caps.get(url)


def forget_learned_caps() -> None:
    """Forget every learned cap (an endpoint's plan changed; tests)."""
    with _caps_lock:
        _caps.clear()


def _learn(url: str, cap: int) -> None:
    with _caps_lock:
        _caps[url] = min(cap, _caps.get(url, cap))


def scan_logs(
    rpc: JsonRpc,
    query: Mapping[str, Any],
    start: int,
    end: int | None = None,
    *,
    span: int | None = None,
) -> Iterator[tuple[int | None, list[dict[str, Any]]]]:
    """The raw logs matching ``query`` (address, topics) in blocks ``start`` to
    ``end`` (None: the head), in chain order, as ``(last block, logs)`` chunks.

    ``span`` caps the blocks per call (the indexer's chunk). Without it, nor a
    learned cap, the first call covers the whole range (one call where the
    provider allows it); the last block of such a chunk over ``"latest"`` is None.
    A refusal of a single block (more results than the provider returns at all)
    is a :class:`~ledger.errors.ChainError` that says so.
    """
    cap = learned_cap(rpc.url)
    width = min(w for w in (span, cap) if w is not None) if (span or cap) else None
    if end is None:
        if width is None:
            try:
                logs = rpc("eth_getLogs", {**query, "fromBlock": hex(start), "toBlock": "latest"})
            except RpcError as exc:
                if _kind(exc) is None:
                    raise
                width = _narrower(rpc.url, exc, start, None)
            else:
                yield None, list(logs or [])
                return
        end = as_int(rpc("eth_blockNumber"))
    if width is None:
        width = end - start + 1
    at = start
    while at <= end:
        stop = min(at + max(1, width) - 1, end)
        try:
            logs = rpc("eth_getLogs", {**query, "fromBlock": hex(at), "toBlock": hex(stop)})
        except RpcError as exc:
            if stop == at:
                raise ChainError(
                    f"eth_getLogs at {rpc.url} refuses even block {at} alone: "
                    f"{exc.node_message or exc.message}",
                    hint="the endpoint caps eth_getLogs below what one block holds: "
                    "use an endpoint without that cap (or your own node) for this chain",
                ) from exc
            width = _narrower(rpc.url, exc, at, stop)
            continue
        yield stop, list(logs or [])
        at = stop + 1


def _kind(exc: RpcError) -> str | None:
    """``"range"`` for a block-range refusal, ``"results"`` for a result-count (or
    query-time) one, None for an error that splitting would not cure."""
    message = exc.node_message or exc.message
    if exc.code == -32614:
        return "range"
    if exc.code == -32005 or re.search(r"more than \d|results|response size|timeout", message):
        return "results"
    if _RANGE_WORDS.search(message) and _LIMIT_WORDS.search(message):
        return "range"
    return None


def _narrower(url: str, exc: RpcError, at: int, stop: int | None) -> int:
    """The block count to ask for next after ``[at, stop]`` was refused (stop None:
    up to the head, width unknown)."""
    kind = _kind(exc)
    width = None if stop is None else stop - at + 1
    hinted = _hinted_end(exc)
    if hinted is not None and hinted >= at and (stop is None or hinted < stop):
        fits = hinted - at + 1
    elif kind == "range" and (named := _named_cap(exc.node_message, width)) is not None:
        fits = named
    elif width is not None:
        fits = max(1, width // 2)
    else:
        fits = 10_000  # unknown width over "latest": the commonest provider cap
    if kind == "range":
        _learn(url, fits)
    return fits


def _hinted_end(exc: RpcError) -> int | None:
    """The last block of a range the provider says fits, if it says one."""
    data = exc.data
    if isinstance(data, dict) and isinstance(data.get("to"), str):
        try:
            return int(data["to"], 16)
        except ValueError:
            return None
    found = _HEX_RANGE.search(exc.node_message or exc.message)
    return int(found.group(2), 16) if found else None


def _named_cap(message: str, width: int | None) -> int | None:
    """The block count a range refusal names ("limited to a 10,000 range", "range
    50000 exceeds limit of 10000"): the largest number in it below the refused width
    (the smallest, when the width is not known)."""
    numbers = [int(n.replace(",", "").replace("_", "")) for n in _NUMBER.findall(message)]
    fitting = [n for n in numbers if n >= 1 and (width is None or n < width)]
    if not fitting:
        return None
    return min(fitting) if width is None else max(fitting)
