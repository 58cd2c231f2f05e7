"""The worker's loop: passes until stopped, idle, or left alone.

:func:`serve` runs :meth:`Worker.run_once <ledger.record.outbox.worker.Worker.run_once>`
over and over while it holds the data directory's
:class:`~ledger.record.outbox.lock.WorkerLock`, backing off while the chain or
the store is unreachable. It sleeps on a :class:`Waker`, which also tells it
when to end. Two wakers exist: :class:`WorkerThread` runs the loop on a daemon
thread of the training process (``LEDGER_OUTBOX_WORKER=thread``); the worker
process of :mod:`ledger.record.outbox.process` wakes it from its parent's pipe
and the socket later runs attach through.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from ledger.errors import LedgerError
from ledger.record.outbox.lock import WorkerLock
from ledger.record.outbox.worker import STORE_LIMIT, PassResult, Worker, one_line

__all__ = ["IDLE_EXIT", "Waker", "WorkerThread", "serve"]


class Waker(Protocol):
    """How a worker loop sleeps and learns that it should end."""

    def wait(self, timeout: float) -> None:
        """Sleep up to ``timeout`` s; return early when woken."""

    @property
    def stopping(self) -> bool:
        """End now (the owner stops the loop)."""

    @property
    def alone(self) -> bool:
        """Nobody appends through this worker any more: finish what moves, then end."""


IDLE_EXIT = 5.0  # seconds with nothing open before a worker ends (restarted on append)
DEEPEN_STAY = 600.0  # seconds a worker left alone stays for mined records to get deep enough


def serve(worker: Worker, lock: WorkerLock, waker: Waker, *, keep: float = 0.0) -> None:
    """Run passes until stopped, idle for IDLE_EXIT s, or alone with nothing moving.

    One data directory has one sending worker (``lock``); another waits and takes
    over if that one ends. Errors never end the loop: the journal is safe, and the
    next pass retries with backoff (up to 15 s). ``keep`` > 0 makes a resident
    worker: alone, it stays until nothing has moved for ``keep`` s (the next
    run of the data directory finds it running), and that is also how long it
    stays idle while someone is attached.
    """
    backoff = 0.25
    idle_since = time.monotonic()
    still_since = idle_since  # the last pass that moved something
    was_alone = waker.alone
    asked = False  # whether a resident holder of the lock was asked to step aside
    try:
        while not waker.stopping:
            if not lock.acquire(wait=False):
                if waker.alone:
                    return  # the other worker sends what is open
                if not asked:
                    asked = lock.retire_holder()  # a resident worker of other settings
                waker.wait(1.0)  # another process's worker sends; take over if it ends
                continue
            if waker.alone:
                worker.urgent = True  # nobody will add to a lingering batch now
            try:
                result = worker.run_once()
            except (LedgerError, OSError) as exc:  # stay alive; the journal is safe
                text = one_line(exc) if isinstance(exc, LedgerError) else str(exc)
                result = PassResult(waiting_on=f"outbox worker: {text}")
                worker.say(str(result.waiting_on))
            open_now = worker.journal.open_count()
            now = time.monotonic()
            if result.moved or (not was_alone and waker.alone):
                still_since = now  # (a resident worker's wait starts when it is left alone)
            was_alone = waker.alone
            deepening = result.deepening and now - still_since < DEEPEN_STAY
            if waker.alone and not keep and (not open_now or not result.moved) and not deepening:
                return  # the journal keeps the rest for `ledger sync` or the next run
            if (
                waker.alone
                and keep
                and not result.moved
                and now - still_since > keep
                and not deepening
            ):
                return  # resident, and nobody came: the next run starts another
            if result.waiting_on:
                _back_off(worker, waker, backoff)
                backoff = min(backoff * 2, 15.0)
            elif not result.moved:
                backoff = 0.25
                if open_now:
                    idle_since = now
                elif now - idle_since > max(keep, IDLE_EXIT):
                    return
                waker.wait(0.5)  # appends wake it sooner; other processes' are polled
            else:
                idle_since = now
                if not worker.urgent and result.stored < STORE_LIMIT:
                    # beside training, one pass per wake: the next append wakes it
                    # again (a pass that finds nothing costs about 0.3 ms of CPU)
                    waker.wait(0.5)
    finally:
        lock.release()


def _back_off(worker: Worker, waker: Waker, seconds: float) -> None:
    """Wait out a retry delay. Appends wake the worker but do not shorten it;
    a stop does, and so does any wake while someone waits for the records."""
    until = time.monotonic() + seconds
    while (left := until - time.monotonic()) > 0 and not waker.stopping:
        waker.wait(left)
        if worker.urgent:
            return


class WorkerThread:
    """The worker on a daemon thread of this process (``LEDGER_OUTBOX_WORKER=thread``,
    or an outbox given a store object that cannot cross to another process)."""

    def __init__(self, worker: Worker, lock: WorkerLock) -> None:
        self.worker = worker
        self.lock = lock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ledger-outbox", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def wake(self) -> None:
        self._wake.set()

    def set_urgent(self, urgent: bool) -> None:
        self.worker.urgent = urgent
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)  # the loop releases the lock as it ends

    # the Waker side, for serve()
    def wait(self, timeout: float) -> None:
        self._wake.wait(timeout)
        self._wake.clear()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    alone = False  # the thread ends with its process

    def _loop(self) -> None:
        serve(self.worker, self.lock, self)
