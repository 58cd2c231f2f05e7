"""``ledger store``: move artifacts between the embedded store and an IPFS node.

``push`` copies every artifact of ``<data dir>/store`` to the configured IPFS
node. It asks the node once for its pins and skips what is already pinned, so
an interrupted push is resumed by running it again; every copy is checked (the
node's CID must equal the file's name in the store, see
:class:`~ledger.store.ipfs.IpfsStore`). A checkpoint folder (a sharded
checkpoint, a model folder) is recorded under its folder CID, which no file
of the store carries: push lays each such folder out again from its files (hard
links, else copies, in a hidden folder of the store) and adds it as ``ipfs add
-r --hidden``, so the node holds the directory node and the CID resolves;
its files then need no push of their own. ``get`` fetches one artifact from the
configured store and re-hashes it before writing it anywhere.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from ledger.cli.options import DATA_DIR, load_settings
from ledger.errors import (
    ConfigError,
    InputError,
    LedgerError,
    StoreError,
    StoreUnavailableError,
)

app = typer.Typer(
    name="store",
    help="Move artifacts between the embedded store and an IPFS node.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

Api = Annotated[
    str | None,
    typer.Option(
        "--api",
        envvar="LEDGER_IPFS_API",
        help="IPFS node RPC API, e.g. /ip4/127.0.0.1/tcp/5001/http [default: ipfs_api in "
        "config.json]",
    ),
]


@dataclass
class PushSummary:
    """What a push did; failures name the artifact and the reason."""

    copied: int = 0
    copied_bytes: int = 0
    folders: int = 0
    folder_files: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@app.command("push")
def push(data_dir: Annotated[Path | None, DATA_DIR.typer()] = None, api: Api = None) -> None:
    """Copy every artifact of the local store to the IPFS node (skips what it pins)."""
    from ledger.hashing.cid import Cid
    from ledger.store import LocalStore
    from ledger.store.ipfs import IpfsStore

    settings = load_settings(data_dir, ipfs_api=api)
    if not settings.ipfs_api:
        raise ConfigError(
            "no IPFS node is configured to push to",
            hint="pass --api /ip4/127.0.0.1/tcp/5001/http, set LEDGER_IPFS_API, "
            'or add "ipfs_api" to config.json in the data directory',
        )
    local = LocalStore(settings.store_dir)
    node = IpfsStore(settings.ipfs_api)
    cids = local.cids()
    pinned = node.pinned() if cids else set()
    summary = PushSummary()
    sent, present = _push_folders(local, node, pinned, summary)
    todo = [cid for cid in cids if cid not in pinned and cid not in sent and cid not in present]
    summary.folder_files = sum(1 for cid in cids if cid in sent and cid not in pinned)
    summary.skipped = len(cids) - len(todo) - summary.folder_files
    files: dict[Cid, Path] = {}
    for cid in todo:
        try:  # a copy, or a file stored by reference (checked where it was, unchanged)
            files[cid] = local.file_for(cid)
        except StoreUnavailableError:
            raise
        except LedgerError as exc:  # gone, changed, unreadable: this one fails
            summary.failed.append((str(cid), exc.message))
    sizes = {cid: _size_of(path) for cid, path in files.items()}
    with _transfer_bar(sum(sizes.values()), len(files)) as advance:
        for cid, path in files.items():
            try:
                node.put_file(path, expected=cid, progress=advance)
            except StoreUnavailableError:  # the node went away: nothing more can go
                raise
            except LedgerError as exc:  # one bad file (changed, gone, not regular)
                summary.failed.append((str(cid), exc.message))
                continue
            summary.copied += 1
            summary.copied_bytes += sizes[cid]
    for note in summary.notes:
        typer.secho(f"note: {note}; its files were pushed one by one", err=True)
    for name, reason in summary.failed:
        typer.secho(f"failed {name}: {reason}", fg=typer.colors.RED, err=True)
    typer.echo(
        f"pushed {summary.copied} artifacts ({_size(summary.copied_bytes)}), "
        f"{summary.skipped} already pinned, {len(summary.failed)} failed, "
        f"to the IPFS node at {node.address}"
    )
    if summary.folders:
        typer.echo(
            f"added {summary.folders} checkpoint folders whole under their recorded CIDs, "
            f"{summary.folder_files} of the artifacts inside them"
        )
    if summary.failed:
        raise StoreError(
            f"{len(summary.failed)} of {len(cids)} artifacts were not pushed",
            hint="each line above says why (a copy that no longer matches its CID, a "
            "referenced file moved or changed); restore those files, then push again",
        )


def _recorded_folders(local: Any) -> dict[Any, list[dict[str, Any]]]:
    """The checkpoint folders the store's metrics documents record: folder CID ->
    its listings ({file name: file CID}; every run that recorded the folder has
    one, and a crafted document may add a wrong one). Only documents the store
    holds as copies are read, and only small ones; a listing whose names could
    leave the folder is skipped."""
    import json
    import os
    import stat

    from ledger.documents import METRICS_SCHEMA
    from ledger.hashing.cid import Cid

    found: dict[Cid, list[dict[str, Cid]]] = {}
    for cid in local.cids():
        try:  # the first byte first: most blobs are weights, not documents
            fd = os.open(local.path_for(cid), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            with open(fd, "rb") as handle:
                if not stat.S_ISREG(os.fstat(fd).st_mode) or handle.read(1) != b"{":
                    continue  # a FIFO planted in the store is not read
                data = b"{" + handle.read(_DOCUMENT_LIMIT)
        except OSError:
            continue  # stored by reference (weights), or gone: not a document
        if len(data) > _DOCUMENT_LIMIT:
            continue
        try:
            document = json.loads(data)
            weights = document["weights"] if document.get("schema") == METRICS_SCHEMA else {}
            listing = weights.get("files") if isinstance(weights, dict) else None
            if not isinstance(listing, dict):
                continue
            files = {str(name): Cid.parse(str(file)) for name, file in listing.items()}
            folder = Cid.parse(str(weights["cid"]))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError, InputError):
            continue  # not a metrics document of ours (a crafted one nests deep)
        if files and all(_plain_name(name) for name in files):
            listings = found.setdefault(folder, [])
            if files not in listings:
                listings.append(files)
    return found


_DOCUMENT_LIMIT = 4 << 20  # a metrics document lists a folder's files: far below this


def _plain_name(name: str) -> bool:
    """A file name that stays inside the folder it is put in, and that the file
    system can hold (UTF-8, at most 255 bytes)."""
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (JSON can spell one)
        return False
    return 0 < len(encoded) <= 255 and name not in {".", ".."} and not set(name) & {"/", "\0"}


def _add_folder(local: Any, node: Any, folder: Any, files: dict[str, Any]) -> str | None:
    """Add ``folder`` whole, its entries read from the store's files of ``files``
    (copies, or the referenced files where they are: nothing is laid out or copied
    on disk); None once the node filed it under ``folder`` and lists each file
    under its recorded CID, else why not."""
    try:
        node.add_listing(
            {name: local.file_for(file) for name, file in files.items()},
            folder,
            shown=f"checkpoint folder {folder}",
        )  # checked: the node's root CID is folder's
        children = node.children(folder)
    except StoreUnavailableError:
        raise
    except LedgerError as exc:  # a file gone, changed or not regular; a CID refused
        return exc.message
    wrong = sorted(name for name, file in files.items() if children.get(name) != file)
    if wrong:  # the folder is the recorded one, the listing that led here is not
        return f"the node lists {', '.join(wrong)} under other CIDs than the document"
    return None


def _push_folders(
    local: Any, node: Any, pinned: set[Any], summary: PushSummary
) -> tuple[set[Any], set[Any]]:
    """Add every recorded checkpoint folder the node does not pin yet, whole.

    Returns the file CIDs sent inside folders by this push, and those the node
    already holds inside a pinned folder (checked against the node's own listing
    of it, not the document's). A folder that cannot be rebuilt from its recorded
    files (one that held subfolders or links, a file gone or changed) gets a
    note; its files are then pushed one by one, and fail there if they must."""
    sent: set[Any] = set()
    present: set[Any] = set()
    for folder, listings in _recorded_folders(local).items():
        if folder in pinned:
            children = node.children(folder)
            for files in listings:
                present.update(c for name, c in files.items() if children.get(name) == c)
            continue
        reasons = []
        for files in listings:  # the first listing the node's CID confirms
            reason = _add_folder(local, node, folder, files)
            if reason is None:
                summary.folders += 1
                sent.update(files.values())
                break
            reasons.append(reason)
        else:
            summary.notes.append(f"{folder} not added whole: {'; '.join(reasons)}")
    return sent, present


@app.command("get")
def get(
    cid: Annotated[str, typer.Argument(help="CID of the artifact.")],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Write it to this file [default: stdout]."),
    ] = None,
    data_dir: Annotated[Path | None, DATA_DIR.typer()] = None,
    api: Api = None,
) -> None:
    """Fetch an artifact from the configured store, re-checked against its CID."""
    from ledger.hashing.cid import Cid
    from ledger.store import open_store
    from ledger.store.ipfs import IpfsStore

    wanted = Cid.parse(cid.strip())
    store = open_store(load_settings(data_dir, ipfs_api=api))
    if output is not None and isinstance(store, IpfsStore):
        store.get_file(wanted, output)  # streamed to disk, renamed into place once checked
    else:
        data = store.get_bytes(wanted)
        if output is None:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            return
        _write(output, data)
    typer.echo(f"{wanted} verified, written to {output}", err=True)


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc


@contextmanager
def _transfer_bar(total: int, count: int) -> Iterator[Any]:
    """A bytes bar on a terminal; otherwise no callback (the summary line says it all)."""
    if count == 0 or not sys.stdout.isatty():
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    with Progress(
        TextColumn(f"pushing {count} artifacts"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("push", total=total)
        yield lambda done: bar.advance(task, done)


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # gone since it was found: its push fails and says so
        return 0


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"
