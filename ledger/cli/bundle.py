"""``ledger export``, and ``ledger verify MODEL --bundle FILE``'s body.

``export`` writes a run's provenance bundle (:mod:`ledger.bundle`): the in-toto
Statement, the documents, and the chain evidence. ``--bundle`` checks a model
against one with no store, no configuration and (offline) no node.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from ledger.cli.options import DATA_DIR, load_settings, print_json

app = typer.Typer()

EXPORT_TARGET = "Final weights file of a run, or a run id (or unique prefix)."


@app.command()
def export(
    target: Annotated[str, typer.Argument(help=EXPORT_TARGET)],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Bundle file [default: MODEL.provenance.json]."),
    ] = None,
    statement_only: Annotated[
        bool,
        typer.Option("--statement-only", help="Print only the in-toto Statement (JSON)."),
    ] = False,
    sign: Annotated[
        bool | None,
        typer.Option(
            "--sign/--no-sign",
            help="Sign the Statement (DSSE) with the committer's key "
            "[default: sign when the configured key is the run's committer].",
        ),
    ] = None,
    data_dir: Annotated[Path | None, DATA_DIR.typer()] = None,
) -> None:
    """Write a run's provenance bundle: in-toto Statement (SLSA provenance v1), its documents,
    and Merkle proofs of its chain records, verifiable with `ledger verify MODEL --bundle FILE`."""
    path = Path(target)
    # the file is hashed (CID and sha256, one read) while the rest is imported and connected
    hashing = _Hashing(path) if path.is_file() else None
    from ledger.bundle.export import Exporter
    from ledger.chain.reader import RegistryReader
    from ledger.store.sources import document_sources

    settings = load_settings(data_dir)
    registry = RegistryReader.connect(settings)
    exporter = Exporter(registry, document_sources(settings, api=None))
    file_sha: str | None
    if hashing is not None:
        cid, file_sha = hashing.result()
        run_id = exporter.run_of_cid(path, cid)
    else:
        run_id, file_sha = registry.resolve_run(target, field="RUN", exists=True), None
    signer = _signer(settings, registry, run_id, sign)
    if file_sha is not None:
        bundle = exporter.export(run_id, weights=path, sha256=file_sha, signer=signer)
        default = path.with_name(path.name + ".provenance.json")
    else:
        bundle = exporter.export(run_id, signer=signer)
        default = Path(f"run-{run_id.hex()[:12]}.provenance.json")
    if statement_only:
        print_json(bundle["statement"])
        return
    _write(output or default, bundle)
    signed = (
        f"signed by {signer.address}" if signer is not None else "unsigned (no committer's key)"
    )
    typer.echo(
        f"wrote {output or default} (run 0x{run_id.hex()}, as of block "
        f"{bundle['chain']['asOfBlock']}, {signed})"
    )


class _Hashing:
    """A file's CID and sha256 computed on a thread (daemon: an error elsewhere does not
    wait for a big file), so that imports and connections overlap the hashing."""

    def __init__(self, path: Path) -> None:
        import threading

        self._out: tuple[Any, str] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(path,), daemon=True)
        self._thread.start()

    def _run(self, path: Path) -> None:
        from ledger.hashing.cid import file_cid_and_sha256

        try:
            self._out = file_cid_and_sha256(path)
        except BaseException as exc:  # noqa: BLE001  raised again on the calling thread
            self._error = exc

    def result(self) -> tuple[Any, str]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._out is not None
        return self._out


def _signer(settings: Any, registry: Any, run_id: bytes, sign: bool | None) -> Any:
    """The committer's key to sign with: with ``--sign`` it must be configured and be
    the run's committer's; by default it is used when it is, else the bundle is unsigned."""
    from ledger.chain.sender import Signer
    from ledger.config import resolve_private_key
    from ledger.errors import ConfigError, InputError

    if sign is False:
        return None
    configured = settings.private_key is not None or settings.keystore is not None
    try:
        signer = Signer(resolve_private_key(settings, registry.rpc.chain_id()))
    except ConfigError:
        if sign or configured:  # asked for, or a configured key that does not work
            raise
        return None
    started = registry.events("RunStarted", run_id)
    committer = str(started[0]["committer"]) if started else ""
    if signer.address.lower() != committer.lower():
        if sign:
            raise InputError(
                f"the configured key ({signer.address}) is not run 0x{run_id.hex()}'s "
                f"committer ({committer}): its signature would not verify",
                hint="export with the committer's key (LEDGER_PRIVATE_KEY or LEDGER_KEYSTORE), "
                "or with --no-sign",
            )
        return None
    return signer


def _write(path: Path, bundle: dict[str, Any]) -> None:
    """Writes the bundle whole or not at all (a temporary file renamed over ``path``)."""
    import json

    from ledger.errors import InputError

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(bundle, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {exc.strerror}") from exc


def check_with_bundle(
    path: Path, bundle_path: Path, *, rpcs: list[str], data_dir: Path | None, as_json: bool
) -> int:
    """Check ``path`` against the bundle; prints the report, returns the exit code."""
    from ledger.errors import FileMissingError

    if not path.is_file():
        raise FileMissingError(f"{path}: no such file", hint="give the model file the bundle is of")
    # one read of the file for its CID and sha256, on a thread while the proof checker
    # is imported and the bundle read: the hash the console script started
    # before anything loaded (ledger.cli._early), else one started now
    from ledger.cli import _early

    early = _early.take(path)
    hashing: Any = early if early is not None and early.with_sha256 else _Hashing(path)
    from ledger.bundle.check import read_bundle, verify_bundle
    from ledger.cli.check import _print_report

    bundle = read_bundle(bundle_path)
    cid, file_sha = hashing.result()
    settings = load_settings(data_dir)
    report = verify_bundle(
        path,
        bundle,
        cid=cid,
        sha256=file_sha,
        rpcs=rpcs,
        registry=settings.registry_address,
        chain_id=settings.chain_id if settings.registry_address else None,
    )
    if as_json:
        print_json(report.to_json() | {"bundle": str(bundle_path)})
    else:
        _print_report(report)
    return int(report.outcome.exit_code)
