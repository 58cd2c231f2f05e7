"""The index through reorgs (issue #22), on SQLite and on the real PostgreSQL.

Runs are recorded on a real Anvil, indexed, and then blocks are taken
back (``anvil_reorg`` with some transactions mined again, or ``evm_revert``) at
depths 1, 5 and 10; more runs follow. After each pass the index must equal a
fresh index of the chain as it is. A reorg that falls between a pass's
``eth_getLogs`` and its block headers is made to happen there, on the real chain.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlalchemy.engine import Engine

from ledger.chain.anvil import AnvilProcess, free_port, rpc_call
from ledger.chain.rpc import JsonRpc
from ledger.config import ANVIL_DEV_KEY, Settings
from ledger.errors import ChainError
from ledger.index import open_index
from ledger.index.indexer import Indexer
from ledger.index.service import build_indexer
from ledger.store import LocalStore
from tests.chain.web3_registry import Registry, connect_web3
from tests.conftest import OTHER_KEYS, Chain
from tests.reorgs import head, index_dump, reorg, revert
from tests.runs import record_run


def fresh(settings: Settings, tmp_path: Path) -> dict[str, Any]:
    """What a new index of the whole chain holds (reading the same store)."""
    url = f"sqlite:///{tmp_path / f'fresh-{head(str(settings.rpc_url))}.sqlite'}"
    engine = open_index(settings, url)
    try:
        build_indexer(settings, engine, confirmations=0).run_once()
        return index_dump(engine)
    finally:
        engine.dispose()


@pytest.mark.parametrize("depth", [1, 5, 10])
@pytest.mark.parametrize("how", ["anvil_reorg", "evm_revert"])
def test_the_index_rolls_back_and_reapplies(
    chain: Chain,
    indexer: Indexer,
    engine: Engine,
    data_store: LocalStore,
    settings: Settings,
    tmp_path: Path,
    depth: int,
    how: str,
) -> None:
    first = record_run(chain.registry, data_store, "before", curve=[{"a": 1.0}])
    indexer.run_once()
    at_snapshot = head(chain.rpc_url)
    snapshot = rpc_call(chain.rpc_url, "evm_snapshot")
    # runs of 3 blocks each (start, checkpoint, final), indexed as they come, and one
    # revocation of the first run: at least `depth` blocks to take back
    later = [
        record_run(chain.registry, data_store, f"later-{i}", curve=[{"a": float(i)}])
        for i in range(depth // 3 + 1)
    ]
    chain.registry.revoke_run(first.run_id, "on the losing branch")
    indexer.run_once()
    top = head(chain.rpc_url)
    assert {r.hex for r in later} <= set(index_dump_runs(engine))
    if how == "anvil_reorg":
        reorg(chain.rpc_url, depth, keep=depth // 2)  # some transactions mined again
        fork = top - depth
    else:
        revert(chain.rpc_url, str(snapshot), mine=depth)  # all dropped
        fork = at_snapshot
    result = indexer.run_once()
    assert result.rolled_back_to is not None and result.rolled_back_to <= fork
    assert index_dump(engine) == fresh(settings, tmp_path)
    after = record_run(chain.registry, data_store, "after", curve=[{"a": 9.0}, {"a": 8.0}])
    indexer.run_once()
    assert after.hex in index_dump_runs(engine)
    assert index_dump(engine) == fresh(settings, tmp_path)
    assert indexer.status.rollbacks == 1


def index_dump_runs(engine: Engine) -> list[str]:
    return [row[0] for row in index_dump(engine)["runs"]]


class ReorgAfterLogs(JsonRpc):
    """The chain's JSON-RPC, unchanged, except that right after the first
    ``eth_getLogs`` answer holding an event in block ``first`` or later, the real
    chain is reorganised (``anvil_reorg``) from block ``first`` on: what the pass
    reads next (the block headers of those events) comes from the other side."""

    def __init__(self, url: str, first: int) -> None:
        super().__init__(url)
        self.first = first
        self.done = False
        self.answers: list[list[int]] = []  # the blocks of each eth_getLogs answer

    def __call__(self, method: str, *params: object) -> Any:
        answer: Any = super().__call__(method, *params)
        if method == "eth_getLogs" and not self.done:
            blocks = sorted({int(log["blockNumber"], 16) for log in answer})
            self.answers.append(blocks)
            if blocks and blocks[-1] >= self.first:
                self.done = True
                reorg(self.url, head(self.url) - self.first + 1)
        return answer


def blocks_of_run(rpc_url: str, registry: str, run_id: bytes) -> list[int]:
    """The blocks holding the registry's events about ``run_id``, in order."""
    logs = rpc_call(rpc_url, "eth_getLogs", [{"address": registry, "fromBlock": "0x0"}])
    topic = "0x" + run_id.hex()
    return sorted({int(log["blockNumber"], 16) for log in logs if topic in log["topics"]})


