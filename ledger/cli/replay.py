"""``ledger replay``: re-run segments of a recorded run and compare (:mod:`ledger.replay`)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from ledger.cli.options import DATA_DIR, JSON, RUN_ID, load_settings, print_json

app = typer.Typer()


@app.command()
def replay(
    run: Annotated[str, RUN_ID.typer()],
    command: Annotated[
        list[str] | None,
        typer.Argument(help="The training command, after --: e.g. -- python train.py"),
    ] = None,
    segments: Annotated[
        int, typer.Option("--segments", "-k", min=1, help="How many intervals to replay.")
    ] = 2,
    pick: Annotated[
        str,
        typer.Option(
            "--pick", help="random (with --seed) or largest (the largest weight updates)."
        ),
    ] = "random",
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="The verifier's seed for --pick random [default: fresh]."),
    ] = None,
    allow_code_drift: Annotated[
        bool,
        typer.Option(
            "--allow-code-drift",
            help="Replay even when the working tree's code is not the run's (said in the verdict).",
        ),
    ] = False,
    linf: Annotated[
        float, typer.Option("--linf", min=0.0, help="L-inf threshold, per tensor and overall.")
    ] = 1e-5,
    l2: Annotated[
        float,
        typer.Option(
            "--l2", min=0.0, help="Relative L2 threshold (‖replayed-committed‖/‖committed‖)."
        ),
    ] = 1e-5,
    cosine: Annotated[
        float, typer.Option("--cosine", min=0.0, help="Cosine distance threshold (1 - cos).")
    ] = 1e-6,
    record: Annotated[
        bool,
        typer.Option(
            "--record",
            help="Store the report and attest the verdict of each interval on chain, "
            "signed by your key.",
        ),
    ] = False,
    data_dir: Annotated[Path | None, DATA_DIR.typer()] = None,
    as_json: Annotated[bool, JSON.typer()] = False,
) -> None:
    """Replay K checkpoint intervals of RUN with COMMAND and compare with the committed
    checkpoints: exit 0 reproduced, 8 diverged, 9 no verdict (not replayable, code drift,
    the command failed), 130 interrupted (Ctrl-C: nothing recorded). --record attests
    each interval's verdict on chain with your key (after the verdict, never before)."""
    from ledger.chain.reader import RegistryReader
    from ledger.errors import InputError
    from ledger.replay import Thresholds, replay_run
    from ledger.store import open_store

    settings = load_settings(data_dir)
    sender = None
    if record:
        if allow_code_drift:
            raise InputError(
                "--record with --allow-code-drift: a replay of other code than the run's "
                "is not attested on chain",
                hint="check out the run's code, or replay without --record",
            )
        from ledger.chain.admin import RegistryAdmin
        from ledger.replay import check_attester

        sender = RegistryAdmin.connect(settings)  # a key and a registry that can take it,
        check_attester(sender)  # before minutes of replaying
    # SIGTERM stops a replay as Ctrl-C does: the command stopped, no verdict, nothing recorded
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    store = open_store(settings)
    report = replay_run(
        RegistryReader.connect(settings),
        store,
        run,
        command or [],
        segments=segments,
        pick=pick,
        seed=seed,
        allow_code_drift=allow_code_drift,
        thresholds=Thresholds(linf=linf, l2=l2, cosine=cosine),
        say=lambda line: typer.echo(line, err=True),
    )
    attested = []
    if sender is not None:
        from ledger.replay import record_report

        # An interruption does not cut the recording short: Ctrl-C and SIGTERM wait until
        # the attestations are mined (each bounded by the receipt timeout) and the
        # verdict is printed; the process then ends.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        typer.echo("recording the verdict on chain (an interruption waits for it)", err=True)
        attested = record_report(sender, store, report, command or [])
    if as_json:
        print_json({**report.to_json(), "attestations": [a.to_json() for a in attested]})
    else:
        for line in report.lines():
            typer.echo(line)
        for attestation in attested:
            typer.echo(f"  attested: {attestation.line()}")
    # The verdict is out and nothing is left to write (the temporary folder is gone,
    # the attestations are mined): end without the interpreter's teardown, which with
    # torch loaded costs a measurable share of a short replay (bench/replay.py).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(report.outcome.exit_code)
