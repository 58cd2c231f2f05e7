"""The outbox in one process, against the session's real Anvil.

Workers are driven pass by pass (``run_once``) where a test needs to stop
between steps; the background worker is what the hook uses.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from ledger.chain.anvil import rpc_call
from ledger.config import Settings
from ledger.errors import InputError
from ledger.hashing.merkle import checkpoint_root
from ledger.record.manifest import build_manifest
from ledger.record.outbox import Outbox
from ledger.record.outbox.journal import Journal
from ledger.record.outbox.lock import WorkerLock
from ledger.record.outbox.serve import WorkerThread, _back_off
from ledger.record.outbox.worker import Worker, _leaf
from ledger.store import LocalStore
from ledger.training.hook import LedgerRun, save_weights
from ledger.verify import Outcome, Verifier
from tests.conftest import Chain, free_port


def manifest(name: str) -> dict[str, object]:
    return build_manifest(name=name, config={"lr": 0.1}, created_at=None)


def weights(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    save_weights({"w": torch.randn(4, 4), "b": torch.randn(4)}, path)
    return path


def worker(outbox: Outbox, **kw: object) -> Worker:
    return Worker(outbox.journal, outbox.settings, say=lambda _line: None, **kw)  # type: ignore[arg-type]


def on_chain(chain: Chain, name: str, run_id: str) -> list[dict[str, object]]:
    return chain.registry.events(name, bytes.fromhex(run_id[2:]))


def test_a_hooked_run_lands_once_with_every_checkpoint(chain: Chain, tmp_path: Path) -> None:
    settings = chain.settings(tmp_path / "ledger")
    model = torch.nn.Linear(3, 2)
    with LedgerRun(model, name="once", config={}, out=tmp_path / "m.pt", settings=settings) as run:
        for epoch in range(5):
            run.epoch_end(epoch, {"loss": 1.0 / (epoch + 1)})
    journal = run.outbox.journal  # type: ignore[union-attr]
    assert journal.counts()["confirmed"] == 7 and journal.open_count() == 0
    assert len(on_chain(chain, "RunStarted", run.run_id)) == 1
    steps = [int(e["step"]) for e in on_chain(chain, "CheckpointCommitted", run.run_id)]  # type: ignore[call-overload]
    assert steps == [0, 1, 2, 3, 4]
    assert len(on_chain(chain, "RunFinalized", run.run_id)) == 1
    final = run.final
    assert final is not None and final.state == "confirmed" and final.file_cid is not None
    report = Verifier(chain.registry, LocalStore(settings.store_dir)).verify_file(tmp_path / "m.pt")
    assert report.outcome is Outcome.VERIFIED


def test_checkpoints_are_batched(chain: Chain, tmp_path: Path) -> None:
    outbox = Outbox(chain.settings(tmp_path / "ledger"))
    run_id = outbox.start_run(manifest("batched"))
    for step in range(150):
        outbox.checkpoint(run_id, step, weights(tmp_path / f"c{step}.pt", step), {"step": step})
    assert outbox.flush(120) == 0
    entries = outbox.journal.entries(run_id=run_id)
    assert {e.state for e in entries} == {"confirmed"}
    txs = {e.tx_hash for e in entries if e.kind == "checkpoint"}
    assert len(txs) < 150 / 5  # batched: far fewer transactions than checkpoints
    logged = on_chain(chain, "CheckpointCommitted", run_id)
    assert sorted(int(e["step"]) for e in logged) == list(range(150))  # type: ignore[call-overload]


def test_a_start_already_on_chain_counts_as_done(chain: Chain, tmp_path: Path) -> None:
    document = manifest("twice")
    first = Outbox(chain.settings(tmp_path / "a"))
    second = Outbox(chain.settings(tmp_path / "b"))
    run_a = first.start_run(document)
    assert first.flush(30) == 0
    run_b = second.start_run(document)  # same committer, same manifest: same run id
    assert run_a == run_b
    assert second.flush(30) == 0
    entry = second.journal.entries()[0]
    assert (entry.state, entry.note) == ("confirmed", "already on chain")
    assert len(on_chain(chain, "RunStarted", run_a)) == 1


def test_other_content_under_a_finished_run_fails_for_good(chain: Chain, tmp_path: Path) -> None:
    document = manifest("conflict")
    first = Outbox(chain.settings(tmp_path / "a"))
    run_id = first.start_run(document)
    first.finalize(run_id, weights(tmp_path / "one.pt", 1), {"loss": 1})
    assert first.flush(30) == 0
    second = Outbox(chain.settings(tmp_path / "b"))
    second.start_run(document)
    second.finalize(run_id, weights(tmp_path / "two.pt", 2), {"loss": 2})
    assert second.flush(30) == 0
    failed = second.journal.entries(states=["failed"])
    assert [e.kind for e in failed] == ["finalize"]
    assert "other content" in (failed[0].error or "")
    assert len(on_chain(chain, "RunFinalized", run_id)) == 1


def test_records_wait_in_the_outbox_while_the_chain_is_down(chain: Chain, tmp_path: Path) -> None:
    good = chain.settings(tmp_path / "ledger")
    dead = Settings(**{**good.__dict__, "rpc_url": f"http://127.0.0.1:{free_port()}"})
    lines: list[str] = []
    offline = Outbox(dead, worker="thread")  # lines said in this process, to count them
    offline.worker.say = lines.append
    run_id = offline.start_run(manifest("offline"))  # the run id needs no chain
    for step in range(3):
        offline.checkpoint(run_id, step, weights(tmp_path / f"{step}.pt", step), {"s": step})
    assert offline.flush(1.5) == 4
    counts = offline.journal.counts()
    assert counts["stored"] == 4  # artifacts stored, transactions not sent
    assert len(lines) == 1 and "no chain answers" in lines[0]  # one line, not a traceback
    offline.start_worker().stop()
    result = Outbox(good).sync(60)
    assert result.confirmed == 4 and offline.journal.open_count() == 0
    assert len(on_chain(chain, "CheckpointCommitted", run_id)) == 3


def test_a_transaction_in_flight_is_resent_not_signed_again(chain: Chain, tmp_path: Path) -> None:
    outbox = Outbox(chain.settings(tmp_path / "ledger"), background=False)
    run_id = outbox.start_run(manifest("in-flight"))
    rpc_call(chain.rpc_url, "evm_setAutomine", [False])
    try:
        w = worker(outbox, receipt_wait=0.3)
        w.run_once()
        [entry] = outbox.journal.entries()
        assert entry.state == "sent" and entry.tx_hash
        saved = outbox.journal.saved_tx(entry.tx_hash)
        assert saved is not None
        rpc_call(chain.rpc_url, "anvil_dropAllTransactions")  # the node lost it
    finally:
        rpc_call(chain.rpc_url, "evm_setAutomine", [True])
    worker(outbox).run_once()  # a new worker: rebroadcasts the saved bytes
    [entry] = outbox.journal.entries()
    assert entry.state == "confirmed" and entry.tx_hash == saved.tx_hash
    assert len(on_chain(chain, "RunStarted", run_id)) == 1


def test_a_mined_transaction_is_confirmed_from_its_receipt(chain: Chain, tmp_path: Path) -> None:
    outbox = Outbox(chain.settings(tmp_path / "ledger"), background=False)
    run_id = outbox.start_run(manifest("mined-later"))
    outbox.checkpoint(run_id, 0, weights(tmp_path / "w.pt", 0), {"x": 1})
    rpc_call(chain.rpc_url, "evm_setAutomine", [False])
    try:
        worker(outbox, receipt_wait=0.2).run_once()
        assert [e.state for e in outbox.journal.entries()] == ["sent", "stored"]
        rpc_call(chain.rpc_url, "evm_mine")
    finally:
        rpc_call(chain.rpc_url, "evm_setAutomine", [True])
    assert outbox.sync(30).confirmed == 2
    assert len(on_chain(chain, "RunStarted", run_id)) == 1
    assert len(on_chain(chain, "CheckpointCommitted", run_id)) == 1


def test_confirmed_records_lost_by_the_chain_are_recommitted(chain: Chain, tmp_path: Path) -> None:
    outbox = Outbox(chain.settings(tmp_path / "ledger"), background=False)
    snapshot = rpc_call(chain.rpc_url, "evm_snapshot")
    run_id = outbox.start_run(manifest("rolled-back"))
    outbox.finalize(run_id, weights(tmp_path / "f.pt", 3), {"loss": 0.5})
    assert outbox.sync(30).confirmed == 2
    rpc_call(chain.rpc_url, "evm_revert", [snapshot])  # the chain forgets both records
    rpc_call(chain.rpc_url, "evm_mine")  # and moves on with other blocks
    assert on_chain(chain, "RunStarted", run_id) == []
    result = outbox.sync(30)
    assert (result.recommitted, result.confirmed) == (2, 2)
    assert len(on_chain(chain, "RunStarted", run_id)) == 1
    assert len(on_chain(chain, "RunFinalized", run_id)) == 1
    assert sum(e.recommits for e in outbox.journal.entries()) == 2


def test_a_checkpoint_file_changed_before_storing_is_refused(chain: Chain, tmp_path: Path) -> None:
    good = chain.settings(tmp_path / "ledger")
    dead = Settings(**{**good.__dict__, "rpc_url": f"http://127.0.0.1:{free_port()}"})
    outbox = Outbox(dead, background=False)
    run_id = outbox.start_run(manifest("changed"))
    path = weights(tmp_path / "c.pt", 0)
    entry_id = outbox.checkpoint(run_id, 0, path, {"x": 1})
    time.sleep(0.01)
    weights(path, 1)  # rewritten in place before the worker stored it
    w = worker(Outbox(good))
    w.run_once()
    entry = Journal(outbox.journal.path).entry(entry_id)
    assert entry.state == "failed" and "changed after it was handed" in (entry.error or "")


def test_bad_metrics_are_refused_at_the_call(chain: Chain, tmp_path: Path) -> None:
    outbox = Outbox(chain.settings(tmp_path / "ledger"))
    run_id = outbox.start_run(manifest("bad"))
    # (NaN and infinities are recorded as strings: tests/record/outbox/test_lifecycle.py)
    with pytest.raises(InputError, match=r"metrics cannot be written as canonical JSON"):
        outbox.checkpoint(run_id, 0, weights(tmp_path / "w.pt", 0), {"loss": object()})
    assert outbox.flush(30) == 0
    assert [e.kind for e in outbox.journal.entries()] == ["start"]


def test_a_worker_leaves_the_runs_of_another_key_alone(chain: Chain, tmp_path: Path) -> None:
    from dataclasses import replace

    from ledger.config import Secret
    from tests.conftest import OTHER_KEYS

    settings = chain.settings(tmp_path / "ledger")
    theirs = Outbox(replace(settings, private_key=Secret(OTHER_KEYS[1])), background=False)
    mine = Outbox(settings, background=False)
    their_run = theirs.start_run(manifest("their key"))
    my_run = mine.start_run(manifest("my key"))
    # one data directory; this worker signs with the default key only
    result = worker(mine).run_once()
    assert result.confirmed == 1
    assert mine.journal.entries(run_id=my_run)[0].state == "confirmed"
    assert mine.journal.entries(run_id=their_run)[0].state == "stored"  # left for its key
    assert not on_chain(chain, "RunStarted", their_run)
    assert mine.journal.entries(run_id=their_run)[0].tx_hash is None  # never signed by us


def test_a_finalize_is_stored_with_its_checkpoints_and_roots_them(
    chain: Chain, tmp_path: Path
) -> None:
    """One pass stores a run's checkpoints and its final weights together; the
    final record's root covers the checkpoints stored, not the one refused."""
    good = chain.settings(tmp_path / "ledger")
    dead = Settings(**{**good.__dict__, "rpc_url": f"http://127.0.0.1:{free_port()}"})
    outbox = Outbox(dead, background=False)  # appends only: one pass below stores them all
    run_id = outbox.start_run(manifest("together"))
    for step in range(3):
        outbox.checkpoint(run_id, step, weights(tmp_path / f"c{step}.pt", step), {"s": step})
    final_id = outbox.finalize(run_id, weights(tmp_path / "f.pt", 9), {"s": 9})
    time.sleep(0.01)
    weights(tmp_path / "c1.pt", 5)  # step 1 rewritten before it was stored: refused
    w = worker(Outbox(good), urgent=True)  # someone waits: the pass stores on threads
    w.run_once()
    entries = {e.id: e for e in Journal(outbox.journal.path).entries()}
    final = entries[final_id]
    checkpoints = [e for e in entries.values() if e.kind == "checkpoint"]
    assert [e.state for e in checkpoints] == ["confirmed", "failed", "confirmed"]
    assert final.state == "confirmed" and final.record is not None
    kept = [_leaf(e.record) for e in checkpoints if e.state != "failed"]
    assert final.record["checkpoint_count"] == 2
    assert final.record["checkpoint_root"] == checkpoint_root(kept).hex()
    [event] = on_chain(chain, "RunFinalized", run_id)
    assert bytes(event["checkpointRoot"]).hex() == final.record["checkpoint_root"]  # type: ignore[arg-type]