@pytest.fixture(scope="module")
def own_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    """A chain of this module's own: the reorg below is timed against the pass's
    calls, and nothing else (another test's lingering worker, the session chain's
    thousand reverts) may mine or change blocks in between."""
    anvil = AnvilProcess(tmp_path_factory.mktemp("anvil"), port=free_port())
    anvil.start(persist=False)
    try:
        w3 = connect_web3(anvil.rpc_url)
        admin = cast(LocalAccount, Account.from_key(ANVIL_DEV_KEY))
        alice, bob = (cast(LocalAccount, Account.from_key(k)) for k in OTHER_KEYS)
        registry, tx = Registry.deploy(w3, admin)
        yield Chain(anvil.rpc_url, w3, admin, alice, bob, registry, tx.block_number)
    finally:
        anvil.stop()


@pytest.mark.parametrize("start_kept", [False, True], ids=["start-reorganised", "start-kept"])
def test_a_reorg_between_the_logs_and_the_headers(
    own_chain: Chain, engine: Engine, tmp_path: Path, start_kept: bool
) -> None:
    """A pass whose logs come from before a reorg and whose block headers from after
    it must not keep the old branch's events. The pass reads the headers of the
    blocks that start and end runs (their times), and the finalize's block is taken
    back in both cases: the pass sees that a block it read changed and writes
    nothing; the next pass indexes the new branch."""
    chain = own_chain
    settings = chain.settings(tmp_path / "data")
    data_store = LocalStore(settings.store_dir)
    snapshot = rpc_call(chain.rpc_url, "evm_snapshot")
    try:
        run = record_run(chain.registry, data_store, "straddling", curve=[{"a": 1.0}])
        rpc_call(chain.rpc_url, "evm_mine")  # the range ends on a block without events
        blocks = blocks_of_run(chain.rpc_url, str(chain.registry.address), run.run_id)
        assert len(blocks) == 3  # start, checkpoint, final
        start = blocks[0]
        # start, checkpoint, final, empty: take back all four, or the last three
        rpc = ReorgAfterLogs(chain.rpc_url, first=start + 1 if start_kept else start)
        indexer = build_indexer(settings, engine, confirmations=0)
        indexer.rpc = rpc
        refused = False
        try:
            indexer.run_once()
        except ChainError as exc:
            assert "changed while it was being indexed" in exc.message
            refused = True
        assert rpc.done, f"no eth_getLogs answer held the run's blocks {blocks}: {rpc.answers}"
        assert refused, f"the pass kept logs of blocks {rpc.answers} read before the reorg"
        indexer.run_once()
        runs = index_dump_runs(engine)
        assert (run.hex in runs) is start_kept  # the start is on chain only if it was kept
        assert index_dump(engine) == fresh(settings, tmp_path)
    finally:
        assert rpc_call(chain.rpc_url, "evm_revert", [snapshot]) is True
