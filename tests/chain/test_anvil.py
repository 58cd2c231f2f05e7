"""Finding the anvil binary, and what ``ledger chain up`` says when there is none.

The message for an installed package (no checkout, no node_modules) is checked in
tests/test_packaging.py, where ledger runs from a wheel in its own virtualenv.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.chain.anvil import find_anvil
from ledger.errors import ConfigError
from tests.cli.test_cli import ledger
from tests.conftest import free_port


def test_ledger_anvil_pointing_nowhere_is_a_config_error_exit_10(tmp_path: Path) -> None:
    port = str(free_port())
    env = {
        "LEDGER_HOME": str(tmp_path / "home"),
        "LEDGER_ANVIL": str(tmp_path / "no-such-anvil"),
    }
    out = ledger("chain", "up", "--port", port, env=env)
    assert out.returncode == 10, out.stderr
    first = out.stderr.splitlines()[0]
    assert first.startswith("error: LEDGER_ANVIL is ") and "no-such-anvil" in first
    assert "not an executable file" in first and "Traceback" not in out.stderr
    assert ledger("chain", "status", "--port", port, env=env).returncode == 1  # nothing started


def test_ledger_anvil_must_be_executable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = tmp_path / "anvil"
    plain.write_text("#!/bin/sh\n")
    monkeypatch.setenv("LEDGER_ANVIL", str(plain))
    with pytest.raises(ConfigError, match="not an executable file") as caught:
        find_anvil()
    assert caught.value.exit_code == 10
    plain.chmod(plain.stat().st_mode | stat.S_IXUSR)
    assert find_anvil() == plain


def test_node_modules_of_the_working_folder_come_before_the_checkouts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`npm install @foundry-rs/anvil-linux-amd64` in a project folder is found from below it."""
    local = tmp_path / "node_modules" / ".bin" / "anvil"
    local.parent.mkdir(parents=True)
    local.write_text("#!/bin/sh\n")
    local.chmod(0o755)
    below = tmp_path / "runs" / "today"
    below.mkdir(parents=True)
    monkeypatch.delenv("LEDGER_ANVIL", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.chdir(below)
    assert find_anvil() == local


def test_a_checkout_without_node_modules_is_told_to_run_npm_ci(tmp_path: Path) -> None:
    """A fresh clone (this checkout's package.json and sources, no node_modules), run
    from another folder with no anvil on PATH: exit 10, one line, and the ways out."""
    root = Path(__file__).resolve().parents[2]
    clone = tmp_path / "clone"
    shutil.copytree(root / "ledger", clone / "ledger", symlinks=True, ignore=_no_bytecode)
    shutil.copy(root / "package.json", clone)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = subprocess.run(
        [sys.executable, "-m", "ledger", "chain", "up", "--port", str(free_port())],
        cwd=elsewhere,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")},
            "PYTHONPATH": str(clone),
            "PATH": str(Path(sys.executable).parent),
            "LEDGER_HOME": str(tmp_path / "home"),
        },
        text=True,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 10, out.stderr
    message, hint = out.stderr.splitlines()
    assert message.startswith("error: no anvil binary found")
    assert f"run `npm ci` in the ledger checkout {clone}" in hint
    assert "LEDGER_ANVIL" in hint and "foundryup" in hint
    assert "@foundry-rs/anvil-linux-amd64" in hint


def _no_bytecode(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "__pycache__"]


def test_anvil_on_path_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.which("anvil") or find_anvil()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "anvil").symlink_to(real)
    monkeypatch.delenv("LEDGER_ANVIL", raising=False)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert find_anvil() == bin_dir / "anvil"


def test_a_chain_on_another_port_is_never_taken_for_this_one(tmp_path: Path) -> None:
    """One data directory, one chain: asked about another port, the pid file's chain is
    neither reported nor stopped, and a second chain there is refused in one line."""
    from ledger.chain.anvil import AnvilProcess
    from ledger.errors import ChainError

    first = AnvilProcess(tmp_path / "chain", port=free_port())
    other = AnvilProcess(tmp_path / "chain", port=free_port())
    pid = first.start(persist=False)
    try:
        assert first.pid() == pid and other.pid() is None
        assert other.status().pid is None and not other.status().running
        assert other.stop() is False and first.answers()  # not stopped through the wrong port
        with pytest.raises(ChainError, match=f"already runs at {first.rpc_url}"):
            other.start(persist=False)
        assert not other.answers()
    finally:
        assert first.stop() is True


def test_chain_up_records_its_url_for_the_next_commands(tmp_path: Path) -> None:
    port = str(free_port())
    home = tmp_path / "home"
    env = {"LEDGER_HOME": str(home)}  # no LEDGER_RPC_URL: the config file decides
    try:
        up = ledger("chain", "up", "--port", port, env=env)
        assert up.returncode == 0, up.stderr
        config = json.loads((home / "config.json").read_text())
        assert config["rpc_url"] == f"http://127.0.0.1:{port}"
        status = ledger("chain", "status", "--json", env=env)  # no --port
        assert status.returncode == 0 and json.loads(status.stdout)["pid"] is not None
        deployed = ledger("deploy", env=env)  # talks to the chain it started
        assert deployed.returncode == 0, deployed.stderr
    finally:
        down = ledger("chain", "down", env=env)
    assert down.stdout.strip() == "anvil stopped", down.stdout + down.stderr
