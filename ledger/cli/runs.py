"""``ledger show``, ``proof``, ``revoke``, ``runs`` and ``lineage``: recorded runs.

``show``, ``proof`` and ``revoke`` talk to the registry; ``runs`` reads all its
events and the store (:mod:`ledger.catalog`), ``lineage`` the run's family only
(:func:`ledger.catalog.chain_lineage`). Wherever a run id is
asked for, a unique prefix of at least four hex digits will do (``0x1a2b3c``),
resolved against the registry's ``RunStarted`` events; an unknown run is an
error (exit 11), an ambiguous prefix one that lists the candidates.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ledger.cli.options import DATA_DIR, JSON, RUN_ID, load_settings, print_json
from ledger.ids import RunId, to_hex

if TYPE_CHECKING:
    pass

app = typer.Typer()


def _catalog(data_dir: Path | None, run: str | None = None) -> tuple[Any, RunId | None]:
    """The run catalogue, and ``run`` resolved against the chain (a prefix too)."""
    from ledger.catalog import RunCatalog
    from ledger.chain.reader import RegistryReader
    from ledger.store import open_store

    settings = load_settings(data_dir)
    registry = RegistryReader.connect(settings)
    run_id = registry.resolve_run(run, exists=True) if run is not None else None
    return RunCatalog.load(registry, open_store(settings)), run_id


@app.command()
def show(
    run: Annotated[str, RUN_ID.typer()],
    data_dir: Annotated[Path | None, DATA_DIR.typer()] = None,
    as_json: Annotated[bool, JSON.typer()] = False,
) -> None:
    """Print a run's on-chain record (storage and events), with its replay
    attestations; --json for JSON."""
    from ledger.chain.reader import RegistryReader
    from ledger.replay import attestations

    registry = RegistryReader.connect(load_settings(data_dir))
    run_id = registry.resolve_run(run, exists=True)
    record = registry.get_run(run_id)
    started = registry.events("RunStarted", run_id)
    final = registry.final_record(run_id)
    document = {
        "run_id": to_hex(record.run_id),
        "committer": record.committer,
        "started_at": registry.started_at(record),
        "start_block": record.start_block,
        "status": record.status.name.lower(),
        "revoked": record.revoked,
        "manifest_digest": bytes(started[0]["manifestDigest"]).hex() if started else None,
        "parents": [
            {"run_id": to_hex(bytes(p["runId"])), "relation": int(p["relation"])}
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
        "replays": [a.to_json() for a in attestations(registry, run_id)],
    }
    if as_json:
        print_json(document)
        return
    if record.revoked:
        events = registry.events("RunRevoked", run_id)
        document["revoked_reason"] = str(events[-1]["reason"]) if events else None
    for line in _show_lines(document):
        typer.echo(line)


def _show_lines(doc: dict[str, Any]) -> list[str]:
    """``ledger show``'s record as aligned ``label  value`` lines."""
    import datetime

    from ledger.ids import label

    started = (
        datetime.datetime.fromtimestamp(doc["started_at"], tz=datetime.UTC).strftime(
            "%Y-%m-%d %H:%M:%S UTC"
        )
        if doc["started_at"] is not None
        else "(unknown)"
    )
    if doc.get("start_block") is not None:
        started += f" (block {doc['start_block']})"
    status = doc["status"] + (
        f", REVOKED: {doc.get('revoked_reason') or '(no reason found)'}" if doc["revoked"] else ""
    )
    rows: list[tuple[str, str]] = [
        ("run", doc["run_id"]),
        ("status", status),
        ("committer", doc["committer"]),
        ("started", started),
        ("manifest", "0x" + doc["manifest_digest"] if doc["manifest_digest"] else "(no event)"),
    ]
    rows += [("parent", f"{p['run_id']} ({label(p['relation'])})") for p in doc["parents"]]
    rows.append(("checkpoints", str(doc["checkpoints"])))
    final = doc["final"]
    if final is None:
        rows.append(("final", "not finalized"))
    else:
        rows += [
            ("final weights", "0x" + final["weights_digest"]),
            ("tensor root", "0x" + final["tensor_root"]),
            ("metrics", "0x" + final["metrics_digest"]),
            ("checkpoint root", "0x" + final["checkpoint_root"]),
            ("commitment", "0x" + final["commitment"]),
        ]
    for replay in doc.get("replays", []):  # ledger replay --record, by anyone
        verdict = "reproduced" if replay["reproduced"] else "DIVERGED"
        rows.append(
            (
                "replayed",
                f"checkpoint {replay['from_step']} -> {replay['to_step']}: {verdict}, by "
                f"{replay['attester']} (block {replay['block_number']}, report "
                f"{replay['report_digest']})",
            )
        )
    width = max(len(name) for name, _ in rows)
    return [f"{name.ljust(width)}  {value}" for name, value in rows]


