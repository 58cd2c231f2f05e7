"""The outbox worker in a process of its own, beside the training process.

The training process only appends to the journal; storing artifacts, hashing
tensors, signing and talking JSON-RPC happen here, so none of it holds the
training process's GIL or runs on its threads. The two talk through the journal
and one pipe (the child's stdin):

- the first line carries the settings and the resolved signing key as JSON (the
  key never appears in the command line or the environment);
- then single bytes: ``u`` someone waits (send at once, no lingering for fuller
  batches), ``n`` nobody waits any more. Appends send nothing: the worker looks
  at the journal every half second, so a few checkpoints share one pass (one
  burst of CPU beside training instead of one per checkpoint);
- end of file means the training process is gone (it exited, or was killed):
  the worker finishes what still moves and ends, leaving the rest in the
  journal for ``ledger sync`` or the next run.

The child stays in the training process's process group, so a job scheduler
that stops the group stops it too; it ignores SIGINT, so Ctrl-C in a terminal
interrupts training (which records the run as failed) without killing the
sender of that record. It runs at a lower CPU priority (nice +10) than
training. Its one-line warnings go to the training process's
stderr. It ends after 5 s with nothing open and is started again on the next
append.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from ledger.config import Secret, Settings

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # where `ledger` is importable from
# The worker yields the CPU to training whenever both want it: its work can wait
# (the journal holds it), training's cannot. A run's end waits on an idle CPU.
WORKER_NICE = 10


class WorkerProcess:
    """The parent's handle on its worker process."""

    def __init__(self, settings: Settings, secret: Secret) -> None:
        self.settings = settings
        self._secret = secret
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ)
        if not _installed():  # a checkout on sys.path: the child needs it too
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p
            )
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "ledger.outbox.process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        assert self._proc.stdin is not None
        self._proc.stdin.write(_settings_line(self.settings, self._secret))
        self._proc.stdin.flush()
        os.set_blocking(self._proc.stdin.fileno(), False)  # a full pipe never blocks training

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def wake(self) -> None:
        """Nothing to do: the worker polls the journal (see the module docstring)."""

    def set_urgent(self, urgent: bool) -> None:
        self._send(b"u" if urgent else b"n")

    def stop(self, timeout: float = 0.0) -> None:
        """Tell the worker it is alone (it finishes what moves, then ends); wait up
        to ``timeout`` s for it to end."""
        if self._proc is None:
            return
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        if timeout:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout)

    def _send(self, command: bytes) -> None:
        stdin = self._proc.stdin if self._proc is not None else None
        if stdin is None or stdin.closed:
            return
        # a full pipe holds commands already; a closed one means the worker ended
        # (the next append starts another)
        with contextlib.suppress(OSError):
            os.write(stdin.fileno(), command)


def _installed() -> bool:
    """Whether ``ledger`` lives in a site directory, which any interpreter of this
    environment finds (putting one on PYTHONPATH would shadow the standard library)."""
    import site

    sites = [*site.getsitepackages(), site.getusersitepackages()]
    return any(Path(p).resolve() == _PACKAGE_ROOT for p in sites)


def _settings_line(settings: Settings, secret: Secret) -> bytes:
    fields: dict[str, Any] = {
        "data_dir": str(settings.data_dir.resolve()),
        "rpc_url": settings.rpc_url,
        "registry_address": settings.registry_address,
        "chain_id": settings.chain_id,
        "deploy_block": settings.deploy_block,
        "ipfs_api": settings.ipfs_api,
        "private_key": secret.reveal(),
    }
    return json.dumps(fields).encode() + b"\n"


class _PipeWaker:
    """The child's side of the pipe, as :func:`ledger.outbox.worker.serve` waits on it."""

    def __init__(self, pipe: IO[bytes], on_urgent: Any) -> None:
        self._fd: int | None = pipe.fileno()
        self._on_urgent = on_urgent

    stopping = False

    @property
    def alone(self) -> bool:
        return self._fd is None

    def wait(self, timeout: float) -> None:
        if self._fd is None:
            return
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if not ready:
            return
        data = os.read(self._fd, 4096)
        if not data:
            self._fd = None  # the training process is gone
            return
        for command in data:
            if command in b"un":
                self._on_urgent(command == ord("u"))


def _first_line(fd: int) -> bytes:
    """One line from ``fd``, read unbuffered so no command byte after it is swallowed."""
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte:
            break
        line += byte
    return bytes(line)


def main() -> None:
    """Entry point of the worker process (``python -m ledger.outbox.process``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(WORKER_NICE)
    from ledger.outbox import journal_path
    from ledger.outbox.journal import Journal
    from ledger.outbox.worker import Worker, WorkerLock, serve

    fields = json.loads(_first_line(sys.stdin.fileno()) or b"null")
    if not isinstance(fields, dict):
        raise SystemExit("ledger outbox worker: no settings on stdin (started by the outbox only)")
    secret = Secret(str(fields.pop("private_key")))
    settings = Settings(data_dir=Path(fields.pop("data_dir")), **fields)
    journal = Journal(journal_path(settings))
    worker = Worker(journal, settings, secret=secret)

    def urgent(on: bool) -> None:
        worker.urgent = on

    serve(worker, WorkerLock(journal.path), _PipeWaker(sys.stdin.buffer, urgent))


if __name__ == "__main__":
    main()
