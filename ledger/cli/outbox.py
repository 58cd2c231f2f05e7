"""``ledger sync`` and ``ledger status``: the outbox of records waiting for the chain."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ledger.cli.options import DATA_DIR, JSON, load_settings, print_json
from ledger.errors import LedgerError, RecordError

if TYPE_CHECKING:
    from ledger.record.outbox import Outbox

app = typer.Typer()


@app.command()
def sync(
    data_dir: Annotated[Path | None, DATA_DIR.typer()] = None,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 300.0,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Try failed records again.")
    ] = False,
    as_json: Annotated[bool, JSON.typer()] = False,
) -> None:
    """Send whatever the outbox still holds; recommit records the chain lost."""
    from ledger.record.outbox import Outbox

    outbox = Outbox(load_settings(data_dir))
    result = outbox.sync(timeout, retry_failed=retry_failed)
    counts = outbox.journal.counts()
    still_open = counts["pending"] + counts["stored"] + counts["sent"]
    # records of runs another key started: only a worker with that key may send them
    other_keys = _open_for_other_keys(outbox) if still_open else {}
    if as_json:
        print_json(
            {
                "stored": result.stored,
                "confirmed": result.confirmed,
                "recommitted": result.recommitted,
                "failed": result.failed,
                "open": still_open,
                "waiting_on": result.waiting_on,
                "waiting_for_keys": other_keys,
                "journal": counts,
            }
        )
    else:
        typer.echo(
            f"confirmed {result.confirmed}, recommitted {result.recommitted} "
            f"(lost by the chain), failed {result.failed}, still open {still_open}"
        )
    if other_keys:
        theirs = ", ".join(f"{n} for {key}" for key, n in sorted(other_keys.items()))
        raise RecordError(
            f"{still_open} record(s) are still open, {sum(other_keys.values())} of them of runs "
            f"another key started, which wait for a worker with that key ({theirs})",
            hint="run `ledger sync` with that key (LEDGER_PRIVATE_KEY, or LEDGER_KEYSTORE "
            "and LEDGER_KEYSTORE_PASSWORD)",
        )
    if still_open:
        raise RecordError(
            f"{still_open} record(s) are still open"
            + (f": {result.waiting_on}" if result.waiting_on else ""),
            hint="run `ledger status` to see them; `ledger sync` again once the cause is fixed",
        )
    if result.failed:
        raise RecordError(f"{result.failed} record(s) failed", hint="`ledger status` shows why")


def _open_for_other_keys(outbox: Outbox) -> dict[str, int]:
    """Open records per committer, of runs a key other than this data directory's
    started (only a worker with that key may send them)."""
    by_key = outbox.journal.open_by_committer()
    if not set(by_key) - {""}:
        return {}
    try:
        mine = outbox.committer().lower()
    except LedgerError:  # no key, or the chain id unknown offline: nothing to compare
        return {}
    return {key: n for key, n in by_key.items() if key and key != mine}


@app.command()
def status(
    data_dir: Annotated[Path | None, DATA_DIR.typer()] = None,
    as_json: Annotated[bool, JSON.typer()] = False,
) -> None:
    """Show the outbox: records pending, sent, confirmed and failed, per run."""
    from ledger.record.outbox import Journal, journal_path

    path = journal_path(load_settings(data_dir))
    if not path.exists():
        if as_json:
            print_json({"journal": None, "runs": [], "problems": []})
        else:
            typer.echo("the outbox is empty (nothing was recorded from this data directory)")
        return
    journal = Journal(path)
    entries = journal.entries()
    runs: dict[str, dict[str, int]] = {}
    for entry in entries:
        runs.setdefault(entry.run_id, {}).setdefault(entry.state, 0)
        runs[entry.run_id][entry.state] += 1
    problems = [e for e in entries if e.state == "failed" or (e.state != "confirmed" and e.error)]
    from ledger.record.outbox.lock import WorkerLock

    worker = WorkerLock(path).running()  # a training's worker, or a resident one
    if as_json:
        print_json(
            {
                "journal": journal.counts(),
                "worker": {"pid": worker} if worker is not None else None,
                "runs": [{"run_id": r, "states": c} for r, c in runs.items()],
                "problems": [e.as_dict() for e in problems],
                "recommitted": sum(e.recommits for e in entries),
            }
        )
        return
    counts = journal.counts()
    typer.echo("outbox: " + "  ".join(f"{state} {n}" for state, n in counts.items()))
    typer.echo(
        f"worker: pid {worker} (its messages, when no run is attached: "
        f"{path.parent / 'outbox.log'})"
        if worker is not None
        else "worker: none running (the next run, or `ledger sync`, starts one)"
    )
    for run_id, states in runs.items():
        shown = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        typer.echo(f"  run {run_id}: {shown}")
    for entry in problems:
        what = f"{entry.kind}" + (f" step {entry.step}" if entry.step is not None else "")
        typer.echo(
            f"  {entry.state} #{entry.id} {what} of {entry.run_id[:10]}…"
            f" ({entry.attempts} attempts): {entry.error}"
        )
