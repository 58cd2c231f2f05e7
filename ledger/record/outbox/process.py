"""The outbox worker in a process of its own, beside the training process.

The training process only appends to the journal; storing artifacts, hashing
tensors, signing and talking JSON-RPC happen here, so none of it holds the
training process's GIL or runs on its threads. The two talk through the journal
and one pipe (the child's stdin):

- the first line carries the settings and the resolved signing key as JSON (the
  key never appears in the command line or the environment);
- then single bytes: ``w`` an entry was appended (store it now: what is stored
  while training runs is not left for the run's end to wait on), ``u`` someone
  waits (send at once, no lingering for fuller batches), ``n`` nobody waits any
  more. The worker also looks at the journal every half second, for what other
  processes append;
- end of file means the training process is gone (it exited, or was killed):
  the worker finishes what still moves and ends, leaving the rest in the
  journal for ``ledger sync`` or the next run.

The child stays in the training process's process group, so a job scheduler
that stops the group stops it too; it ignores SIGINT, so Ctrl-C in a terminal
interrupts training (which records the run as failed) without killing the
sender of that record. It runs at a lower CPU priority (nice +10) than
training. Its one-line warnings go to the training process's stderr.

**Resident worker.** Starting the worker (an interpreter and its imports) costs
about 0.2 s of CPU, taken from training. So, on Linux, it listens on an
abstract Unix socket named after the journal and its settings (chain, registry,
store, signing address) and, once its training process is gone, stays
``LEDGER_OUTBOX_KEEP`` seconds (default 60; 0 ends it at once) for the next
run: a hyperparameter sweep's next trial, or the same script run again, finds
it and attaches (:class:`AttachedWorker`) instead of starting another. An
attached process passes its stderr over the socket (``SCM_RIGHTS``), so the
warnings go to whoever is attached last; with nobody attached they go to
``<data dir>/outbox.log``, and the worker holds none of its former parent's
pipes (``subprocess.run(capture_output=True)`` of a training script returns
when the script ends). Other settings give another name, hence another worker.
``ledger sync``, or a worker of other settings waiting for the data
directory's lock, asks a resident worker to step aside (``q``; the socket's
name is written in the lock file); one still serving a live training ignores it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from ledger.config import Secret, Settings
from ledger.errors import ConfigError

_PACKAGE_ROOT = Path(__file__).resolve().parents[3]  # where `ledger` is importable from
# The worker yields the CPU to training whenever both want it: its work can wait
# (the journal holds it), training's cannot. A run's end waits on an idle CPU.
WORKER_NICE = 10


DEFAULT_KEEP = 60.0


def keep_seconds() -> float:
    """How long a worker stays for the next run once alone (``LEDGER_OUTBOX_KEEP``)."""
    text = os.environ.get("LEDGER_OUTBOX_KEEP", str(DEFAULT_KEEP))
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise ConfigError(
            f"LEDGER_OUTBOX_KEEP={text!r} is not a number of seconds",
            hint="0 ends the worker with its training process; the default is 60",
        )
    return value


def socket_name(settings: Settings, committer: str) -> str | None:
    """The abstract socket a worker for these settings listens on (Linux only).

    Derived from the data directory (path and inode), everything the worker
    sends with, and the interpreter and package it runs, so a process only ever
    attaches to a worker that would send its records the same way; the key
    itself is represented by its address.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:  # the folder itself, not its path: containers may mount others at one path
        folder = settings.data_dir.stat()
        code = _version()
    except OSError:
        return None
    fields = {
        **_settings_fields(settings),
        "committer": committer.lower(),
        "relayer": _relayer_address(settings),
        "folder": [folder.st_dev, folder.st_ino],
        # the same code: a run never attaches to a worker of another install
        "python": sys.executable,
        "package": str(_PACKAGE_ROOT),
        "code": code,
    }
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
    return f"\0ledger-outbox-{digest[:32]}"


def _version() -> list[int]:
    """When the outbox's modules were last written (an upgrade in place rewrites them)."""
    return [path.stat().st_mtime_ns for path in sorted(Path(__file__).parent.glob("*.py"))]


