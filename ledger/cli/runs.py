"""``ledger runs`` and ``ledger lineage``: the registry's runs, read from its events
and the store (:mod:`ledger.catalog`). Registered on the main app by :mod:`ledger.cli.app`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="LEDGER_HOME", help="Data directory [default: .ledger]"),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


def _catalog(data_dir: Path | None) -> Any:
    from ledger.catalog import RunCatalog
    from ledger.chain.reader import RegistryReader
    from ledger.config import load_settings
    from ledger.store import open_store

    settings = load_settings(data_dir)
    return RunCatalog.load(RegistryReader.connect(settings), open_store(settings))


def _echo_json(document: Any) -> None:
    typer.echo(json.dumps(document, indent=2, sort_keys=True))


def runs(
    sweep: Annotated[str | None, typer.Option(help="Only the trials of this sweep id.")] = None,
    sort: Annotated[
        str | None, typer.Option(help="Order by this metric (e.g. val_loss), lowest first.")
    ] = None,
    descending: Annotated[bool, typer.Option("--desc", help="Highest first.")] = False,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """List recorded runs (of a sweep), oldest first or by a metric."""
    chosen = _catalog(data_dir).select(sweep=sweep, sort=sort, descending=descending)
    if as_json:
        _echo_json([r.to_json() for r in chosen])
        return
    if not chosen:
        typer.echo("no runs" + (f" in sweep {sweep!r}" if sweep else ""))
        return
    for info in chosen:
        trial = info.sweep.get("trial") if info.sweep else None
        cells = [
            info.hex,
            info.name or "(no manifest in store)",
            info.status.name.lower() + (" REVOKED" if info.revoked else ""),
        ]
        if info.sweep:
            cells.append(f"sweep {info.sweep.get('id')} trial {trial}")
        if sort is not None:
            value = info.metric(sort)
            cells.append(f"{sort}={value:.6g}" if value is not None else f"{sort}=-")
        typer.echo("  ".join(cells))


def lineage(
    run: Annotated[str, typer.Argument(help="Run id.")],
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Print a run's ancestors and descendants with relations, status and revocations."""
    from ledger.catalog import lineage_lines
    from ledger.ids import RunId

    tree = _catalog(data_dir).lineage(RunId.parse(run, field="run id"))
    if as_json:
        _echo_json(tree)
        return
    for line in lineage_lines(tree):
        typer.echo(line)
