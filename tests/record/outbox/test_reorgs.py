"""Reorgs and the confirmation depth (issue #22), against the session's real Anvil.

Blocks are taken back with ``anvil_reorg`` (some of the dropped transactions mined
again in the new blocks) and with ``evm_snapshot``/``evm_revert`` (all dropped), at
depths 1, 5 and 10, while a run is being recorded and an index follows the chain.
Afterwards the chain holds each record exactly once (its events counted), every
record lost was sent again once and with its first signed transaction (the same
hash: nothing was signed twice), the journal is all confirmed on blocks the chain
has, and the index equals a fresh index of the chain.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from sqlalchemy.engine import Engine
from torch import nn

from ledger.chain.anvil import rpc_call
from ledger.config import Settings
from ledger.index import open_index
from ledger.index.service import build_indexer
from ledger.record.outbox import Outbox, run_report
from ledger.record.outbox.worker import Worker
from ledger.training.hook import LedgerRun
from tests.conftest import Chain
from tests.record.outbox.test_outbox import manifest, weights
from tests.reorgs import block_hash, head, index_dump, record_counts, reorg, revert

DEPTHS = [1, 5, 10]


def nonce(chain: Chain) -> int:
    address = chain.admin.address
    return int(str(rpc_call(chain.rpc_url, "eth_getTransactionCount", [address, "latest"])), 16)


def quiet(outbox: Outbox) -> Worker:
    return Worker(outbox.journal, outbox.settings, say=lambda _line: None, urgent=True)


def fresh_index_of(settings: Settings, tmp_path: Path) -> Engine:
    """A new index of the whole chain (reading the same store)."""
    engine = open_index(settings, f"sqlite:///{tmp_path / 'fresh-index.sqlite'}")
    build_indexer(settings, engine).run_once()
    return engine


def assert_all_confirmed_on_chain(chain: Chain, outbox: Outbox) -> None:
    entries = outbox.journal.entries()
    assert {e.state for e in entries} == {"confirmed"}
    for entry in entries:
        assert entry.block_number is not None
        assert entry.block_hash == block_hash(chain.rpc_url, entry.block_number)


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("how", ["anvil_reorg", "evm_revert"])
def test_records_a_reorg_drops_are_sent_again_once(
    chain: Chain, tmp_path: Path, depth: int, how: str
) -> None:
    settings = chain.settings(tmp_path / "ledger")
    outbox = Outbox(settings, background=False)
    work = quiet(outbox)
    engine = open_index(settings)
    indexer = build_indexer(settings, engine)  # the same depth as the outbox: 0 on Anvil
    nonce_at_start = nonce(chain)
    run_id = outbox.start_run(manifest(f"{how}-{depth}"))
    work.run_once()
    before = depth + 2  # checkpoints before the reorg, one block each
    snapshot = None
    for step in range(before):
        if step == before - depth:
            snapshot = rpc_call(chain.rpc_url, "evm_snapshot")
        outbox.checkpoint(run_id, step, weights(tmp_path / f"c{step}.pt", step), {"step": step})
        work.run_once()
        indexer.run_once()
    assert_all_confirmed_on_chain(chain, outbox)
    first_txs = {e.id: e.tx_hash for e in outbox.journal.entries()}
    top = head(chain.rpc_url)
    in_reorg = [e.id for e in outbox.journal.entries() if (e.block_number or 0) > top - depth]
    assert len(in_reorg) == depth  # one record per block

    if how == "anvil_reorg":
        kept = depth // 2  # mined again in the new blocks; the rest are dropped
        dropped = reorg(chain.rpc_url, depth, keep=kept)
        assert len(dropped) == depth - kept
    else:
        assert isinstance(snapshot, str)
        revert(chain.rpc_url, snapshot, mine=depth + 1)  # the chain moves past those heights
        kept = 0
    rolled = indexer.run_once()  # during indexing: rolled back and read again
    assert rolled.rolled_back_to is not None and rolled.rolled_back_to <= top - depth

    # training goes on; the worker notices by itself, and the run ends
    for step in range(before, before + 2):
        outbox.checkpoint(run_id, step, weights(tmp_path / f"c{step}.pt", step), {"step": step})
        work.run_once()
        indexer.run_once()
    outbox.finalize(run_id, weights(tmp_path / "final.pt", 99), {"step": 99})
    outbox.sync(60)
    indexer.run_once()

    counts = record_counts(chain.registry, [run_id])
    assert len(counts) == 1 + before + 2 + 1  # start, checkpoints, final
    assert set(counts.values()) == {1}  # each exactly once
    assert_all_confirmed_on_chain(chain, outbox)
    entries = {e.id: e for e in outbox.journal.entries()}
    assert sum(e.recommits for e in entries.values()) == depth - kept  # sent again once each
    for entry_id in in_reorg:  # with the transaction it was first signed in
        assert entries[entry_id].tx_hash == first_txs[entry_id]
    # no transaction beyond one per batch the journal holds: nothing was signed twice
    assert nonce(chain) - nonce_at_start == len({e.tx_hash for e in entries.values()})
    assert outbox.sync(30).recommitted == 0
    assert index_dump(engine) == index_dump(fresh_index_of(settings, tmp_path))


@pytest.mark.parametrize("depth", DEPTHS)
def test_a_reorg_under_a_hooked_training_run(
    chain: Chain, tmp_path: Path, depth: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook and its background worker, as in training: the chain is reorganised
    between epochs while the worker sends, and the run still lands exactly once."""
    monkeypatch.setenv("LEDGER_FLUSH_TIMEOUT", "60")
    settings = chain.settings(tmp_path / "ledger")
    rpc_call(chain.rpc_url, "anvil_mine", [hex(depth)])  # the reorg stays inside this test
    engine = open_index(settings)
    indexer = build_indexer(settings, engine)
    torch.manual_seed(depth)
    model = nn.Linear(4, 1)
    epochs = 6
    with LedgerRun(
        model,
        name=f"hooked-{depth}",
        config={"epochs": epochs},
        out=tmp_path / "m.pt",
        settings=settings,
    ) as run:
        outbox = run.outbox
        assert outbox is not None
        for epoch in range(epochs):
            with torch.no_grad():
                model.weight.add_(0.1)
            run.epoch_end(epoch, {"loss": 1.0 / (epoch + 1)})
            indexer.run_once()
            if epoch == 2:
                wait_for(lambda: outbox.journal.counts()["confirmed"] >= 2)
                dropped = reorg(chain.rpc_url, depth)  # all dropped (none mined again)
                assert dropped  # the newest block is always one of this run's
    indexer.run_once()
    counts = record_counts(chain.registry, [run.run_id])
    assert len(counts) == 1 + epochs + 1 and set(counts.values()) == {1}
    assert_all_confirmed_on_chain(chain, outbox)
    assert index_dump(engine) == index_dump(fresh_index_of(settings, tmp_path))


