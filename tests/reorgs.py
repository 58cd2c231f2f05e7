"""Reorganise the real test chain, and compare an index with a fresh one of the chain.

Two ways a chain takes blocks back, both real Anvil methods:

- ``anvil_reorg(depth, txs)`` replaces the newest ``depth`` blocks with as many
  new ones, holding the signed transactions given (each at an offset into the new
  blocks); what was in the old blocks and is not given is dropped (Anvil does
  not put it back in its pool);
- ``evm_snapshot`` / ``evm_revert`` takes the chain back to a snapshot and drops
  everything mined since; empty blocks then take the old heights.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from ledger.chain.anvil import rpc_call
from ledger.index.models import Event, Metric, Parent, Run, Weights
from tests.chain.web3_registry import Registry


def head(rpc_url: str) -> int:
    return int(str(rpc_call(rpc_url, "eth_blockNumber")), 16)


def block_hash(rpc_url: str, number: int) -> str | None:
    block = rpc_call(rpc_url, "eth_getBlockByNumber", [hex(number), False])
    return None if block is None else str(block["hash"])  # type: ignore[index]


def raw_txs_of_blocks(rpc_url: str, first: int, last: int) -> list[str]:
    """The signed bytes of every transaction in blocks ``first`` to ``last``, in order."""
    found = []
    for number in range(first, last + 1):
        block: Any = rpc_call(rpc_url, "eth_getBlockByNumber", [hex(number), True])
        for tx in block["transactions"]:
            raw = rpc_call(rpc_url, "eth_getRawTransactionByHash", [tx["hash"]])
            found.append(str(raw))
    return found


def reorg(rpc_url: str, depth: int, *, keep: int = 0) -> list[str]:
    """``anvil_reorg`` of the newest ``depth`` blocks; the first ``keep`` of their
    transactions (a prefix, so every sender's nonces stay in order) are mined again
    in the new blocks, one per block from the second on. Returns the dropped ones'
    raw bytes."""
    top = head(rpc_url)
    old = raw_txs_of_blocks(rpc_url, top - depth + 1, top)
    kept = old[:keep]
    assert len(kept) < depth, "each kept transaction needs a new block of its own"
    rpc_call(rpc_url, "anvil_reorg", [depth, [[raw, i + 1] for i, raw in enumerate(kept)]])
    assert head(rpc_url) == top  # the same height, other blocks
    return old[keep:]


def revert(rpc_url: str, snapshot: str, *, mine: int) -> None:
    """Back to ``snapshot`` (everything since is dropped), then ``mine`` empty blocks."""
    assert rpc_call(rpc_url, "evm_revert", [snapshot]) is True
    rpc_call(rpc_url, "anvil_mine", [hex(mine)])


def record_counts(registry: Registry, run_ids: Sequence[str]) -> Counter[tuple[str, str, int]]:
    """How many times the chain holds each record of the runs: (run, event, step)."""
    counts: Counter[tuple[str, str, int]] = Counter()
    for run_id in run_ids:
        raw = bytes.fromhex(run_id[2:])
        for name in ("RunStarted", "CheckpointCommitted", "RunFinalized", "RunFailed"):
            for event in registry.events(name, raw):
                counts[(run_id, name, int(event.get("step", -1)))] += 1
    return counts


def index_dump(engine: Engine) -> dict[str, set[tuple[Any, ...]]]:
    """Everything an index answers from (its rows, table by table), as sets."""
    dump: dict[str, set[tuple[Any, ...]]] = {}
    with engine.connect() as connection:
        for model in (Run, Event, Weights, Parent, Metric):
            table = model.__table__
            dump[table.name] = {tuple(row) for row in connection.execute(select(table))}  # type: ignore[arg-type]
    return dump
