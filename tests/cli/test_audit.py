"""``ledger index`` and ``ledger serve`` as a user runs them (real processes, real chain)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from typer.testing import CliRunner

from ledger.cli.app import app
from ledger.config import Settings
from ledger.store import LocalStore
from tests.conftest import Chain, free_port
from tests.runs import record_run


def test_ledger_index_one_pass(chain: Chain, settings: Settings, data_store: LocalStore) -> None:
    run = record_run(chain.registry, data_store, "cli-run")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    result = CliRunner().invoke(app, ["index", "--data-dir", str(settings.data_dir)], env=env)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["events"] == 3 and summary["documents"] == 2
    assert (settings.data_dir / "index.sqlite").is_file()
    again = CliRunner().invoke(app, ["index", "--data-dir", str(settings.data_dir)], env=env)
    assert json.loads(again.output.strip().splitlines()[-1])["events"] == 0
    assert run.hex  # indexed above; the API test reads it back


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize("workers", [1, 2])
def test_ledger_serve_indexes_in_the_background(
    chain: Chain, settings: Settings, data_store: LocalStore, workers: int
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ledger",
            "serve",
            "--data-dir",
            str(settings.data_dir),
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            try:
                status, _ = _get(base + "/readyz")
                if status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "ledger serve did not become ready"
            time.sleep(0.2)
        run = record_run(chain.registry, data_store, "served")  # after start: the follower sees it
        while True:
            _, page = _get(base + "/api/v1/runs?status=finalized")
            if any(r["run_id"] == run.hex for r in page["runs"]):
                break
            assert time.monotonic() < deadline, "the background indexer did not pick the run up"
            time.sleep(0.2)
        status, problem = _get(base + "/api/v1/runs?q=colour:red")
        assert status == 422 and problem["title"] == "InputError"
    finally:
        process.terminate()
        process.wait(timeout=30)
