"""The ``ledger`` command line.

Heavy modules (web3, torch, rich) are imported inside the commands that need
them, so ``ledger --help`` and ``ledger cid`` start fast; help is plain text
(typer's rich help would import rich and markdown-it on every start).
``ledger verify`` reads the chain through the web3-free
:class:`~ledger.chain.reader.RegistryReader` and reads tensors only when the
file's CID is not on record (importing torch only for files the torch-free
reader leaves to it). Errors from the
:mod:`ledger.errors` tree become one red line and the error's exit code; no
traceback unless ``LEDGER_DEBUG=1``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ledger.cli.audit import register as register_audit_commands
from ledger.cli.store import store_app
from ledger.cli.verify import progress_bar
from ledger.errors import InputError, LedgerError, RecordError
from ledger.ids import RunId, to_hex

if TYPE_CHECKING:
    from ledger.record.outbox import Outbox

app = typer.Typer(
    name="ledger",
    help="Tamper-evident provenance for machine-learning training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
chain_app = typer.Typer(
    help="Run a local Anvil dev chain.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(chain_app, name="chain")
app.add_typer(store_app, name="store")

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="LEDGER_HOME", help="Data directory [default: .ledger]"),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


def _settings(data_dir: Path | None, **overrides: Any) -> Any:
    from ledger.config import load_settings

    return load_settings(data_dir, **overrides)


def _echo_json(document: Any) -> None:
    typer.echo(json.dumps(document, indent=2, sort_keys=True))


# -- chain ----------------------------------------------------------------------


def _anvil(data_dir: Path | None, port: int) -> Any:
    from ledger.chain.anvil import AnvilProcess

    return AnvilProcess(_settings(data_dir).chain_dir, port=port)


Port = Annotated[int, typer.Option("--port", help="Port on 127.0.0.1.")]


@chain_app.command("up")
def chain_up(data_dir: DataDir = None, port: Port = 8545) -> None:
    """Start a local Anvil with persistent state in the data directory."""
    anvil = _anvil(data_dir, port)
    pid = anvil.start()
    typer.echo(f"anvil running at {anvil.rpc_url} (pid {pid}, state in {anvil.state_file})")


@chain_app.command("down")
def chain_down(data_dir: DataDir = None, port: Port = 8545) -> None:
    """Stop the local Anvil cleanly (its state is saved)."""
    anvil = _anvil(data_dir, port)
    typer.echo("anvil stopped" if anvil.stop() else "anvil was not running")


@chain_app.command("status")
def chain_status(data_dir: DataDir = None, port: Port = 8545, as_json: JsonFlag = False) -> None:
    """Show whether the local chain answers, its chain id and block height."""
    status = _anvil(data_dir, port).status()
    if as_json:
        _echo_json(status.__dict__)
    elif status.running:
        typer.echo(
            f"running at {status.rpc_url}: chain id {status.chain_id}, "
            f"block {status.block_number}, pid {status.pid}"
        )
    else:
        typer.echo(f"not running at {status.rpc_url}")
    if not status.running:
        raise typer.Exit(1)


# -- deploy ---------------------------------------------------------------------


@app.command()
def deploy(
    data_dir: DataDir = None,
    rpc_url: Annotated[str | None, typer.Option(envvar="LEDGER_RPC_URL")] = None,
) -> None:
    """Deploy the registry and record its address in the data directory's config."""
    from ledger.chain.registry import Registry, connect_web3, load_account
    from ledger.config import save_deployment

    settings = _settings(data_dir, rpc_url=rpc_url)
    w3 = connect_web3(settings.rpc_url)
    chain_id = w3.eth.chain_id
    account = load_account(settings, chain_id)
    registry, tx = Registry.deploy(w3, account)
    path = save_deployment(
        settings, address=registry.address, chain_id=chain_id, block=tx.block_number
    )
    typer.echo(
        f"registry {registry.address} on chain {chain_id} (block {tx.block_number}, "
        f"gas {tx.gas_used}); admin and committer {account.address}; saved to {path}"
    )


# -- hashing --------------------------------------------------------------------


@app.command()
def cid(
    path: Annotated[Path, typer.Argument(help="File to hash.")],
    cid_version: Annotated[int, typer.Option("--cid-version", min=0, max=1)] = 1,
) -> None:
    """Print the file's CID as `ipfs add -Q --only-hash` would (CIDv1 raw leaves by default)."""
    from ledger.hashing.cid import file_cid

    with progress_bar(path, json_output=False) as progress:
        result = file_cid(path, cid_version=cid_version, progress=progress)
    typer.echo(str(result))


@app.command()
def tensors(
    path: Annotated[
        Path,
        typer.Argument(help="Weights file (.pt, .pth, .ckpt, .bin, .safetensors) or HF folder."),
    ],
    as_json: JsonFlag = False,
) -> None:
    """Print the tensor root of weights (file or model folder); --json: every tensor's digest."""
    from ledger.hashing.tensors import tensor_digest

    digest = tensor_digest(path)
    if as_json:
        _echo_json(digest.index())
    else:
        typer.echo(f"{digest.scheme}:{digest.root.hex()}  ({len(digest.leaves)} tensors)")


# -- verify ---------------------------------------------------------------------


