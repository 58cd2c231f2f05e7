"""Confirmed means on chain: the outbox against chains that lose, move or lack the registry.

Issue #20 classes 1 and 2 and issue #19 class 3. The session chain serves the
cases an EVM snapshot, ``anvil_setCode`` or ``anvil_reorg`` can make; a chain
restarted under a connected worker, and a chain reset after a revocation, get
an Anvil process of their own (killed and started again on the same port).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ledger.chain.admin import deploy_registry
from ledger.chain.anvil import AnvilProcess, rpc_call
from ledger.chain.reader import RegistryReader
from ledger.cli.app import app
from ledger.config import Settings, load_settings, save_deployment
from ledger.record.manifest import build_manifest
from ledger.record.outbox import Outbox
from ledger.record.outbox.worker import Worker
from ledger.store import LocalStore
from ledger.training.hook import save_weights
from ledger.verify import Outcome, Verifier
from tests.chain.web3_registry import Registry
from tests.conftest import Chain, free_port

DEV_ADDRESS = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # Anvil's first dev account


def manifest(name: str) -> dict[str, object]:
    return build_manifest(name=name, config={"lr": 0.1}, created_at=None)


def weights(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    save_weights({"w": torch.randn(4, 4), "b": torch.randn(4)}, path)
    return path


def quiet_worker(outbox: Outbox, lines: list[str] | None = None) -> Worker:
    say = lines.append if lines is not None else (lambda _line: None)
    return Worker(outbox.journal, outbox.settings, say=say, urgent=True)


def events(registry: Registry, name: str, run_id: str) -> list[dict[str, object]]:
    return registry.events(name, bytes.fromhex(run_id[2:]))


def nonce(rpc_url: str, address: str) -> int:
    return int(str(rpc_call(rpc_url, "eth_getTransactionCount", [address, "latest"])), 16)


# -- #20.1 confirmed means on chain ------------------------------------------------------


def test_nothing_is_sent_to_an_address_without_the_registry(chain: Chain, tmp_path: Path) -> None:
    """A chain reset under a connected worker leaves the registry's address empty: the
    worker sends nothing (no nonce spent, so a deploy lands at the same address), says
    so in one line, and sends once the registry is back."""
    outbox = Outbox(chain.settings(tmp_path / "ledger"), background=False)
    lines: list[str] = []
    w = quiet_worker(outbox, lines)
    run_id = outbox.start_run(manifest("no-code"))
    w.run_once()
    assert [e.state for e in outbox.journal.entries()] == ["confirmed"]
    address = chain.registry.address
    code = rpc_call(chain.rpc_url, "eth_getCode", [address, "latest"])
    signer = chain.admin.address
    rpc_call(chain.rpc_url, "anvil_setCode", [address, "0x"])  # the registry is gone
    sent_before = nonce(chain.rpc_url, signer)
    outbox.checkpoint(run_id, 0, weights(tmp_path / "c0.pt", 0), {"x": 1})
    result = w.run_once()
    assert [e.state for e in outbox.journal.entries()] == ["confirmed", "stored"]
    assert nonce(chain.rpc_url, signer) == sent_before  # nothing sent, no nonce spent
    assert result.waiting_on is not None and "no contract at" in result.waiting_on
    assert len(lines) == 1 and "ledger deploy" in lines[0]
    rpc_call(chain.rpc_url, "anvil_setCode", [address, code])  # deployed again
    w.run_once()
    assert [e.state for e in outbox.journal.entries()] == ["confirmed", "confirmed"]
    assert len(events(chain.registry, "CheckpointCommitted", run_id)) == 1
    assert lines[-1].startswith("reachable again")


# runtime code that answers any call with the ABI string "1": it takes `version()`
# like the registry does, and any transaction with status 1, and records nothing
ANSWERS_ANYTHING = (
    "0x"
    "6020600052"  # mstore(0x00, 0x20): the offset
    "6001602052"  # mstore(0x20, 1): the length
    "7f31" + "00" * 31 + "604052"  # mstore(0x40, "1")
    "60606000f3"  # return(0x00, 0x60)
)


def test_a_receipt_without_the_registry_event_confirms_nothing(
    chain: Chain, tmp_path: Path
) -> None:
    """Code that answers like the registry and takes every transaction (status 1) but
    is not the registry: no record is confirmed from a receipt that lacks the
    record's event, and nothing more is sent to that code."""
    outbox = Outbox(chain.settings(tmp_path / "ledger"), background=False)
    w = quiet_worker(outbox)
    address = chain.registry.address
    rpc_call(chain.rpc_url, "anvil_setCode", [address, ANSWERS_ANYTHING])
    run_id = outbox.start_run(manifest("not-the-registry"))
    result = w.run_once()
    [entry] = outbox.journal.entries()
    assert entry.state == "stored" and "no registry event" in (entry.error or "")
    assert result.waiting_on is not None and "not the registry" in result.waiting_on
    before = nonce(chain.rpc_url, chain.admin.address)
    w.run_once()  # the same code again: not sent again
    assert nonce(chain.rpc_url, chain.admin.address) == before
    assert events(chain.registry, "RunStarted", run_id) == []