@app.command()
def proof(
    run: Annotated[str, RUN_ID.typer()],
    step: Annotated[int, typer.Argument(help="Checkpoint step.", min=0)],
    data_dir: Annotated[Path | None, DATA_DIR.typer()] = None,
) -> None:
    """Print a Merkle inclusion proof of a checkpoint in its run's checkpoint root."""
    from ledger.chain.proofs import checkpoint_proof
    from ledger.chain.reader import RegistryReader

    registry = RegistryReader.connect(load_settings(data_dir))
    run_id = registry.resolve_run(run, exists=True)
    print_json(checkpoint_proof(registry, run_id, step, shown=run))


@app.command()
def revoke(
    run: Annotated[str, RUN_ID.typer()],
    reason: Annotated[str, typer.Option(help="Why the run is revoked (recorded on chain).")],
    data_dir: Annotated[Path | None, DATA_DIR.typer()] = None,
) -> None:
    """Revoke a run (its committer or an admin may); its descendants become tainted."""
    from ledger.chain.admin import RegistryAdmin
    from ledger.record.outbox import Journal, journal_path

    settings = load_settings(data_dir)
    admin = RegistryAdmin.connect(settings)
    run_id = admin.resolve_run(run, exists=True)
    tx = admin.revoke_run(run_id, reason)
    # journaled, so `ledger sync` recommits it if the chain loses it (a reset, a reorg)
    Journal(journal_path(settings)).append_confirmed(
        to_hex(run_id),
        "revoke",
        {"reason": reason, "revoker": admin.signer.address},
        {"reason": reason},
        block_number=tx.block_number,
        block_hash=admin.block_hash(tx.block_number) or "",
        registry=admin.address,
        tx_hash=tx.tx_hash,
        chain_id=admin.chain_id,
    )
    typer.echo(f"revoked in tx {tx.tx_hash} (block {tx.block_number})")


@app.command()
def runs(
    sweep: Annotated[str | None, typer.Option(help="Only the trials of this sweep id.")] = None,
    sort: Annotated[
        str | None, typer.Option(help="Order by this metric (e.g. val_loss), lowest first.")
    ] = None,
    descending: Annotated[bool, typer.Option("--desc", help="Highest first.")] = False,
    data_dir: Annotated[Path | None, DATA_DIR.typer()] = None,
    as_json: Annotated[bool, JSON.typer()] = False,
) -> None:
    """List recorded runs (of a sweep), oldest first or by a metric."""
    chosen = _catalog(data_dir)[0].select(sweep=sweep, sort=sort, descending=descending)
    if as_json:
        print_json([r.to_json() for r in chosen])
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


@app.command()
def lineage(
    run: Annotated[str, RUN_ID.typer()],
    data_dir: Annotated[Path | None, DATA_DIR.typer()] = None,
    as_json: Annotated[bool, JSON.typer()] = False,
) -> None:
    """Print a run's ancestors and descendants with relations, status and revocations."""
    from ledger.catalog import chain_lineage, lineage_lines
    from ledger.chain.reader import RegistryReader
    from ledger.store import open_store

    settings = load_settings(data_dir)
    registry = RegistryReader.connect(settings)
    run_id = registry.resolve_run(run, exists=True)
    tree = chain_lineage(registry, open_store(settings), run_id)
    if as_json:
        print_json(tree)
        return
    for line in lineage_lines(tree):
        typer.echo(line)