@app.command()
def verify(
    path: Annotated[Path, typer.Argument(help="Model file, or Hugging Face model folder.")],
    run: Annotated[str | None, typer.Option(help="Run id the file should belong to.")] = None,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Re-check a model file: exit 0 verified, 3 mismatch, 4 unknown, 5 revoked."""
    from ledger.cli.verify import verify_command

    raise typer.Exit(verify_command(path, run=run, data_dir=data_dir, as_json=as_json))


# -- runs -----------------------------------------------------------------------


@app.command()
def show(run: Annotated[str, typer.Argument(help="Run id.")], data_dir: DataDir = None) -> None:
    """Print a run's on-chain record (storage and events) as JSON."""
    from ledger.chain.registry import Registry

    registry = Registry.connect(_settings(data_dir), signer=False)
    run_id = RunId.parse(run, field="run id")
    record = registry.get_run(run_id)
    started = registry.events("RunStarted", run_id)
    final = registry.final_record(run_id)
    _echo_json(
        {
            "run_id": to_hex(record.run_id),
            "committer": record.committer,
            "started_at": record.started_at,
            "status": record.status.name.lower(),
            "revoked": record.revoked,
            "manifest_digest": bytes(started[0]["manifestDigest"]).hex() if started else None,
            "parents": [
                {"run_id": to_hex(p["runId"]), "relation": int(p["relation"])}
                for p in (started[0]["parents"] if started else [])
            ],
            "checkpoints": len(registry.checkpoints(run_id)),
            "final": None
            if final is None or final.final is None
            else {
                "weights_digest": final.weights_digest.hex(),
                "tensor_root": final.tensor_root.hex(),
                "metrics_digest": final.metrics_digest.hex(),
                "checkpoint_root": final.final.checkpoint_root.hex(),
                "commitment": record.final_commitment.hex(),
            },
        }
    )


@app.command()
def proof(
    run: Annotated[str, typer.Argument(help="Run id.")],
    step: Annotated[int, typer.Argument(help="Checkpoint step.", min=0)],
    data_dir: DataDir = None,
) -> None:
    """Print a Merkle inclusion proof of a checkpoint in its run's checkpoint root."""
    from ledger.chain.registry import Registry, record_leaf
    from ledger.hashing.merkle import MerkleTree

    registry = Registry.connect(_settings(data_dir), signer=False)
    run_id = RunId.parse(run, field="run id")
    final = registry.final_record(run_id)
    if final is None or final.final is None:
        raise InputError(
            f"run {run} is not finalized, so it has no checkpoint root yet",
            hint="proofs exist once the run's final record commits to its checkpoints",
        )
    leaves = [record_leaf(r) for r in registry.checkpoints(run_id)]
    matches = [leaf for leaf in leaves if leaf.step == step]
    if not matches:
        steps = ", ".join(str(leaf.step) for leaf in leaves) or "none"
        raise InputError(f"run {run} has no checkpoint at step {step} (steps: {steps})")
    tree = MerkleTree([leaf.hash for leaf in leaves])
    proofs = []
    for leaf in matches:
        path = tree.proof(leaf.hash)
        proofs.append(
            {
                "step": leaf.step,
                "weights_digest": leaf.weights_digest.hex(),
                "tensor_root": leaf.tensor_root.hex(),
                "metrics_digest": leaf.metrics_digest.hex(),
                "leaf": to_hex(leaf.hash),
                "proof": [to_hex(node) for node in path],
                "verified_by_registry": registry.verify_checkpoint(run_id, final.final, leaf, path),
            }
        )
    _echo_json(
        {
            "run_id": to_hex(run_id),
            "checkpoint_root": to_hex(final.final.checkpoint_root),
            "root_matches": tree.root == final.final.checkpoint_root,
            "checkpoints": proofs,
        }
    )


@app.command()
def revoke(
    run: Annotated[str, typer.Argument(help="Run id.")],
    reason: Annotated[str, typer.Option(help="Why the run is revoked (recorded on chain).")],
    data_dir: DataDir = None,
) -> None:
    """Revoke a run (its committer or an admin may); its descendants become tainted."""
    from ledger.chain.registry import Registry

    tx = Registry.connect(_settings(data_dir)).revoke_run(RunId.parse(run, field="run id"), reason)
    typer.echo(f"revoked in tx {tx.tx_hash} (block {tx.block_number})")


# -- the outbox -----------------------------------------------------------------


@app.command()
def sync(
    data_dir: DataDir = None,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 300.0,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Try failed records again.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Send whatever the outbox still holds; recommit records the chain lost."""
    from ledger.record.outbox import Outbox

    outbox = Outbox(_settings(data_dir))
    result = outbox.sync(timeout, retry_failed=retry_failed)
    counts = outbox.journal.counts()
    still_open = counts["pending"] + counts["stored"] + counts["sent"]
    # records of runs another key started: only a worker with that key may send them
    other_keys = _open_for_other_keys(outbox) if still_open else {}
    if as_json:
        _echo_json(
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
def status(data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
    """Show the outbox: records pending, sent, confirmed and failed, per run."""
    from ledger.record.outbox import Journal, journal_path

    path = journal_path(_settings(data_dir))
    if not path.exists():
        if as_json:
            _echo_json({"journal": None, "runs": [], "problems": []})
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
    from ledger.record.outbox.worker import WorkerLock

    worker = WorkerLock(path).running()  # a training's worker, or a resident one
    if as_json:
        _echo_json(
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

register_audit_commands(app)  # ledger index, ledger serve

from ledger.cli.runs import lineage, runs  # noqa: E402  (own module, registered here)

app.command()(runs)
app.command()(lineage)


def main() -> None:
    """Console entry point: maps the ledger error tree to exit codes."""
    try:
        app()  # standalone: usage errors and typer.Exit end the process themselves
    except LedgerError as exc:
        if os.environ.get("LEDGER_DEBUG"):
            raise
        sys.exit(report_error(exc))


def report_error(exc: LedgerError) -> int:
    """Say what went wrong in one red line on stderr; returns the error's exit code."""
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    return exc.exit_code


if __name__ == "__main__":
    main()
