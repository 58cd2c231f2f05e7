"""The resident worker: the next run of a data directory finds the last one's
worker still running and hands its records to it (real Anvil, real processes).

Each training is ``train_slowly.py`` in a process of its own, with
``LEDGER_OUTBOX_KEEP`` set so its worker stays after it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from eth_account import Account

from ledger.config import load_settings
from tests.chain.web3_registry import Registry
from tests.conftest import OTHER_KEYS
from tests.record.outbox.test_faults import (
    Node,
    Training,
    _alive,
    assert_once,
    node,
    run_id_of,
    verify,
    wait_until,
)

__all__ = ["node"]  # the fixture, shared with the fault tests

KEEP = {"LEDGER_OUTBOX_KEEP": "60"}


def worker_pid(node: Node) -> int:
    return int((node.home / "outbox.lock").read_text().split()[0])


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(stat[1])


def test_the_next_run_hands_its_records_to_the_resident_worker(node: Node, tmp_path: Path) -> None:
    first = Training(node, tmp_path / "first.pt", epochs=3, pause=0.05, **KEEP)
    first.wait_for("done")
    err = first.finish()  # returns although its worker lives on: no pipe of ours is held
    resident = worker_pid(node)
    assert _alive(resident) and resident != first.proc.pid
    assert "Traceback" not in err
    status = json.loads(node.cli("status", "--json").stdout)
    assert status["worker"] == {"pid": resident}  # the lock's holder, from /proc/locks

    second = Training(node, tmp_path / "second.pt", epochs=4, pause=0.05, **KEEP)
    second.wait_for("epoch 1")
    assert parent_of(resident) != second.proc.pid  # attached to, not started by, the second
    second.wait_for("done")
    second.finish()
    assert worker_pid(node) == resident and _alive(resident)
    assert_once(node, run_id_of(first), steps=3)
    assert_once(node, run_id_of(second), steps=4)
    verify(node, tmp_path / "second.pt")

    synced = json.loads(node.cli("sync", "--json").stdout)  # asks it to step aside
    assert synced["open"] == 0
    wait_until(lambda: not _alive(resident), timeout=30, what="the resident worker to end")
    assert json.loads(node.cli("status", "--json").stdout)["worker"] is None


def test_an_attached_run_hears_the_resident_workers_warnings(node: Node, tmp_path: Path) -> None:
    first = Training(node, tmp_path / "first.pt", epochs=2, pause=0.05, **KEEP)
    first.wait_for("done")
    first.finish()
    resident = worker_pid(node)

    node.kill_anvil()
    second = Training(node, tmp_path / "second.pt", epochs=12, pause=0.25, **KEEP)
    second.wait_for("epoch 6")  # training goes on while the chain is gone
    node.anvil.start(persist=True)
    second.wait_for("done")
    err = second.finish()
    # said by the resident worker, on the stderr the second run passed to it
    assert "retrying in the background" in err and "Traceback" not in err
    assert worker_pid(node) == resident
    assert_once(node, run_id_of(second), steps=12)
    verify(node, tmp_path / "second.pt")
    log = node.home / "outbox.log"  # between the runs nobody was attached
    assert not log.exists() or "retrying" not in log.read_text()
    node.cli("sync")  # the resident worker steps aside


def test_a_run_with_other_settings_gets_a_worker_of_its_own(node: Node, tmp_path: Path) -> None:
    first = Training(node, tmp_path / "first.pt", epochs=2, pause=0.05, **KEEP)
    first.wait_for("done")
    first.finish()
    resident = worker_pid(node)

    admin = Registry.connect(load_settings(node.home))  # the deployer
    admin.grant_committer(Account.from_key(OTHER_KEYS[0]).address)
    other_key = {**KEEP, "LEDGER_PRIVATE_KEY": OTHER_KEYS[0]}
    second = Training(node, tmp_path / "second.pt", epochs=3, pause=0.05, **other_key)
    second.wait_for("done")
    second.finish()
    # the first worker (the other key) stepped aside; the second run's own worker sent
    wait_until(lambda: not _alive(resident), timeout=30, what="the first worker to end")
    assert worker_pid(node) != resident
    assert_once(node, run_id_of(second), steps=3)
    registry = node.registry()
    started = registry.get_run(bytes.fromhex(run_id_of(second)[2:]))
    assert (
        started.committer.lower()
        != registry.get_run(bytes.fromhex(run_id_of(first)[2:])).committer.lower()
    )
    node.cli("sync")


STRANGER = """
import socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(bytes.fromhex(sys.argv[1]).decode())
try:
    sock.sendall(b"q")  # "step aside"
