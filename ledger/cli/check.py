"""``ledger verify``'s one implementation, free of the CLI framework.

The typer command (:mod:`ledger.cli.verify`) calls :func:`check_file`, and so
does the console script (:mod:`ledger.cli.main`) when the arguments are plain
enough to need no parser: the same code, the same report and exit code,
without loading typer and click while the file is being hashed. It never turns
errors into exit codes; both callers leave that to
:func:`ledger.cli.main.report_error`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ledger.cli.options import print_json
from ledger.cli.progress import progress_bar
from ledger.ids import run_id_prefix


def check_file(
    path: Path,
    *,
    run: str | None,
    data_dir: Path | None,
    as_json: bool,
    api: str | None = None,
) -> int:
    """Re-check ``path``, print the report (JSON or text); returns the exit code.

    Documents come from the data directory's store, the configured IPFS node,
    then the audit API at ``api`` (:func:`ledger.store.sources.document_sources`).
    """
    if run:
        run_id_prefix(run, field="--run")  # a bad id is an error before any work
    with progress_bar(path, json_output=as_json) as progress, _BackgroundCid(path, progress) as cid:
        # The file is being hashed on other threads while the rest loads and connects.
        from ledger.chain.reader import RegistryReader
        from ledger.config import load_settings
        from ledger.store.sources import document_sources
        from ledger.verify import Verifier

        settings = load_settings(data_dir)
        sources = document_sources(settings, api=api)
        registry = RegistryReader.connect(settings)
        expected = registry.resolve_run(run, field="--run") if run else None
        verifier = Verifier(registry, sources)
        report = verifier.verify_file(path, expected_run=expected, known_cid=cid.result())
    if as_json:
        print_json(report.to_json())
    else:
        _print_report(report)
    return int(report.outcome.exit_code)


class _Abandoned(Exception):
    """Stops a background hash whose result nobody will read."""


class _BackgroundCid:
    """The file CID of ``path``, computed on a background thread from ``__enter__`` on.

    Leaving the block early (an error elsewhere) stops the hash at its next
    block instead of waiting for the whole file. A folder has no CID: None.
    """

    def __init__(self, path: Path, progress: Any) -> None:
        import threading

        self._path = path
        self._progress = progress
        self._abandon = threading.Event()
        self._pool: Any = None
        self._future: Any = None

    def _hash(self) -> Any:
        from ledger.hashing.cid import file_cid

        def progress(done: int) -> None:
            if self._abandon.is_set():
                raise _Abandoned
            if self._progress is not None:
                self._progress(done)

        return file_cid(self._path, progress=progress)

    def __enter__(self) -> _BackgroundCid:
        from ledger.cli import _early

        early = _early.take(self._path)
        if early is not None:
            self._future = early  # already hashing since the process started
        elif not self._path.is_dir():
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-cid")
            self._future = self._pool.submit(self._hash)
        return self

    def result(self) -> Any:
        return None if self._future is None else self._future.result()

    def __exit__(self, *exc_info: object) -> None:
        self._abandon.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _shown(text: str) -> str:
    """``text`` for the terminal: names a crafted file chose (tensors, shards, paths)
    can neither style the report (rich markup) nor move the cursor and paint a line
    of their own (newlines, escape sequences): both are shown as written."""
    from rich.markup import escape

    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return escape(text)


def _print_report(report: Any) -> None:
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    colour = {
        "verified": "green",
        "mismatch": "red",
        "unknown": "yellow",
        "revoked": "red",
        "unchecked": "yellow",
        "proven": "green",
    }
    path = _shown(report.path)
    if report.is_folder:
        files = _shown(", ".join(report.files or []))
        console.print(
            f"[bold]{path}[/bold]  model folder ({files}): no file CID, looked up by tensor root"
        )
    else:
        console.print(f"[bold]{path}[/bold]  CID {report.file_cid}")
    for check in report.checks:
        mark = (
            "[green]✓[/green]"
            if check.ok
            else ("[yellow]?[/yellow]" if check.unchecked else "[red]✗[/red]")
        )
        console.print(f"  {mark} {_shown(check.name)}: {_shown(check.detail)}")
    if report.origin is not None and report.claimants:
        origin = report.origin
        console.print(
            f"  origin: run {origin['run_id']} (committer {origin['committer']}, "
            f"block {origin['block']})"
        )
        for other in report.claimants:
            console.print(
                f"  also claimed by: run {other['run_id']} (committer {other['committer']}, "
                f"block {other['block']})"
            )
    where = ""
    if report.run_id:
        what = (
            "final weights"
            if report.is_final
            else (f"checkpoint step {report.step}" if report.step is not None else "")
        )
        where = f" — run {report.run_id}" + (f", {what}" if what else "")
    outcome = report.outcome.value
    console.print(f"[bold {colour[outcome]}]{outcome.upper()}[/]{where}")
    if outcome == "proven":
        console.print(
            "proven by the bundle's Merkle proofs as of its block; a revocation after that "
            "block is not checked: give `--rpc URL` to check it now"
        )
    if outcome == "unchecked":
        console.print(
            "the weights are recorded on chain, but the run's documents could not be fetched: "
            "give `--api URL` of an audit API, or configure the IPFS node that holds them"
        )
