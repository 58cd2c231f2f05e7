"""Start, stop and inspect a local Anvil dev chain.

The chain keeps its state in ``<data dir>/chain/state.json``: Anvil dumps it
every second (``--state-interval 1``) and on SIGTERM, and loads it at start, so
a crash loses at most about a second of blocks. ``ledger chain down`` sends
SIGTERM for a clean dump. One data directory runs one chain: its pid file
(``chain/anvil.pid``) holds the pid and the URL, and a pid counts only while it
is that anvil on that port (its command line says so), so a chain on another
port, or a process that took over a stale pid, is never reported or stopped as
this one. The binary is ``LEDGER_ANVIL`` when set, else ``anvil``
on PATH (Foundry's ``foundryup`` installs it), else the one npm installed from
``@foundry-rs/anvil-linux-amd64`` (``npm ci`` in a checkout); see :func:`find_anvil`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ledger.chain.rpc import JsonRpc, as_int
from ledger.errors import ChainError, ConfigError

STATE_INTERVAL_S = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a throw-away chain)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_anvil() -> Path:
    """The anvil binary to run: ``LEDGER_ANVIL``, else ``anvil`` on PATH, else the
    first ``node_modules/.bin/anvil`` in the working folder, its parents or this
    checkout (where ``npm ci`` installs the pinned one)."""
    explicit = os.environ.get("LEDGER_ANVIL")
    if explicit:
        found = shutil.which(explicit)
        if found is None:
            raise ConfigError(
                f"LEDGER_ANVIL is {explicit!r}, which is not an executable file",
                hint="point it at an anvil binary, or unset it to look on PATH",
            )
        return Path(found)
    on_path = shutil.which("anvil")
    if on_path:
        return Path(on_path)
    checkout = _checkout()
    roots = (Path.cwd(), *Path.cwd().parents, *([checkout] if checkout else []))
    for root in roots:
        candidate = root / "node_modules" / ".bin" / "anvil"
        if candidate.exists():
            return candidate
    ways = [f"run `npm ci` in the ledger checkout {checkout}"] if checkout else []
    ways += [
        "set LEDGER_ANVIL to an anvil binary",
        "install Foundry's anvil on PATH (`foundryup`, see https://getfoundry.sh)",
        "`npm install @foundry-rs/anvil-linux-amd64` (or the package for your platform)"
        " in this folder",
    ]
    raise ConfigError(
        "no anvil binary found: LEDGER_ANVIL is unset, none is on PATH,"
        " none in node_modules/.bin here or above",
        hint="; or ".join(ways),
    )


def _checkout() -> Path | None:
    """The ledger source checkout this module runs from, if it is one (not an install)."""
    root = Path(__file__).resolve().parents[2]
    try:
        package = (root / "package.json").read_text()
    except OSError:
        return None
    return root if "@foundry-rs/anvil" in package else None


def rpc_call(
    url: str, method: str, params: list[object] | None = None, timeout: float = 2.0
) -> object:
    """One JSON-RPC call on a connection of its own (health checks, ``evm_*`` controls).

    Raises :class:`~ledger.errors.ChainUnavailableError` when nothing answers and
    :class:`~ledger.errors.RpcError` when the node refuses the call.
    """
    with JsonRpc(url, timeout) as rpc:
        return rpc(method, *(params or []))


@dataclass(frozen=True)
class ChainStatus:
    running: bool
    pid: int | None
    rpc_url: str
    chain_id: int | None = None
    block_number: int | None = None


class AnvilProcess:
    """A local Anvil whose pid, log and state live in ``chain_dir``."""

    def __init__(self, chain_dir: Path, host: str = "127.0.0.1", port: int = 8545) -> None:
        self.chain_dir = chain_dir
        self.host = host
        self.port = port

    @property
    def rpc_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.chain_dir / "anvil.pid"

    @property
    def state_file(self) -> Path:
        return self.chain_dir / "state.json"

    @property
    def log_file(self) -> Path:
        return self.chain_dir / "anvil.log"

    def recorded(self) -> tuple[int, str | None] | None:
        """The pid file's (pid, URL) if its process is alive and is an anvil (the URL
        is None in a pid file of an older ledger); whatever port it serves."""
        try:
            fields = self.pid_file.read_text().split()
            pid = int(fields[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        args = _command_line(pid)
        if args is not None and not (args and "anvil" in Path(args[0]).name):
            return None  # the pid was reused by another program
        url = fields[1] if len(fields) > 1 else _url_of(args)
        return pid, url

    def pid(self) -> int | None:
        """The pid of this data directory's anvil on this host and port, if it runs."""
        found = self.recorded()
        if found is None:
            return None
        pid, url = found
        if url is not None and url != self.rpc_url:
            return None  # this data directory's chain, on another port
        args = _command_line(pid)
        if args is not None and _url_of(args) not in (None, self.rpc_url):
            return None
        return pid

    def answers(self) -> bool:
        try:
            rpc_call(self.rpc_url, "eth_chainId", timeout=0.5)
        except ChainError:
            return False
        return True

    def start(self, *, timeout: float = 20.0, persist: bool = True) -> int:
        """Start Anvil in the background (no-op if ours already runs); returns its pid."""
        existing = self.pid()
        if existing is not None and self.answers():
            return existing
        other = self.recorded()
        if other is not None and other[1] not in (None, self.rpc_url):
            raise ChainError(
                f"this data directory's chain already runs at {other[1]} (pid {other[0]}); "
                "one data directory runs one chain",
                hint=f"stop it with `ledger chain down`, or use another --data-dir for "
                f"a chain at {self.rpc_url}",
            )
        if self.answers():
            raise ChainError(
                f"something else already answers at {self.rpc_url}",
                hint="stop it, or use another port (--port)",
            )
        self.chain_dir.mkdir(parents=True, exist_ok=True)
        args = [str(find_anvil()), "--host", self.host, "--port", str(self.port)]
        if persist:
            args += ["--state", str(self.state_file), "--state-interval", str(STATE_INTERVAL_S)]
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{proc.pid} {self.rpc_url}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ChainError(
                    f"anvil exited with code {proc.returncode} at start",
                    hint=f"see its log at {self.log_file}",
                )
            if self.answers():
                return proc.pid
            time.sleep(0.1)
        proc.terminate()
        raise ChainError(f"anvil did not answer at {self.rpc_url} within {timeout:.0f} s")

    def stop(self, *, timeout: float = 15.0) -> bool:
        """SIGTERM (Anvil then dumps its state); returns False if it was not running."""
        pid = self.pid()
        if pid is None:
            if self.recorded() is None:  # stale; a live chain on another port keeps its file
                self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            _reap(pid)
            time.sleep(0.1)
        else:
            raise ChainError(f"anvil (pid {pid}) did not stop within {timeout:.0f} s")
        self.pid_file.unlink(missing_ok=True)
        return True

    def status(self) -> ChainStatus:
        pid = self.pid()
        try:
            chain_id = rpc_call(self.rpc_url, "eth_chainId", timeout=0.5)
            block = rpc_call(self.rpc_url, "eth_blockNumber", timeout=0.5)
        except ChainError:
            return ChainStatus(running=False, pid=pid, rpc_url=self.rpc_url)
        return ChainStatus(
            running=True,
            pid=pid,
            rpc_url=self.rpc_url,
            chain_id=as_int(chain_id),
            block_number=as_int(block),
        )


def _command_line(pid: int) -> list[str] | None:
    """A process's arguments (Linux ``/proc``), or None where they cannot be read."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _url_of(args: list[str] | None) -> str | None:
    """The URL an anvil started with ``--host H --port P`` (as :class:`AnvilProcess`
    starts it) serves, or None when its arguments do not say."""
    if not args:
        return None
    options = dict(itertools.pairwise(args))
    if "--port" not in options:
        return None
    return f"http://{options.get('--host', '127.0.0.1')}:{options['--port']}"


def _reap(pid: int) -> None:
    """Collect a child we started in this process, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