def wait_for(done: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_confirmed_waits_for_the_same_depth_as_the_index(chain: Chain, tmp_path: Path) -> None:
    """With LEDGER_CONFIRMATIONS=3 a record is confirmed once 3 blocks are mined on top
    of its block, as the index reads it; one that a reorg drops meanwhile is sent
    again with the same bytes and waits again."""
    settings = replace(chain.settings(tmp_path / "ledger"), confirmations=3)
    outbox = Outbox(settings, background=False)
    work = quiet(outbox)
    engine = open_index(settings)
    indexer = build_indexer(settings, engine)
    assert indexer.confirmations == 3
    run_id = outbox.start_run(manifest("deep"))
    result = work.run_once()
    [start] = outbox.journal.entries()
    assert (start.state, result.confirmed, result.deepening) == ("sent", 0, 1)
    assert start.block_number == head(chain.rpc_url)
    assert "waiting for 3 confirmations (0 so far)" in (start.error or "")
    # a mined start lets the run go on (nonces keep the order on any branch)
    outbox.checkpoint(run_id, 0, weights(tmp_path / "c0.pt", 0), {"x": 0})
    work.run_once()
    start, checkpoint = outbox.journal.entries()
    assert (start.state, checkpoint.state) == ("sent", "sent")
    assert checkpoint.block_number == head(chain.rpc_url)

    def confirmed() -> list[str]:
        return [e.kind for e in outbox.journal.entries() if e.state == "confirmed"]

    def indexed() -> list[str]:
        indexer.run_once()
        dump = index_dump(engine)
        return ["start"] * len(dump["runs"]) + ["checkpoint"] * len(dump["weights"])

    rpc_call(chain.rpc_url, "anvil_mine", ["0x1"])  # start: 2 on top, checkpoint 1
    work.run_once()
    assert confirmed() == [] == indexed()
    rpc_call(chain.rpc_url, "anvil_mine", ["0x1"])  # start: 3
    work.run_once()
    assert confirmed() == ["start"] == indexed()
    assert "1 record(s) mined, not yet confirmed" in run_report(outbox.journal, run_id)

    # a reorg of the 3 newest blocks: the start (3 deep) stays, the checkpoint goes
    sent_as = checkpoint.tx_hash
    reorg(chain.rpc_url, 3)
    result = work.run_once()  # rebroadcast (its nonce is free again): mined anew, waits
    [_, again] = outbox.journal.entries()
    assert (again.state, again.tx_hash) == ("sent", sent_as)
    assert again.block_number == head(chain.rpc_url) and result.deepening == 1
    rpc_call(chain.rpc_url, "anvil_mine", ["0x2"])
    work.run_once()
    assert confirmed() == ["start"] == indexed()
    rpc_call(chain.rpc_url, "anvil_mine", ["0x1"])
    work.run_once()
    assert confirmed() == ["start", "checkpoint"] == indexed()
    assert len(record_counts(chain.registry, [run_id])) == 2
    assert set(record_counts(chain.registry, [run_id]).values()) == {1}
    assert outbox.journal.entries()[1].recommits == 0  # never confirmed, so not a recommit


def test_sync_waits_for_the_depth_and_says_so(chain: Chain, tmp_path: Path) -> None:
    settings = replace(chain.settings(tmp_path / "ledger"), confirmations=2)
    outbox = Outbox(settings, background=False)
    outbox.start_run(manifest("sync-deep"))
    result = outbox.sync(1.5)  # nothing mines meanwhile: still waiting when it gives up
    assert (result.confirmed, result.deepening) == (0, 1)
    assert outbox.journal.counts()["sent"] == 1
    rpc_call(chain.rpc_url, "anvil_mine", ["0x2"])
    assert outbox.sync(10).confirmed == 1
    assert outbox.journal.counts()["confirmed"] == 1


def test_the_depth_is_one_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ledger.config import confirmation_depth, load_settings
    from ledger.errors import ConfigError
    from ledger.index import confirmations_for

    for name in [k for k in os.environ if k.startswith("LEDGER_")]:
        monkeypatch.delenv(name)
    settings = load_settings(tmp_path)
    assert confirmation_depth(settings, 31337) == 0 and confirmation_depth(settings, 1) == 12
    assert confirmations_for(settings, 1) == 12 and confirmations_for(settings, 1, 4) == 4
    (tmp_path / "config.json").write_text('{"confirmations": 5}')
    assert confirmation_depth(load_settings(tmp_path), 31337) == 5
    monkeypatch.setenv("LEDGER_CONFIRMATIONS", "7")  # env wins over the file
    assert confirmation_depth(load_settings(tmp_path), 1) == 7
    assert confirmations_for(load_settings(tmp_path), 1) == 7  # the index reads the same
    monkeypatch.delenv("LEDGER_CONFIRMATIONS")
    monkeypatch.setenv("LEDGER_INDEX_CONFIRMATIONS", "2")  # the older name, same setting
    assert confirmation_depth(load_settings(tmp_path), 1) == 2
    for bad in ("-1", "twelve", "1e3", "100001"):
        monkeypatch.setenv("LEDGER_CONFIRMATIONS", bad)
        with pytest.raises(ConfigError, match="LEDGER_CONFIRMATIONS"):
            load_settings(tmp_path)
    monkeypatch.delenv("LEDGER_CONFIRMATIONS")
    monkeypatch.delenv("LEDGER_INDEX_CONFIRMATIONS")
    for text in ('{"confirmations": "3"}', '{"confirmations": true}', '{"confirmations": -2}'):
        (tmp_path / "config.json").write_text(text)
        with pytest.raises(ConfigError, match="'confirmations'"):
            load_settings(tmp_path)


def test_the_worker_process_honours_the_depth_after_the_run_ends(
    chain: Chain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker in its own process gets the configured depth (not the dev chain's
    0), the run's end says its records are mined and not yet confirmed, and the
    worker confirms them once the blocks come, without `ledger sync`."""
    monkeypatch.delenv("LEDGER_OUTBOX_WORKER", raising=False)  # the default: a process
    settings = replace(chain.settings(tmp_path / "ledger"), confirmations=2)
    began = time.monotonic()
    with LedgerRun(
        nn.Linear(2, 1),
        name="deep-process",
        config={},
        out=tmp_path / "m.pt",
        settings=settings,
        flush_timeout=600.0,  # not waited out: the exit stops once all are mined
    ) as run:
        run.epoch_end(0, {"loss": 1.0})
    # no speed goal: the wait ended on the journal's state, not on the timeout
    assert time.monotonic() - began < 600
    outbox = run.outbox
    assert outbox is not None
    # start, checkpoint and final in three blocks: the start may have its 2 on top
    states = outbox.journal.counts()
    assert states["sent"] >= 2 and states["confirmed"] + states["sent"] == 3
    assert "mined, not yet confirmed" in run_report(outbox.journal, run.run_id)
    rpc_call(chain.rpc_url, "anvil_mine", ["0x2"])
    wait_for(lambda: outbox.journal.counts()["confirmed"] == 3)
    assert set(record_counts(chain.registry, [run.run_id]).values()) == {1}


def test_a_dropped_transaction_still_in_the_pool_is_not_signed_again(
    chain: Chain, tmp_path: Path
) -> None:
    """After a reorg a real node puts the dropped transaction back in its pool: the
    worker finds its record gone, hands the node the same bytes again (already
    known), and confirms the record when that transaction is mined. One
    transaction, one record; no second signature while the first can still land."""
    outbox = Outbox(chain.settings(tmp_path / "ledger"), background=False)
    work = Worker(outbox.journal, outbox.settings, say=lambda _l: None, urgent=True)
    work.receipt_wait = 0.2
    snapshot = rpc_call(chain.rpc_url, "evm_snapshot")
    first_nonce = nonce(chain)
    run_id = outbox.start_run(manifest("in-the-pool"))
    work.run_once()
    [entry] = outbox.journal.entries()
    assert entry.state == "confirmed" and entry.tx_hash is not None
    raw = rpc_call(chain.rpc_url, "eth_getRawTransactionByHash", [entry.tx_hash])
    rpc_call(chain.rpc_url, "evm_setAutomine", [False])
    try:
        assert rpc_call(chain.rpc_url, "evm_revert", [snapshot]) is True  # the block is gone
        rpc_call(chain.rpc_url, "eth_sendRawTransaction", [raw])  # ... its tx is pending
        work.recheck()  # an idle worker looks at the chain on the next record, or `sync`
        work.run_once()
        [waiting] = outbox.journal.entries()
        assert (waiting.state, waiting.tx_hash, waiting.recommits) == ("sent", entry.tx_hash, 1)
        assert record_counts(chain.registry, [run_id]) == {}
        rpc_call(chain.rpc_url, "evm_mine")
        work.run_once()
    finally:
        rpc_call(chain.rpc_url, "evm_setAutomine", [True])
    [done] = outbox.journal.entries()
    assert (done.state, done.tx_hash) == ("confirmed", entry.tx_hash)
    assert set(record_counts(chain.registry, [run_id]).values()) == {1}
    assert nonce(chain) == first_nonce + 1  # one transaction in all