class AttachedWorker:
    """A handle on a worker another process started (see "Resident worker" above)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock: socket.socket | None = sock

    @classmethod
    def attach(cls, name: str | None) -> AttachedWorker | None:
        """Attach to the worker listening on ``name``, if one does; it gets our stderr."""
        if name is None:
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(0.5)  # a worker too busy to take us: start one of our own
        try:
            sock.connect(name)
            if _peer(sock)[1] != os.getuid():  # a name anyone may bind: only our own worker
                raise ConnectionRefusedError(name)
            try:
                err = [sys.stderr.fileno()]
            except (OSError, ValueError, AttributeError):  # a notebook's stderr has no fd
                err = []
            socket.send_fds(sock, [b"a"], err)
        except OSError:  # nobody listens
            sock.close()
            return None
        sock.setblocking(False)
        return cls(sock)

    @property
    def alive(self) -> bool:
        if self._sock is None:
            return False
        try:
            # the worker never writes: readable means it closed the connection
            return self._sock.recv(1, socket.MSG_PEEK) != b""
        except BlockingIOError:
            return True
        except OSError:
            return False

    @property
    def pid(self) -> int | None:
        return _peer(self._sock)[0] if self._sock is not None else None

    def start(self) -> None:
        """Nothing to start: the worker runs already."""

    def wake(self) -> None:
        self._send(b"w")

    def set_urgent(self, urgent: bool) -> None:
        self._send(b"u" if urgent else b"n")

    def stop(self, timeout: float = 0.0) -> None:
        """Detach (the worker goes on for others, or stays resident for a while)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, command: bytes) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.send(command)


def _peer(sock: socket.socket) -> tuple[int, int]:
    """The pid and uid of the process at the other end of a Unix socket."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return int(pid), int(uid)


class WorkerProcess:
    """The parent's handle on its worker process."""

    def __init__(
        self, settings: Settings, secret: Secret, *, name: str | None = None, keep: float = 0.0
    ) -> None:
        self.settings = settings
        self._secret = secret
        self._name = name  # the socket a resident worker listens on
        self._keep = keep
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ)
        if not _installed():  # a checkout on sys.path: the child needs it too
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p
            )
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "ledger.record.outbox.process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        assert self._proc.stdin is not None
        self._proc.stdin.write(
            _settings_line(self.settings, self._secret, name=self._name, keep=self._keep)
        )
        self._proc.stdin.flush()
        os.set_blocking(self._proc.stdin.fileno(), False)  # a full pipe never blocks training

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def wake(self) -> None:
        self._send(b"w")

    def set_urgent(self, urgent: bool) -> None:
        self._send(b"u" if urgent else b"n")

    def stop(self, timeout: float = 0.0) -> None:
        """Tell the worker it is alone: it finishes what moves, then stays resident
        (see the module docstring). With a ``timeout`` it is to end instead, and
        that long is waited for it (``ledger sync`` takes over)."""
        if self._proc is None:
            return
        if timeout:
            self._send(b"q")
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


def _settings_fields(settings: Settings) -> dict[str, Any]:
    return {
        "data_dir": str(settings.data_dir.resolve()),
        "rpc_url": settings.rpc_url,
        "registry_address": settings.registry_address,
        "chain_id": settings.chain_id,
        "deploy_block": settings.deploy_block,
        "ipfs_api": settings.ipfs_api,
        "store_weights": settings.store_weights,
        "max_fee_per_gas": settings.max_fee_per_gas,
        "confirmations": settings.confirmations,
    }


def _relayer_address(settings: Settings) -> str | None:
    if settings.relayer_key is None:
        return None
    from ledger.chain.sender import address_of

    return address_of(settings.relayer_key).lower()


def _settings_line(settings: Settings, secret: Secret, *, name: str | None, keep: float) -> bytes:
    relayer = settings.relayer_key
    fields = {
        "settings": _settings_fields(settings),
        "private_key": secret.reveal(),
        "relayer_key": relayer.reveal() if relayer is not None else None,
        "socket": name,
        "keep": keep,
    }
    return json.dumps(fields).encode() + b"\n"


