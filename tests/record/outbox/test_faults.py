"""Fault tests: real Anvil processes, a real training process, real signals.

Each test owns its Anvil (the session chain cannot be killed) and a data
directory deployed by ``ledger deploy``. The training process is
``train_slowly.py``: one checkpoint per epoch, a line on stdout per epoch. In
every case the end state is the same: each record on chain exactly once, and
``ledger verify`` passes for the final model.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ledger.chain.anvil import AnvilProcess, rpc_call
from ledger.config import load_settings
from ledger.record.outbox.journal import Journal
from tests.chain.web3_registry import Registry
from tests.conftest import free_port
from tests.store.ipfs.node import IpfsNode

ROOT = Path(__file__).resolve().parents[3]
TRAIN = Path(__file__).with_name("train_slowly.py")


@dataclass
class Node:
    """One Anvil of this test and the data directory deployed on it."""

    anvil: AnvilProcess
    home: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        env.update(LEDGER_HOME=str(self.home), LEDGER_RPC_URL=self.anvil.rpc_url)
        env["LEDGER_OUTBOX_KEEP"] = "0"  # each worker ends with its process (test_resident.py)
        env["PYTHONPATH"] = str(ROOT)
        env.update(extra)
        return env

    def cli(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "ledger", *args],
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"ledger {' '.join(args)}: {done.returncode}\n{done.stderr}")
        return done

    def kill_anvil(self) -> None:
        pid = self.anvil.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        while self.anvil.answers():
            time.sleep(0.05)
        self.anvil.pid_file.unlink(missing_ok=True)

    @property
    def journal(self) -> Journal:
        return Journal(self.home / "outbox.sqlite")

    def registry(self) -> Registry:
        return Registry.connect(load_settings(self.home), signer=False)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    anvil = AnvilProcess(tmp_path / "chain", port=free_port())
    anvil.start(persist=True)
    found = Node(anvil, tmp_path / "ledger")
    try:
        found.cli("deploy")
        time.sleep(1.2)  # let Anvil's 1 s state dump include the registry
        yield found
    finally:
        pid = anvil.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)


class Training:
    """``train_slowly.py`` as a child process, read line by line."""

    def __init__(self, node: Node, out: Path, epochs: int, pause: float, **env: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(TRAIN), str(out), str(epochs), str(pause)],
            env=node.env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, as a terminal's job has
        )
        self.lines: list[str] = []

    def wait_for(self, prefix: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line.strip())
            if line.startswith(prefix):
                return line.strip()
        raise AssertionError(f"no {prefix!r} line; got {self.lines}; stderr {self.stderr()}")

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def finish(self, timeout: float = 120) -> str:
        """Wait for the process; returns its stderr (the outbox's warnings)."""
        _, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err
        return err


def wait_until(check: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def assert_once(node: Node, run_id: str, steps: int, *, final: bool = True) -> None:
    """Every record of the run on chain exactly once."""
    registry, rid = node.registry(), bytes.fromhex(run_id[2:])
    assert len(registry.events("RunStarted", rid)) == 1
    logged = sorted(int(e["step"]) for e in registry.events("CheckpointCommitted", rid))
    assert logged == list(range(steps))
    assert len(registry.events("RunFinalized", rid)) == (1 if final else 0)
    assert node.journal.open_count() == 0
    assert node.journal.counts()["failed"] == 0


def verify(node: Node, model: Path, **env: str) -> dict[str, object]:
    done = node.cli("verify", str(model), "--json", check=False, **env)
    report: dict[str, object] = json.loads(done.stdout)
    assert done.returncode == 0 and report["outcome"] == "verified", done.stdout + done.stderr
    return report


def run_id_of(training: Training) -> str:
    return next(line.split()[1] for line in training.lines if line.startswith("started"))


def test_anvil_killed_and_restarted_during_training(node: Node, tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    training = Training(node, model, epochs=30, pause=0.3)
    training.wait_for("epoch 2")
    wait_until(lambda: node.journal.counts()["confirmed"] >= 3, what="first confirmations")
    node.kill_anvil()
    training.wait_for("epoch 22")  # training goes on while the chain is gone
    assert node.journal.open_count() > 0
    node.anvil.start(persist=True)  # from its last state dump: the last ~1 s is lost
    training.wait_for("done")
    err = training.finish()
    assert "retrying in the background" in err and "Traceback" not in err
    assert_once(node, run_id_of(training), steps=30)
    verify(node, model)


def test_killed_between_storing_and_sending(node: Node, tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    dead = f"http://127.0.0.1:{free_port()}"  # the worker stores, but cannot send
    training = Training(node, model, epochs=4, pause=0.05, LEDGER_RPC_URL=dead)
    training.wait_for("epoch 3")
    # the process now flushes at exit, waiting on the chain: everything gets stored
    wait_until(lambda: node.journal.counts()["stored"] == 6, what="6 stored records")
    training.kill()
    assert node.journal.counts()["confirmed"] == 0
    synced = json.loads(node.cli("sync", "--json").stdout)
    assert (synced["confirmed"], synced["open"]) == (6, 0)
    assert_once(node, run_id_of(training), steps=4)
    verify(node, model)


def test_killed_while_a_transaction_is_in_flight(node: Node, tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    rpc_call(node.anvil.rpc_url, "evm_setAutomine", [False])  # sent, never mined
    training = Training(node, model, epochs=3, pause=0.05)
    training.wait_for("epoch 2")
    wait_until(lambda: node.journal.counts()["sent"] >= 1, what="a sent transaction")
    wait_until(lambda: node.journal.counts()["stored"] == 4, what="the rest stored")
    [sent] = node.journal.entries(states=["sent"])
    training.kill()
    rpc_call(node.anvil.rpc_url, "evm_setAutomine", [True])
    rpc_call(node.anvil.rpc_url, "evm_mine")  # the orphaned transaction lands after all
    node.cli("sync")
    [start] = [e for e in node.journal.entries() if e.kind == "start"]
    assert start.tx_hash == sent.tx_hash  # confirmed from its receipt, not signed again
    assert_once(node, run_id_of(training), steps=3)
    verify(node, model)


def test_anvil_restarted_empty_after_confirmation(node: Node, tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    training = Training(node, model, epochs=3, pause=0.0)
    training.wait_for("done")
    training.finish()
    verify(node, model)
    node.kill_anvil()
    node.anvil.state_file.unlink()
    node.anvil.start(persist=True)  # a brand-new chain
    node.cli("deploy")  # the same deployer and nonce: the same registry address
    assert node.cli("verify", str(model), check=False).returncode == 4  # unknown now
    synced = json.loads(node.cli("sync", "--json").stdout)
    assert (synced["recommitted"], synced["confirmed"], synced["open"]) == (5, 5, 0)
    assert_once(node, run_id_of(training), steps=3)
    verify(node, model)
    status = json.loads(node.cli("status", "--json").stdout)
    assert status["recommitted"] == 5


def test_the_store_unavailable_for_a_while(node: Node, tmp_path: Path) -> None:
    ipfs = IpfsNode(tmp_path / "ipfs")  # artifacts go to a real IPFS node
    ipfs.start()
    try:
        model = tmp_path / "model.pt"
        training = Training(node, model, epochs=12, pause=0.3, LEDGER_IPFS_API=ipfs.api)
        training.wait_for("epoch 1")
        wait_until(lambda: node.journal.counts()["confirmed"] >= 2, what="first confirmations")
        ipfs.stop()
        training.wait_for("epoch 6")  # training goes on while the store is gone
        assert node.journal.counts()["pending"] > 0  # handed over, waiting for the store
        ipfs.start()
        training.wait_for("done", timeout=120)
        err = training.finish()
        assert "retrying in the background" in err and "Traceback" not in err
        assert_once(node, run_id_of(training), steps=12)
        verify(node, model, LEDGER_IPFS_API=ipfs.api)  # the run's documents come from IPFS
    finally:
        ipfs.stop()


def test_the_worker_finishes_what_a_killed_training_handed_over(node: Node, tmp_path: Path) -> None:
    training = Training(node, tmp_path / "model.pt", epochs=8, pause=1.0)
    training.wait_for("epoch 1")
    worker_pid = int((node.home / "outbox.lock").read_text().split()[0])
    assert worker_pid != training.proc.pid  # the sender is a process of its own
    training.kill()  # SIGKILL: no exit handler runs, nothing more is appended
    handed = [e for e in node.journal.entries() if e.kind == "checkpoint"]
    # the orphaned worker sends what it was given, by itself, then ends
    wait_until(lambda: node.journal.open_count() == 0, timeout=30, what="the orphan's sends")
    wait_until(lambda: not _alive(worker_pid), timeout=30, what="the worker to end")
    assert_once(node, run_id_of(training), steps=len(handed), final=False)


def test_ctrl_c_records_the_run_as_failed(node: Node, tmp_path: Path) -> None:
    training = Training(node, tmp_path / "model.pt", epochs=30, pause=0.2)
    training.wait_for("epoch 1")
    os.killpg(training.proc.pid, signal.SIGINT)  # the whole foreground job, as Ctrl-C does
    _, err = training.proc.communicate(timeout=120)
    assert "KeyboardInterrupt" in err and training.proc.returncode != 0
    run_id = bytes.fromhex(run_id_of(training)[2:])
    [failed] = node.registry().events("RunFailed", run_id)  # the worker outlived the signal
    assert "KeyboardInterrupt" in str(failed["reason"])
    assert node.journal.open_count() == 0


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie left for its new parent to reap counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"
