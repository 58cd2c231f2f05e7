"""Sweeps: trials grouped by the manifest's sweep key, listed by metric with ``ledger runs``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from examples.price_forecast import Config
from examples.sweep import grid, random_draws, sweep
from ledger.errors import InputError
from ledger.record.manifest import build_manifest
from tests.cli.test_cli import chain_env, ledger
from tests.conftest import Chain
from tests.training.test_flow import train as train_tiny

SMALL = Config(minutes=700, window=16, hidden=(16, 8), max_epochs=1, batch_size=64)


def test_the_manifest_sweep_key_has_the_agreed_shape() -> None:
    manifest = build_manifest(name="t", config={"lr": 0.1}, sweep="s-1", trial=3)
    assert manifest["sweep"] == {"id": "s-1", "trial": 3}
    assert build_manifest(name="t", config={}, sweep="s-1")["sweep"] == {"id": "s-1", "trial": None}
    assert "sweep" not in build_manifest(name="t", config={})
    with pytest.raises(InputError, match="needs a sweep id"):
        build_manifest(name="t", config={}, trial=1)


def test_grid_and_random_strategies() -> None:
    space = {"lr": (0.1, 0.01), "width": (4, 8, 16)}
    assert len(list(grid(space))) == 6
    assert list(random_draws(space, 5, seed=1)) == list(random_draws(space, 5, seed=1))
    assert all(d["width"] in (4, 8, 16) for d in random_draws(space, 5, seed=2))


def test_runs_lists_a_sweep_sorted_by_metric(chain: Chain, tmp_path: Path) -> None:
    settings = chain.settings(tmp_path / "ledger")
    space = {"lr": (1e-4, 3e-3), "hidden": ((16, 8),)}
    sweep_id, runs = sweep(SMALL, grid(space), tmp_path / "out", sweep_id="s1", settings=settings)
    other = train_tiny(chain, tmp_path / "other")  # a run outside the sweep, same chain
    env = chain_env(chain, tmp_path / "ledger")

    out = ledger("runs", "--sweep", sweep_id, "--sort", "val_loss", "--json", env=env)
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    assert {r["run_id"] for r in listed} == {r.run_id for r in runs}
    assert other.run_id not in {r["run_id"] for r in listed}
    losses = [r["metrics"]["val_loss"] for r in listed]
    assert losses == sorted(losses)
    assert sorted(r["sweep"]["trial"] for r in listed) == [0, 1]
    by_trial = {r["sweep"]["trial"]: r for r in listed}
    assert by_trial[0]["config"]["lr"] == 1e-4 and by_trial[1]["config"]["lr"] == 3e-3

    descending = json.loads(
        ledger(
            "runs", "--sweep", sweep_id, "--sort", "val_loss", "--desc", "--json", env=env
        ).stdout
    )
    assert [r["run_id"] for r in descending] == [r["run_id"] for r in reversed(listed)]
    every = json.loads(ledger("runs", "--json", env=env).stdout)
    assert len(every) == 3

    text = ledger("runs", "--sweep", sweep_id, "--sort", "val_loss", env=env)
    assert text.returncode == 0
    lines = text.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(listed[0]["run_id"])
    assert "sweep s1 trial" in lines[0] and "val_loss=" in lines[0]