class _Channels:
    """What the worker process listens to, as :func:`ledger.record.outbox.serve.serve`
    waits on it: its parent's pipe, and the socket other runs attach through.

    Each attached process (the parent included) may give a stderr; the latest
    one still attached is the worker's fd 2, else ``outbox.log``.
    """

    def __init__(self, pipe: IO[bytes], name: str | None, log: Path, on_urgent: Any) -> None:
        self._pipe: int | None = pipe.fileno()
        self._on_urgent = on_urgent
        self._log = log
        self._listener: socket.socket | None = None
        if name is not None:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                listener.bind(name)
                listener.listen(64)
                listener.setblocking(False)
                self._listener = listener
            except OSError:  # another worker of these settings listens: no attaching here
                listener.close()
        self._clients: dict[socket.socket, int | None] = {}  # connection -> its stderr
        self._waiting: dict[Any, bool] = {}  # who asked for haste (``u``) and still does
        try:
            self._parent_err: int | None = os.dup(2)
        except OSError:  # started without a stderr
            self._parent_err = None
        self._retire = False

    @property
    def listening(self) -> bool:
        return self._listener is not None

    @property
    def alone(self) -> bool:
        return self._pipe is None and not self._clients

    @property
    def stopping(self) -> bool:
        return self._retire and self.alone

    def wait(self, timeout: float) -> None:
        watched: list[Any] = [*self._clients]
        if self._pipe is not None:
            watched.append(self._pipe)
        if self._listener is not None:
            watched.append(self._listener)
        if not watched:
            select.select([], [], [], timeout)
            return
        ready, _, _ = select.select(watched, [], [], timeout)
        for source in ready:
            if source is self._listener:
                self._accept()
            elif source == self._pipe:
                data = os.read(source, 4096)
                if not data:
                    self._pipe = None  # the training process is gone
                    self._waiting.pop("parent", None)
                    self._forget_parent()
                self._commands("parent", data)
            else:
                self._from_client(source)

    def close(self) -> None:
        """Stop listening (the worker is about to end)."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _accept(self) -> None:
        """Take every waiting connection (a sweep may start many runs at once)."""
        assert self._listener is not None
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # none left (the listener does not block)
                return
            if _peer(conn)[1] != os.getuid():  # another user's process: not ours to serve
                conn.close()
                continue
            self._clients[conn] = None
            conn.settimeout(0.2)  # its stderr follows the connect at once: take it first
            self._from_client(conn)
            if conn in self._clients:
                conn.setblocking(False)

    def _from_client(self, conn: socket.socket) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(conn, 64, 1)
        except OSError:
            data, fds = b"", []
        for fd in fds:
            old = self._clients.get(conn)
            if old is not None:
                os.close(old)
            self._clients[conn] = fd
        self._commands(conn, data)
        if not data or b"q" in data:  # gone, or only came to ask us to step aside
            err = self._clients.pop(conn, None)
            self._waiting.pop(conn, None)
            conn.close()
            if err is not None:
                os.close(err)
        # haste while anyone attached waits; a newcomer ends the haste of being alone
        self._on_urgent(any(self._waiting.values()))
        self._route_stderr()

    def _commands(self, source: Any, data: bytes) -> None:
        for command in data:  # ``w`` only wakes the loop: select() returned already
            if command in b"un":
                self._waiting[source] = command == ord("u")
                self._on_urgent(any(self._waiting.values()))
            elif command == ord("q"):
                self._retire = True  # end once nobody else is attached

    def _forget_parent(self) -> None:
        if self._parent_err is not None:
            os.close(self._parent_err)
            self._parent_err = None
        self._route_stderr()

    def _route_stderr(self) -> None:
        sinks = [fd for fd in self._clients.values() if fd is not None]
        target = sinks[-1] if sinks else self._parent_err
        with contextlib.suppress(OSError, AttributeError, ValueError):
            sys.stderr.flush()  # a closed pipe, or no stderr at all, loses a warning only
        if target is not None:
            os.dup2(target, 2)
            return
        try:  # nobody attached: the warnings go to the data directory's log
            fd = os.open(self._log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError:
            fd = os.open(os.devnull, os.O_WRONLY)
        if fd != 2:
            os.dup2(fd, 2)
            os.close(fd)


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
    """Entry point of the worker process (``python -m ledger.record.outbox.process``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(WORKER_NICE)
    from ledger.record.outbox import journal_path
    from ledger.record.outbox.journal import Journal
    from ledger.record.outbox.lock import WorkerLock
    from ledger.record.outbox.serve import serve
    from ledger.record.outbox.worker import Worker

    fields = json.loads(_first_line(sys.stdin.fileno()) or b"null")
    if not isinstance(fields, dict):
        raise SystemExit("ledger outbox worker: no settings on stdin (started by the outbox only)")
    secret = Secret(str(fields["private_key"]))
    given = dict(fields["settings"])
    relayer = fields.get("relayer_key")
    settings = Settings(
        data_dir=Path(given.pop("data_dir")),
        relayer_key=Secret(str(relayer)) if relayer else None,
        **given,
    )
    journal = Journal(journal_path(settings))
    worker = Worker(journal, settings, secret=secret)
    # every path it is handed is absolute; a resident worker pins no one's directory
    os.chdir(journal.path.parent)

    def urgent(on: bool) -> None:
        worker.urgent = on

    name = fields.get("socket")
    channels = _Channels(sys.stdin.buffer, name, settings.data_dir / "outbox.log", urgent)
    keep = float(fields.get("keep") or 0.0) if channels.listening else 0.0
    lock = WorkerLock(journal.path, note=str(name).encode().hex() if channels.listening else "")
    while True:  # serve() takes the lock, or asks a resident holder of other settings to go
        serve(worker, lock, channels, keep=keep)
        channels.close()  # no more attaching; then one last look at the journal
        if channels.stopping or not journal.open_count() or not keep:
            return
        keep = 0.0  # something came in as it was ending: send it, then end


if __name__ == "__main__":
    main()
