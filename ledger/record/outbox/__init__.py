"""The durable outbox between training and the chain.

The training hook hands each record to :class:`Outbox` — a manifest at start,
a weights file path and its metrics per checkpoint and at the end — which
appends it to the journal and returns: that insert is all the training loop
waits for. A background worker stores the artifacts, sends batched transactions
and confirms them. A run's id is derived locally (committer + manifest CID), so
the hook knows it before the chain does. One module per job:

- :mod:`~ledger.record.outbox.journal`: the journal, SQLite in WAL mode, and
  its entries' states;
- :mod:`~ledger.record.outbox.worker`: the worker's passes (store, reconcile,
  recover, send);
- :mod:`~ledger.record.outbox.lock`: one sending worker per data directory (a
  file lock), so one key's nonces never race;
- :mod:`~ledger.record.outbox.serve`: the loop that runs the passes, its
  wake-ups and back-off, and the worker on a thread
  (``LEDGER_OUTBOX_WORKER=thread``);
- :mod:`~ledger.record.outbox.process`: the worker in a child process (the
  default), and the socket the next run attaches to while it stays resident.

At exit the hook flushes with a bounded wait and says what remains; `ledger
sync` finishes whatever a previous process left, and the next run's worker does
the same on its own. `ledger status` shows the journal.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger.chain.records import run_id_for
from ledger.config import Secret, Settings, resolve_private_key
from ledger.documents import canonical_json
from ledger.errors import ConfigError, InputError, RecordError
from ledger.hashing.cid import bytes_cid
from ledger.ids import Relation, to_hex
from ledger.record.outbox.journal import Entry, Journal
from ledger.record.outbox.lock import WorkerLock
from ledger.record.outbox.serve import WorkerThread
from ledger.record.outbox.worker import PassResult, Worker

if TYPE_CHECKING:
    from ledger.record.outbox.process import AttachedWorker, WorkerProcess
from ledger.store import ArtifactStore

__all__ = ["Entry", "Journal", "Outbox", "PassResult", "flush_timeout", "journal_path"]

_OPEN: dict[Path, Outbox] = {}
_OPEN_LOCK = threading.Lock()


def journal_path(settings: Settings) -> Path:
    return settings.data_dir / "outbox.sqlite"


# seconds between looks at the journal while a run waits for its records: every
# millisecond for the first 0.2 s (a run's last records usually land within 10-20
# ms; a look is one indexed COUNT), then less and less often, up to every 50 ms
FLUSH_POLL = (0.001, 0.2, 0.05)


def worker_kind() -> str:
    """Where the background worker runs (``LEDGER_OUTBOX_WORKER``): ``process``
    (the default; its CPU and the GIL stay off the training loop) or ``thread``."""
    kind = os.environ.get("LEDGER_OUTBOX_WORKER", "process")
    if kind not in ("process", "thread"):
        raise ConfigError(
            f"LEDGER_OUTBOX_WORKER={kind!r} is not a worker kind", hint="use process or thread"
        )
    return kind


def flush_timeout() -> float:
    """Seconds a finishing run waits for its records (``LEDGER_FLUSH_TIMEOUT``, default 60)."""
    text = os.environ.get("LEDGER_FLUSH_TIMEOUT", "60")
    try:
        return max(0.0, float(text))
    except ValueError as exc:
        raise ConfigError(f"LEDGER_FLUSH_TIMEOUT={text!r} is not a number of seconds") from exc


class Outbox:
    """The journal of one data directory, and this process's handle on the worker
    that sends its records (a child process, a resident worker it attached to,
    or a thread: see :meth:`start_worker`)."""

    def __init__(
        self,
        settings: Settings,
        store: ArtifactStore | None = None,
        *,
        background: bool = True,
        worker: str | None = None,
    ) -> None:
        self.settings = settings
        self.background = background  # False: appends wait for `sync` or another process
        self.journal = Journal(journal_path(settings))
        self.worker = Worker(self.journal, settings, store=store)
        # a store object cannot cross to another process: its worker runs on a thread
        self.worker_kind = worker or ("thread" if store is not None else worker_kind())
        self._runner: WorkerThread | WorkerProcess | AttachedWorker | None = None
        self._committer: str | None = None
        self._secret: Secret | None = None
        self._runs: list[str] = []  # the runs this process appended to (what exit waits for)

    @classmethod
    def for_settings(cls, settings: Settings, store: ArtifactStore | None = None) -> Outbox:
        """The process's outbox for this data directory (one worker per journal)."""
        key = journal_path(settings).resolve()
        with _OPEN_LOCK:
            found = _OPEN.get(key)
            if found is None or found.settings != settings:
                found = _OPEN[key] = cls(settings, store)
            return found

    # -- appending (the training loop's side) ------------------------------------

    def committer(self) -> str:
        """The address that signs this data directory's records (known offline).

        Derived with libsecp256k1 alone: importing web3 or eth_account costs the
        training process 1-2 s of CPU.
        """
        if self._committer is None:
            from ledger.chain.sender import address_of

            chain_id = self.settings.chain_id
            if chain_id is None:
                from ledger.chain.rpc import JsonRpc

                chain_id = int(JsonRpc(self.settings.rpc_url)("eth_chainId"), 16)
            self._secret = resolve_private_key(self.settings, chain_id)
            self._committer = address_of(self._secret)
        return self._committer

    def start_run(
        self, manifest: Mapping[str, Any], parents: Sequence[tuple[bytes, Relation]] = ()
    ) -> str:
        """Append a run's start; returns its run id (``0x`` hex), derived locally."""
        text = canonical_json(manifest, what="manifest")
        committer = self.committer()
        run_id = to_hex(run_id_for(committer, bytes_cid(text).digest))
        payload = {
            "manifest": text.decode(),
            "committer": committer,
            "parents": [[to_hex(p), int(r)] for p, r in parents],
        }
        self._append(run_id, "start", payload)
        return run_id

    def checkpoint(self, run_id: str, step: int, weights: Path, metrics: Mapping[str, Any]) -> int:
        """Append a checkpoint's weights file and metrics; returns the entry id."""
        return self._append(run_id, "checkpoint", _weights_payload(weights, metrics), step)

    def finalize(self, run_id: str, weights: Path, metrics: Mapping[str, Any]) -> int:
        return self._append(run_id, "finalize", _weights_payload(weights, metrics))

    def fail(self, run_id: str, reason: str) -> int:
        return self._append(run_id, "fail", {"reason": reason[:500]})

    def _append(
        self, run_id: str, kind: Any, payload: dict[str, Any], step: int | None = None
    ) -> int:
        entry_id = self.journal.append(run_id, kind, payload, step)
        if run_id not in self._runs:
            self._runs.append(run_id)
        if self.background:
            self.start_worker().wake()
        return entry_id

    # -- the worker ------------------------------------------------------------------

    def start_worker(self) -> WorkerThread | WorkerProcess | AttachedWorker:
        """This process's background worker (started on first use, and again after
        it ended idle): a resident worker of the same settings if one runs, else
        a child process, or a thread (see :func:`worker_kind`)."""
        if self._runner is None or not self._runner.alive:
            if self._runner is None:
                atexit.register(self._at_exit)
            if self.worker_kind == "process":
                from ledger.record.outbox.process import (
                    AttachedWorker,
                    WorkerProcess,
                    keep_seconds,
                    socket_name,
                )

                name = socket_name(self.settings, self.committer())
                self._runner = AttachedWorker.attach(name)
                if self._runner is None:
                    assert self._secret is not None  # resolved by committer()
                    self._runner = WorkerProcess(
                        self.settings, self._secret, name=name, keep=keep_seconds()
                    )
            else:
                self._runner = WorkerThread(self.worker, WorkerLock(self.journal.path))
            self._runner.start()
        return self._runner

    def flush(self, timeout: float, run_id: str | Sequence[str] | None = None) -> int:
        """Wait up to ``timeout`` s until no entry (of ``run_id``, or of those runs)
        is open; returns how many still are."""
        deadline = time.monotonic() + timeout
        runner: WorkerThread | WorkerProcess | AttachedWorker | None = None
        pause, brisk, longest = FLUSH_POLL
        brisk_until = time.monotonic() + brisk
        try:
            while True:
                remaining = self.journal.open_count(run_id)
                left = deadline - time.monotonic()
                if remaining == 0 or left <= 0:
                    return remaining
                if runner is None or not runner.alive:
                    runner = self.start_worker()  # (re)started if it ended meanwhile
                    runner.set_urgent(True)  # someone waits: no lingering for fuller batches
                time.sleep(min(left, pause))
                if time.monotonic() > brisk_until:
                    pause = min(pause * 1.5, longest)
        finally:
            if runner is not None:
                runner.set_urgent(False)

    def _at_exit(self) -> None:
        # this process's runs only: another key's records wait for a worker of that key
        if self._runs and self.journal.open_count(self._runs):
            remaining = self.flush(flush_timeout(), self._runs)
            if remaining:
                self.worker.say(
                    f"{remaining} record(s) not yet on chain; they are kept in "
                    f"{self.journal.path} and `ledger sync` (or the next run) sends them"
                )
        if self._runner is not None:
            self._runner.stop()

    # -- `ledger sync` -----------------------------------------------------------------

    def sync(self, timeout: float, *, retry_failed: bool = False) -> PassResult:
        """Run the worker in the foreground until nothing moves or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        if self._runner is not None:
            self._runner.stop(timeout)  # this process's own background worker hands over
        lock = WorkerLock(self.journal.path)
        # a resident worker idling for the next run steps aside
        if not lock.acquire(wait=False) and lock.retire_holder():
            settle = time.monotonic() + 5.0
            while not lock.acquire(wait=False) and time.monotonic() < settle:
                time.sleep(0.02)
        if not lock.acquire(wait=False):
            self.worker.say(
                f"another process's outbox worker (pid {lock.holder()}) is sending; "
                "waiting for it to finish"
            )
            while not lock.acquire(wait=False):
                if time.monotonic() > deadline:
                    raise RecordError(
                        f"another process (pid {lock.holder()}) is still sending this "
                        f"outbox's records after {timeout:g} s",
                        hint="run `ledger status` to watch it, or `ledger sync` again later",
                    )
                time.sleep(0.1)
        try:
            if retry_failed:
                self.journal.retry_failed()
            self.worker.recheck()  # `ledger sync` always checks what the journal holds as done
            self.worker.urgent = True
            total = PassResult()
            while True:
                result = self.worker.run_once()
                for name in ("stored", "confirmed", "recommitted", "failed"):
                    setattr(total, name, getattr(total, name) + getattr(result, name))
                total.waiting_on = result.waiting_on
                if not self.journal.open_count() or time.monotonic() > deadline:
                    return total
                if not result.moved:
                    if result.waiting_on is None:
                        return total
                    time.sleep(0.5)
        finally:
            lock.release()


def _weights_payload(weights: Path, metrics: Mapping[str, Any]) -> dict[str, Any]:
    canonical_json({"metrics": dict(metrics)}, what="metrics")  # refuse bad metrics now
    path = Path(weights).resolve()
    try:
        stat = path.stat()
    except FileNotFoundError as exc:
        raise InputError(f"weights file {path} does not exist") from exc
    return {
        "path": str(path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "metrics": dict(metrics),
    }
