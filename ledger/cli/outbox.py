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
    abandoned: Annotated[
        bool,
        typer.Option(
            "--abandoned",
            help="Record runs whose training process is gone (killed) as failed.",
        ),
    ] = False,
    as_json: Annotated[bool, JSON.typer()] = False,
) -> None:
    """Send whatever the outbox still holds; recommit records the chain lost."""
    from ledger.record.outbox import Outbox

    outbox = Outbox(load_settings(data_dir))
    rebuilt = 0
    if outbox.journal.meta("damaged"):  # a fresh journal after a damaged one: see journal.py
        rebuilt = outbox.rebuild_from_chain()
        outbox.worker.say(
            f"rebuilt {rebuilt} record(s) this key has on chain into the fresh outbox journal"
        )
    dead = outbox.record_abandoned() if abandoned else {}
    for run_id, pid in dead.items():
        outbox.worker.say(f"run {run_id}: recording it as failed (abandoned: process {pid} gone)")
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
                "failed_in_journal": counts["failed"],
                "abandoned": dead,
                "rebuilt": rebuilt,
                "open": still_open,
                "waiting_on": result.waiting_on,
                "waiting_for_confirmations": result.deepening,
                "waiting_for_keys": other_keys,
                "journal": counts,
            }
        )
    else:
        typer.echo(
            f"confirmed {result.confirmed}, recommitted {result.recommitted} "
            f"(lost by the chain), failed {counts['failed']}"
            + (f" ({result.failed} now)" if result.failed != counts["failed"] else "")
            + f", still open {still_open}"
        )
        for entry in outbox.journal.entries(states=["failed"]):
            what = entry.kind + (f" step {entry.step}" if entry.step is not None else "")
            typer.echo(f"  failed #{entry.id} {what} of run {entry.run_id}: {entry.error}")
    if other_keys:
        theirs = ", ".join(f"{n} for {key}" for key, n in sorted(other_keys.items()))
        raise RecordError(
            f"{still_open} record(s) are still open, {sum(other_keys.values())} of them of runs "
            f"another key started, which wait for a worker with that key ({theirs})",
            hint="run `ledger sync` with that key (LEDGER_PRIVATE_KEY, or LEDGER_KEYSTORE "
            "and LEDGER_KEYSTORE_PASSWORD)",
        )
    if still_open:
        deep = (
            f"{result.deepening} of them mined, waiting for the confirmation depth"
            " (LEDGER_CONFIRMATIONS)"
            if result.deepening
            else None
        )
        raise RecordError(
            f"{still_open} record(s) are still open"
            + (f": {result.waiting_on or deep}" if result.waiting_on or deep else ""),
            hint="run `ledger status` to see them; `ledger sync` again once the cause is fixed",
        )
    if counts["failed"]:
        raise RecordError(
            f"{counts['failed']} record(s) in the outbox failed for good",
            hint="fix the cause shown above, then `ledger sync --retry-failed`",
        )


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
    from ledger.record.outbox import abandoned_runs

    journal = Journal(path)
    entries = journal.entries()
    dead = abandoned_runs(journal, entries)
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
                "runs": [
                    {
                        "run_id": r,
                        "states": c,
                        "abandoned": {"pid": dead[r]} if r in dead else None,
                    }
                    for r, c in runs.items()
                ],
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
        gone = (
            f"; abandoned: process {dead[run_id]} gone before the run ended "
            "(`ledger sync --abandoned` records it as failed)"
            if run_id in dead
            else ""
        )
        typer.echo(f"  run {run_id}: {shown}{gone}")
    for entry in problems:
        what = f"{entry.kind}" + (f" step {entry.step}" if entry.step is not None else "")
        typer.echo(
            f"  {entry.state} #{entry.id} {what} of {entry.run_id[:10]}…"
            f" ({entry.attempts} attempts): {entry.error}"
        )