except OSError:
    pass  # the worker may hang up on a stranger before this is sent
sock.close()
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/bin/python3").exists(),
    reason="needs root to act as another user, and a system Python that user may run",
)
def test_another_user_cannot_make_the_resident_worker_step_aside(
    node: Node, tmp_path: Path
) -> None:
    first = Training(node, tmp_path / "first.pt", epochs=2, pause=0.05, **KEEP)
    first.wait_for("done")
    first.finish()
    resident = worker_pid(node)
    name_hex = (node.home / "outbox.lock").read_text().split()[1]

    def as_nobody() -> None:
        os.setgid(65534)
        os.setuid(65534)

    subprocess.run(["/usr/bin/python3", "-c", STRANGER, name_hex], preexec_fn=as_nobody, check=True)
    second = Training(node, tmp_path / "second.pt", epochs=2, pause=0.05, **KEEP)
    second.wait_for("done")
    second.finish()
    assert worker_pid(node) == resident  # still the same worker: the request was ignored
    assert_once(node, run_id_of(second), steps=2)

    subprocess.run(["/usr/bin/python3", "-c", STRANGER, name_hex], check=True)  # as us
    wait_until(lambda: not _alive(resident), timeout=30, what="the worker to step aside")


def test_an_attached_run_still_batches_its_checkpoints(node: Node, tmp_path: Path) -> None:
    first = Training(node, tmp_path / "first.pt", epochs=2, pause=0.05, **KEEP)
    first.wait_for("done")
    first.finish()  # its worker, alone now, sent the last records in haste
    # 8 checkpoints over about 2 s: the worker looks every 0.5 s, a batch lingers 2 s
    second = Training(node, tmp_path / "second.pt", epochs=8, pause=0.25, **KEEP)
    second.wait_for("done")
    second.finish()
    run_id = run_id_of(second)
    assert_once(node, run_id, steps=8)
    txs = {e.tx_hash for e in node.journal.entries(run_id=run_id) if e.kind == "checkpoint"}
    assert len(txs) <= 2  # not in haste once attached to: the checkpoints share batches
    node.cli("sync")


def test_a_run_does_not_wait_at_exit_for_another_keys_records(node: Node, tmp_path: Path) -> None:
    from dataclasses import replace

    from ledger.config import Secret
    from ledger.record.outbox import Outbox

    admin = Registry.connect(load_settings(node.home))
    admin.grant_committer(Account.from_key(OTHER_KEYS[1]).address)
    theirs = Outbox(
        replace(load_settings(node.home), private_key=Secret(OTHER_KEYS[1])), background=False
    )
    their_run = theirs.start_run({"schema": "ledger.manifest/v1", "name": "theirs"})
    training = Training(node, tmp_path / "mine.pt", epochs=2, pause=0.05, LEDGER_FLUSH_TIMEOUT="20")
    training.wait_for("done")
    err = training.finish()
    # its own records went out; the other key's start waits for a worker with that key,
    # and this process's exit did not wait on it (nor say it was left behind)
    assert "not yet on chain" not in err
    assert node.journal.entries(run_id=their_run)[0].state in ("pending", "stored")
    # `ledger sync` with this data directory's key cannot send it, and names the key it needs
    theirs_address = Account.from_key(OTHER_KEYS[1]).address.lower()
    mine = node.cli("sync", check=False)
    assert mine.returncode != 0
    assert f"1 for {theirs_address}" in mine.stderr
    assert "LEDGER_PRIVATE_KEY" in mine.stderr, mine.stderr
    as_json = node.cli("sync", "--json", check=False)
    assert json.loads(as_json.stdout)["waiting_for_keys"] == {theirs_address: 1}
    synced = json.loads(node.cli("sync", "--json", LEDGER_PRIVATE_KEY=OTHER_KEYS[1]).stdout)
    assert synced["open"] == 0  # `ledger sync` with that key sends it
    assert_once(node, run_id_of(training), steps=2)
