"""One sending worker per data directory: an exclusive lock on ``<journal>.lock``.

Whoever sends a journal's records (a training process's worker, a resident
worker, ``ledger sync``) holds the lock, so one key's nonces never race. The
lock file also says who holds it: the holder's pid and, for a resident worker,
the name of the socket it listens on (:mod:`ledger.record.outbox.process`),
through which another sender may ask it to step aside.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from typing import IO

__all__ = ["WorkerLock"]


class WorkerLock:
    """An exclusive lock on ``<journal>.lock``: one sending worker per journal.

    The kernel drops it when its process dies, however it dies.
    """

    def __init__(self, journal_path: Path, note: str = "") -> None:
        self.path = journal_path.with_suffix(".lock")
        self.note = note  # written under the pid: how to reach the holder (a socket name)
        self._handle: IO[str] | None = None

    def acquire(self, *, wait: bool) -> bool:
        if self._handle is not None:
            return True
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n{self.note}" if self.note else str(os.getpid()))
        handle.flush()
        self._handle = handle
        return True

    def holder(self) -> str:
        """The holder's pid (as written; ``?`` when unknown)."""
        return self._content()[0] or "?"

    def running(self) -> int | None:
        """The pid of the process holding the lock now, if any (Linux, read from
        ``/proc/locks`` without touching the lock; None elsewhere)."""
        try:
            inode = self.path.stat().st_ino
            lines = Path("/proc/locks").read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            fields = line.split()
            # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"
            if (
                len(fields) >= 6
                and fields[1:4:2] == ["FLOCK", "WRITE"]
                and fields[5].rsplit(":", 1)[-1] == str(inode)
            ):
                return int(fields[4])
        return None

    def retire_holder(self) -> bool:
        """Ask the holder, if it is a resident worker (its note names its socket,
        see :mod:`ledger.record.outbox.process`) of other settings than ours, to
        step aside; it does once nobody is attached to it. Whether it was asked."""
        note = self.holder_note()
        try:
            name = bytes.fromhex(note).decode()
        except (ValueError, UnicodeDecodeError):
            return False
        if not name.startswith("\0ledger-outbox-") or note == self.note:
            return False  # not a resident worker, or one of our own settings
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(0.5)
        try:
            sock.connect(name)
            sock.sendall(b"q")
        except OSError:
            return False
        finally:
            sock.close()
        return True

    def holder_note(self) -> str:
        return self._content()[1]

    def _content(self) -> tuple[str, str]:
        try:
            pid, _, note = self.path.read_text().strip().partition("\n")
        except OSError:
            return "", ""
        return pid.strip(), note.strip()

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