# -- #20.2 restarts and reorgs are noticed ------------------------------------------------


def test_records_lost_in_a_rollback_are_noticed_by_the_next_pass(
    chain: Chain, tmp_path: Path
) -> None:
    """The chain rolls back under a connected worker and moves on; the worker goes on
    confirming other records at new blocks. The records lost in the rollback are found
    by the next pass (not only once something of theirs is refused) and by `sync`."""
    outbox = Outbox(chain.settings(tmp_path / "ledger"), background=False)
    w = quiet_worker(outbox)
    snapshot = rpc_call(chain.rpc_url, "evm_snapshot")
    lost = outbox.start_run(manifest("lost"))
    outbox.finalize(lost, weights(tmp_path / "f.pt", 1), {"loss": 1})
    w.run_once()
    assert outbox.journal.counts()["confirmed"] == 2
    rpc_call(chain.rpc_url, "evm_revert", [snapshot])  # both records gone
    for _ in range(3):
        rpc_call(chain.rpc_url, "evm_mine")  # the chain moves past their heights
    other = outbox.start_run(manifest("after"))
    w.run_once()
    assert len(events(chain.registry, "RunStarted", other)) == 1
    assert len(events(chain.registry, "RunStarted", lost)) == 1  # recommitted by the pass
    assert len(events(chain.registry, "RunFinalized", lost)) == 1
    assert outbox.sync(30).recommitted == 0  # nothing left to find, nothing sent twice
    assert len(events(chain.registry, "RunStarted", lost)) == 1
    assert {e.state for e in outbox.journal.entries()} == {"confirmed"}


def test_sync_rechecks_every_confirmed_block(chain: Chain, tmp_path: Path) -> None:
    """A stale block under a still-valid newer one (a journal another worker wrote
    past a rollback): `ledger sync` re-checks every confirmed record's block."""
    outbox = Outbox(chain.settings(tmp_path / "ledger"), background=False)
    snapshot = rpc_call(chain.rpc_url, "evm_snapshot")
    lost = outbox.start_run(manifest("lost-below"))
    quiet_worker(outbox).run_once()
    rpc_call(chain.rpc_url, "evm_revert", [snapshot])
    rpc_call(chain.rpc_url, "evm_mine")
    rpc_call(chain.rpc_url, "evm_mine")
    # another data directory's worker records a run on the new branch; its entry is
    # copied into this journal as a later confirmed block
    other_box = Outbox(chain.settings(tmp_path / "other"), background=False)
    other_box.start_run(manifest("newer"))
    other_box.sync(30)
    [newer] = other_box.journal.entries()
    outbox.journal.append(newer.run_id, "start", newer.payload)
    [_, copied] = outbox.journal.entries()
    assert newer.block_number is not None and newer.block_hash is not None
    outbox.journal.mark_confirmed(
        [copied.id],
        block_number=newer.block_number,
        block_hash=newer.block_hash,
        registry=chain.registry.address,
    )
    result = outbox.sync(30)
    assert result.recommitted == 1
    assert len(events(chain.registry, "RunStarted", lost)) == 1


def test_a_reorg_is_noticed_and_its_records_sent_again_once(chain: Chain, tmp_path: Path) -> None:
    outbox = Outbox(chain.settings(tmp_path / "ledger"), background=False)
    w = quiet_worker(outbox)
    run_id = outbox.start_run(manifest("reorged"))
    outbox.finalize(run_id, weights(tmp_path / "f.pt", 2), {"loss": 2})
    w.run_once()
    confirmed = outbox.journal.entries()
    assert {e.state for e in confirmed} == {"confirmed"}
    depth = int(str(rpc_call(chain.rpc_url, "eth_blockNumber")), 16) - min(
        e.block_number or 0 for e in confirmed
    )
    rpc_call(chain.rpc_url, "anvil_reorg", [depth + 1, []])  # both blocks replaced, emptied
    assert events(chain.registry, "RunStarted", run_id) == []
    outbox.start_run(manifest("after-reorg"))
    # the worker notices by itself; a pass may leave part of the resend to the next
    # one (a receipt not seen within its wait on a busy machine), so give it a few
    for _ in range(5):
        w.run_once()
        if events(chain.registry, "RunFinalized", run_id):
            break
    assert len(events(chain.registry, "RunStarted", run_id)) == 1
    assert len(events(chain.registry, "RunFinalized", run_id)) == 1
    outbox.sync(30)
    assert len(events(chain.registry, "RunStarted", run_id)) == 1
    assert sum(e.recommits for e in outbox.journal.entries()) == 2


# -- chains of their own: restarted on the same port ---------------------------------------