def test_a_finalize_waits_while_an_earlier_checkpoint_is_unstored(
    chain: Chain, tmp_path: Path
) -> None:
    """A finalize whose earlier checkpoint has no record yet (its store failed in
    the same pass) is not rooted; it is once the checkpoint is stored."""
    outbox = Outbox(chain.settings(tmp_path / "ledger"), background=False)
    run_id = outbox.start_run(manifest("later-root"))
    outbox.checkpoint(run_id, 0, weights(tmp_path / "c0.pt", 0), {"s": 0})
    final_id = outbox.finalize(run_id, weights(tmp_path / "f.pt", 1), {"s": 1})
    w = worker(outbox, urgent=True)
    final = outbox.journal.entry(final_id)
    assert w._add_checkpoint_root(final, {}) is False  # the checkpoint has no record yet
    w.run_once()
    entry = outbox.journal.entry(final_id)
    assert entry.state == "confirmed" and entry.record is not None
    assert entry.record["checkpoint_count"] == 1


def test_appends_do_not_cut_a_retry_delay_short(tmp_path: Path) -> None:
    """While the chain or store is away, each append wakes the worker; the retry
    delay still holds (no pass per checkpoint against a dead node), and ends
    early only for a stop or someone waiting."""
    journal = Journal(tmp_path / "outbox.sqlite")
    settings = Settings(data_dir=tmp_path, rpc_url="http://127.0.0.1:1")
    w = Worker(journal, settings, say=lambda _line: None)
    waker = WorkerThread(w, WorkerLock(journal.path))
    done = threading.Event()

    def delay() -> None:
        _back_off(w, waker, 60.0)
        done.set()

    threading.Thread(target=delay, daemon=True).start()
    for _ in range(20):
        waker.wake()  # as twenty appends do
        time.sleep(0.005)
    assert not done.wait(0.2)  # still waiting out the delay
    waker.set_urgent(True)  # a run's end waits for its records: look again now
    assert done.wait(10)


def test_the_wal_is_copied_back_once_per_growth_not_on_every_pass(tmp_path: Path) -> None:
    """A checkpoint leaves the WAL file its size (the next write starts it over):
    it is checkpointed again only once it grew past that, not on every pass."""
    journal = Journal(tmp_path / "outbox.sqlite")
    journal.WAL_LIMIT = 32 << 10
    checkpoints: list[str] = []
    journal._db().set_trace_callback(
        lambda sql: checkpoints.append(sql) if "wal_checkpoint" in sql else None
    )
    wal = tmp_path / "outbox.sqlite-wal"

    def grow(entries: int) -> None:
        for _ in range(entries):
            journal.append("0x" + "11" * 32, "fail", {"reason": "x" * 500})

    grow(200)
    assert wal.stat().st_size > journal.WAL_LIMIT
    journal.checkpoint_wal()
    journal.checkpoint_wal()
    assert len(checkpoints) == 1
    size = wal.stat().st_size
    grow(10)  # written from the WAL's first page again: the file keeps its size
    journal.checkpoint_wal()
    assert wal.stat().st_size == size and len(checkpoints) == 1
    while wal.stat().st_size <= size:
        grow(50)
    journal.checkpoint_wal()
    assert len(checkpoints) == 2
