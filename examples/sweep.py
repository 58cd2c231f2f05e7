"""A hyperparameter sweep of the price-forecast model: every trial is a ledger run.

Trials are grouped under one sweep id: each trial's manifest carries
``"sweep": {"id": ..., "trial": n}`` and its hyperparameters in ``config``
(the whole :class:`~examples.price_forecast.Config`). Two strategies,
as in the seed documents: a ``grid`` over every combination of the values
below, or ``random`` draws of ``--trials`` configurations (seeded, so a sweep
can be repeated). Afterwards::

    ledger runs --sweep SWEEP_ID --sort val_loss

lists the trials, best first.

Run: ``python -m examples.sweep --strategy grid --out sweep-out``
"""

from __future__ import annotations

import argparse
import itertools
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from examples.price_forecast import Config, train
from ledger.config import Settings
from ledger.training.hook import LedgerRun

SPACE: dict[str, Sequence[Any]] = {
    "lr": (3e-4, 1e-3, 3e-3),
    "hidden": ((64, 32), (128, 64)),
    "batch_size": (64, 128),
}


def grid(space: Mapping[str, Sequence[Any]]) -> Iterator[dict[str, Any]]:
    """Every combination, in a fixed order."""
    keys = sorted(space)
    for values in itertools.product(*(space[k] for k in keys)):
        yield dict(zip(keys, values, strict=True))


def random_draws(
    space: Mapping[str, Sequence[Any]], trials: int, seed: int
) -> Iterator[dict[str, Any]]:
    """``trials`` independent draws, one value per hyperparameter each."""
    rng = random.Random(seed)
    keys = sorted(space)
    for _ in range(trials):
        yield {k: rng.choice(list(space[k])) for k in keys}


def sweep(
    base: Config,
    choices: Iterator[dict[str, Any]],
    out: Path,
    *,
    sweep_id: str | None = None,
    settings: Settings | None = None,
) -> tuple[str, list[LedgerRun]]:
    """Train one recorded run per choice of hyperparameters; returns the sweep id and runs."""
    sweep_id = sweep_id or f"price-forecast-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for trial, params in enumerate(choices):
        cfg = replace(base, **params)
        print(f"trial {trial}: {params}")
        runs.append(
            train(cfg, out / f"trial-{trial:03d}.pt", settings, sweep=sweep_id, trial=trial)
        )
    return sweep_id, runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", choices=("grid", "random"), default="grid")
    parser.add_argument("--trials", type=int, default=4, help="random draws")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random draws")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--sweep-id", default=None)
    parser.add_argument("--out", type=Path, default=Path("sweep-out"))
    args = parser.parse_args(argv)
    choices = (
        grid(SPACE) if args.strategy == "grid" else random_draws(SPACE, args.trials, args.seed)
    )
    sweep_id, runs = sweep(
        Config(max_epochs=args.epochs), choices, args.out, sweep_id=args.sweep_id
    )
    print(f"\n{len(runs)} trials in sweep {sweep_id}")
    print(f"next: ledger runs --sweep {sweep_id} --sort val_loss")


if __name__ == "__main__":
    main()