class OwnChain:
    """An Anvil process of this test, restartable empty on the same port."""

    def __init__(self, tmp_path: Path) -> None:
        self.anvil = AnvilProcess(tmp_path / "chain", port=free_port())
        self.home = tmp_path / "ledger"
        self.anvil.start(persist=False)

    def deploy(self) -> Settings:
        base = Settings(data_dir=self.home, rpc_url=self.anvil.rpc_url)
        registry, _tx = deploy_registry(base)
        save_deployment(base, address=registry.address, chain_id=registry.chain_id, block=0)
        return load_settings(self.home)

    def restart_empty(self) -> None:
        pid = self.anvil.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        while self.anvil.answers():
            time.sleep(0.02)
        self.anvil.start(persist=False)

    def registry(self) -> Registry:
        return Registry.connect(load_settings(self.home), signer=False)

    def stop(self) -> None:
        pid = self.anvil.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[OwnChain]:
    for name in [k for k in os.environ if k.startswith("LEDGER_") and k != "LEDGER_OUTBOX_KEEP"]:
        monkeypatch.delenv(name)
    found = OwnChain(tmp_path)
    try:
        yield found
    finally:
        found.stop()


def test_a_chain_restarted_under_a_connected_worker(own: OwnChain, tmp_path: Path) -> None:
    """The transport reconnects silently to a new chain on the same port: the worker
    notices that the blocks of its confirmed records are gone (Anvil's genesis is the
    same on every start), sends nothing before the registry is deployed again, then
    recommits what the old chain held; the journal keeps the chain's identity."""
    settings = own.deploy()
    outbox = Outbox(settings, background=False)
    lines: list[str] = []
    w = quiet_worker(outbox, lines)
    first = outbox.start_run(manifest("before-restart"))
    outbox.finalize(first, weights(tmp_path / "f.pt", 3), {"loss": 3})
    w.run_once()
    assert outbox.journal.counts()["confirmed"] == 2
    old_identity = outbox.journal.chain_identity()
    assert old_identity is not None and old_identity[0] == 31337
    own.restart_empty()  # a brand-new chain at the same URL, no registry yet
    second = outbox.start_run(manifest("after-restart"))
    result = w.run_once()
    assert result.waiting_on is not None and "no contract at" in result.waiting_on
    assert nonce(own.anvil.rpc_url, DEV_ADDRESS) == 0  # nothing sent: the deploy nonce is free
    assert outbox.journal.counts()["confirmed"] == 0  # none is on the new chain
    assert own.deploy().registry_address == settings.registry_address  # same deployer nonce
    w.run_once()
    registry = own.registry()
    assert len(events(registry, "RunStarted", first)) == 1
    assert len(events(registry, "RunFinalized", first)) == 1
    assert len(events(registry, "RunStarted", second)) == 1
    assert outbox.journal.counts()["confirmed"] == 3
    genesis = rpc_call(own.anvil.rpc_url, "eth_getBlockByNumber", ["0x0", False])
    assert outbox.journal.chain_identity() == (31337, genesis["hash"])  # type: ignore[index]


# -- #19.3 revocations survive a chain reset --------------------------------------------------


def test_a_revocation_is_recommitted_after_a_chain_reset(own: OwnChain, tmp_path: Path) -> None:
    settings = own.deploy()
    outbox = Outbox(settings, background=False)
    model = weights(tmp_path / "model.pt", 4)
    run_id = outbox.start_run(manifest("revoked-then-reset"))
    outbox.finalize(run_id, model, {"loss": 4})
    assert outbox.sync(30).confirmed == 2
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    home = ["--data-dir", str(own.home)]
    revoked = CliRunner().invoke(app, ["revoke", run_id, "--reason", "leaked data", *home], env=env)
    assert revoked.exit_code == 0, revoked.output

    def outcome() -> Outcome:
        reader = RegistryReader.connect(load_settings(own.home))
        return Verifier(reader, LocalStore(settings.store_dir)).verify_file(model).outcome

    assert outcome() is Outcome.REVOKED
    own.restart_empty()
    own.deploy()
    assert outcome() is Outcome.UNKNOWN  # the reset chain forgot the run
    synced = CliRunner().invoke(app, ["sync", "--json", *home], env=env)
    assert synced.exit_code == 0, synced.output
    assert outcome() is Outcome.REVOKED
    [event] = events(own.registry(), "RunRevoked", run_id)
    assert event["reason"] == "leaked data"


def test_a_version_1_journal_is_upgraded_in_place(tmp_path: Path) -> None:
    """Journals written before the ``revoke`` kind keep their entries and take revocations."""
    import sqlite3

    from ledger.record.outbox import journal

    path = tmp_path / "outbox.sqlite"
    db = sqlite3.connect(path)
    db.executescript(journal._SCHEMA.replace("'fail', 'revoke')", "'fail')"))
    db.execute("INSERT INTO meta VALUES ('schema', '1')")
    db.execute(
        "INSERT INTO entries (run_id, kind, payload, created_at, updated_at)"
        " VALUES ('0x01', 'start', '{}', 1, 1)"
    )
    db.commit()
    db.close()
    upgraded = journal.Journal(path)
    upgraded.append_confirmed(
        "0x01",
        "revoke",
        {"reason": "r"},
        {"reason": "r"},
        block_number=1,
        block_hash="0x00",
        registry="0x00",
        tx_hash="0x00",
        chain_id=31337,
    )
    assert [(e.id, e.kind) for e in upgraded.entries()] == [(1, "start"), (2, "revoke")]
    assert journal.Journal(path).entries()[1].state == "confirmed"  # opened again: no upgrade
