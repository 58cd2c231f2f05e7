"""``ledger data add|show|ls|revoke``: datasets as first-class provenance.

A dataset is named by one CID (:mod:`ledger.datasets`): a file's or folder's own
CID (what ``ipfs add -r`` prints), or for any other fingerprint the CID of the
fingerprint as canonical JSON. ``show`` and ``ls`` read the audit index (brought
up to date first with one indexer pass, as ``ledger index`` does); ``show`` also
asks the registry itself whether the dataset is revoked. ``revoke`` writes
``revokeArtifact`` on chain (an admin's key).

``add --name`` keeps a label in the fingerprint (never in the CID, see
:mod:`ledger.datasets`); ``add --push`` adds the data itself to the configured
IPFS node (:meth:`ledger.store.ipfs.IpfsStore.add_path`), checked against the
CID printed. ``hf:FOLDER`` is read from disk only: ledger never downloads a
dataset (:func:`load_hf`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from ledger.cli.options import DATA_DIR, JSON, load_settings, print_json

app = typer.Typer()
data_app = typer.Typer(
    name="data",
    help="Datasets: fingerprint, find the runs trained on one, revoke.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(data_app)

IndexUrl = Annotated[
    str | None,
    typer.Option(
        "--index-url",
        envvar="LEDGER_INDEX_URL",
        help="Index database URL [default: sqlite:///<data dir>/index.sqlite]",
    ),
]
NoSync = Annotated[
    bool,
    typer.Option("--no-sync", help="Answer from the index as it is (no indexer pass first)."),
]


def fingerprint_source(source: str, settings: Any, *, profile: str | None, hidden: bool) -> Any:
    """The fingerprint of ``PATH``, a glob, or ``hf:PATH`` (see :func:`load_hf`)."""
    from ledger.errors import FileMissingError
    from ledger.record.data import fingerprint

    value: Any = source
    if source.startswith("hf:"):
        value = load_hf(source)
    elif not any(c in source for c in "*?[") and not Path(source).exists():
        raise FileMissingError(
            f"{source}: no such file or folder",
            hint="give a file, a folder, a glob of files or hf:FOLDER",
        )
    return fingerprint(value, cache_dir=settings.data_dir / "cache", profile=profile, hidden=hidden)


SAVED_MARKERS = ("dataset_dict.json", "state.json")
"""What ``save_to_disk`` writes at the top of a saved ``DatasetDict`` / ``Dataset``."""


def load_hf(source: str) -> Any:
    """The Hugging Face dataset ``hf:PATH`` names, never downloaded.

    PATH must be a local folder: one written by ``save_to_disk`` (read with
    ``load_from_disk``), or a folder of data files that ``datasets`` reads
    itself (CSV, JSON, Parquet, text...), loaded with the Hub switched off
    (``HF_HUB_OFFLINE``). A Hub name, a URL or a single file is refused: ledger
    fingerprints data that is here, and never fetches a dataset at run time.
    """
    from ledger.errors import InputError

    name = source.removeprefix("hf:")
    fetch_hint = (
        "ledger never downloads datasets: save it first, e.g. "
        "datasets.load_dataset(NAME).save_to_disk(FOLDER), then give hf:FOLDER"
    )
    if not name:
        raise InputError("hf: needs the folder of a saved dataset", hint=fetch_hint)
    folder = Path(name)
    if not folder.is_dir():
        what = "a file" if folder.exists() else "not a local folder"
        raise InputError(
            f"{source}: {what}; hf: takes the folder of a dataset saved with save_to_disk, "
            "or a folder of data files (CSV, JSON, Parquet...)",
            hint=fetch_hint
            if not folder.exists()
            else "give the folder that holds it, or the file itself without hf:",
        )
    with _hub_offline():
        try:
            import datasets
        except ImportError as exc:
            raise InputError(
                f"{source}: Hugging Face datasets is not installed",
                hint="pip install 'ledger[hf]'",
            ) from exc
        try:
            if any((folder / marker).is_file() for marker in SAVED_MARKERS):
                return datasets.load_from_disk(str(folder))
            return datasets.load_dataset(str(folder))
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            # What datasets raises for a folder it cannot read (missing or damaged
            # files, no data files, a script it no longer runs): all say so in text.
            raise InputError(
                f"{source}: cannot be read as a Hugging Face dataset: {exc}",
                hint="give the folder written by save_to_disk, or a folder of data files",
            ) from exc


@contextmanager
def _hub_offline() -> Iterator[None]:
    """The Hugging Face Hub switched off while a dataset is loaded: the variables for a
    first import of ``datasets`` and the flags it and ``huggingface_hub`` read, if loaded."""
    saved_env = {key: os.environ.get(key) for key in _OFFLINE_VARIABLES}
    os.environ.update(dict.fromkeys(_OFFLINE_VARIABLES, "1"))
    flags = [
        (module, name)
        for module, name in (
            ("datasets.config", "HF_HUB_OFFLINE"),
            ("huggingface_hub.constants", "HF_HUB_OFFLINE"),
        )
        if module in sys.modules
    ]
    saved_flags = [getattr(sys.modules[m], n) for m, n in flags]
    for module, name in flags:
        setattr(sys.modules[module], name, True)
    try:
        yield
    finally:
        for (module, name), value in zip(flags, saved_flags, strict=True):
            setattr(sys.modules[module], name, value)
        for key, env_value in saved_env.items():
            if env_value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = env_value


_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


MAX_NAME = 200
"""Characters a dataset's name may have (the index keeps as many)."""


@data_app.command("add")
def add(
    source: Annotated[str, typer.Argument(help="A file, a folder, a glob of files, or hf:FOLDER.")],
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="A name for the dataset, kept in its fingerprint (a label: it does not "
            "change the dataset's CID).",
        ),
    ] = None,
    push: Annotated[
        bool,
        typer.Option(
            "--push",
            help="Also add the data itself to the configured IPFS node (LEDGER_IPFS_API), "
            "checked against the CID printed, and pin it.",
        ),
    ] = False,
    profile: Annotated[
        str | None,
        typer.Option(help="CID profile of files and folders (e.g. unixfs-v1-2025)."),
    ] = None,
    hidden: Annotated[
        bool, typer.Option("--hidden", help="Include hidden files (ipfs add --hidden).")
    ] = False,
    store: Annotated[
        bool,
        typer.Option("--store", help="Keep the fingerprint document in the configured store."),
    ] = False,
    data_dir: Annotated[Path | None, DATA_DIR.typer()] = None,
    as_json: Annotated[bool, JSON.typer()] = False,
) -> None:
    """Fingerprint a dataset and print the CID that names it (what runs record, and what
    `ledger data revoke` takes)."""
    from ledger.datasets import dataset_cid
    from ledger.documents import canonical_json
    from ledger.ids import to_hex

    label = _check_name(name) if name is not None else None
    settings = load_settings(data_dir)
    node = _push_target(settings) if push else None  # refused before any hashing
    if push and source.startswith("hf:"):
        from ledger.errors import InputError

        raise InputError(
            f"--push takes files and folders, not {source}",
            hint="push the dataset's folder itself (ledger data add FOLDER --push), or "
            "its files with a glob",
        )
    found = fingerprint_source(source, settings, profile=profile, hidden=hidden)
    if label is not None:
        found["name"] = label
    cid = dataset_cid(found)
    pushed = _push(node, source, found, profile, hidden) if node is not None else None
    stored = None
    if store:
        from ledger.store import open_store

        stored = str(open_store(settings).put_bytes(canonical_json(found, what="fingerprint")))
    out = {
        "cid": str(cid),
        "digest": to_hex(cid.digest),
        "kind": found.get("kind"),
        "name": found.get("name"),
        "bytes": found.get("bytes"),
        "fingerprint": found,
        "stored": stored,
        "pushed": pushed,
    }
    if as_json:
        print_json(out)
        return
    size = f", {found['bytes']} bytes" if isinstance(found.get("bytes"), int) else ""
    named = f" {found['name']!r}" if isinstance(found.get("name"), str) else ""
    typer.echo(f"{cid}  ({found.get('kind')}{named}{size})")
    typer.echo(f"digest {out['digest']}")
    if pushed is not None:
        typer.echo(
            f"pushed to the IPFS node at {pushed['api']} and pinned: {', '.join(pushed['cids'])}"
        )
    if stored is not None:
        typer.echo(f"fingerprint document stored as {stored}")


def _check_name(name: str) -> str:
    from ledger.errors import InputError

    label = name.strip()
    if not label or len(label) > MAX_NAME or not label.isprintable():
        raise InputError(
            f"--name {name[:40]!r}{'...' if len(name) > 40 else ''} cannot name a dataset",
            hint=f"give 1 to {MAX_NAME} printable characters",
        )
    return label


def _push_target(settings: Any) -> Any:
    """The IPFS store ``--push`` adds to; a ConfigError when none is configured."""
    from ledger.errors import ConfigError
    from ledger.store.ipfs import IpfsStore

    if not settings.ipfs_api:
        raise ConfigError(
            "--push needs an IPFS node and none is configured",
            hint="set LEDGER_IPFS_API (e.g. /ip4/127.0.0.1/tcp/5001/http) or add "
            '"ipfs_api" to config.json in the data directory',
        )
    return IpfsStore(settings.ipfs_api)


def _push(
    node: Any, source: str, found: dict[str, Any], profile: str | None, hidden: bool
) -> dict[str, Any]:
    """Add the data ``found`` fingerprints (a file, a folder, or each file of a glob) to
    ``node``, each checked against the CID in its fingerprint, and pin it."""
    from ledger.errors import IntegrityError
    from ledger.hashing.cid import Cid
    from ledger.record.data import glob_matches

    if found.get("kind") in ("file", "folder"):
        pairs = [(Path(source), found)]
    else:  # a glob: the same matches, in the same order, as the fingerprint's entries
        matches = glob_matches(source)
        entries = found.get("files") or []
        if len(matches) != len(entries):
            raise IntegrityError(
                f"{source} matched {len(entries)} entries when fingerprinted and "
                f"{len(matches)} now; nothing more was pushed",
                hint="run the command again once the files stop changing",
            )
        pairs = [(Path(m), e) for m, e in zip(matches, entries, strict=True)]
    cids = [
        str(node.add_path(path, Cid.parse(entry["cid"]), profile=profile, hidden=hidden))
        for path, entry in pairs
    ]
    return {"api": node.address.text, "cids": cids}


def _index(settings: Any, index_url: str | None, sync: bool) -> Any:
    """The audit index, brought up to date with one pass unless ``sync`` is False."""
    from ledger.index import open_index

    engine = open_index(settings, index_url)
    if sync:
        from ledger.index.service import build_indexer

        build_indexer(settings, engine).run_once()
    return engine


def _resolve(source: str, settings: Any) -> str:
    """A dataset's CID text from a CID, a 0x digest, or a path (fingerprinted)."""
    from ledger.datasets import dataset_cid, parse_dataset
    from ledger.errors import InputError

    if source.startswith("hf:") or Path(source).exists():
        return str(dataset_cid(fingerprint_source(source, settings, profile=None, hidden=False)))
    try:
        return str(parse_dataset(source, field="DATASET"))
    except InputError as exc:
        raise InputError(
            f"DATASET {source!r} is not a CID, a 0x digest, or an existing path",
            hint="give what `ledger data add` printed, or the dataset's path",
        ) from exc


@data_app.command("show")
def show(
    dataset: Annotated[str, typer.Argument(help="The dataset's CID or 0x digest, or its path.")],
    data_dir: Annotated[Path | None, DATA_DIR.typer()] = None,
    index_url: IndexUrl = None,
    no_sync: NoSync = False,
    as_json: Annotated[bool, JSON.typer()] = False,
) -> None:
    """The runs trained on a dataset (and the runs derived from them), and whether it is
    revoked (asked of the registry itself)."""
    from sqlalchemy.orm import Session

    from ledger.index import queries

    settings = load_settings(data_dir)
    cid = _resolve(dataset, settings)
    engine = _index(settings, index_url, not no_sync)
    with Session(engine) as session:
        found = queries.dataset(session, cid)
        runs = queries.runs_by_id(session, [*found.direct, *found.descendants])
    on_chain = _chain_revocation(settings, found.digest)
    revocation = on_chain if on_chain is not None else _row(found.revocation)

    def node(run_id: str) -> dict[str, Any]:
        run = runs.get(run_id)
        return {
            "run_id": run_id,
            "name": run.name if run else None,
            "status": run.status if run else None,
            "final_weights_digest": run.final_weights_digest if run else None,
        }

    out: dict[str, Any] = {
        "cid": cid,
        "digest": found.digest,
        "revoked": revocation is not None,
        "revocation": revocation,
        "part_of": sorted({r.part_of for r in found.refs if r.part_of}),
        "used_by": [node(r) for r in found.direct],
        "descendants": [
            {**node(r), "via": via, "generation": generation}
            for r, (via, generation) in sorted(found.descendants.items())
        ],
    }
    if as_json:
        print_json(out)
        return
    typer.echo(f"dataset {cid}")
    typer.echo(f"digest  {found.digest}")
    if revocation is None:
        typer.echo("not revoked")
    else:
        typer.echo(f"REVOKED: {revocation['reason']} (block {revocation['block']})")
    for part_of in out["part_of"]:
        typer.echo(f"part of dataset {part_of}")
    typer.echo(f"trained on it: {len(out['used_by'])} run(s)")
    for run in out["used_by"]:
        typer.echo(f"  {run['run_id']}  {run['name'] or ''}  {run['status'] or ''}")
    if out["descendants"]:
        typer.echo(f"derived from those: {len(out['descendants'])} run(s)")
        for run in out["descendants"]:
            typer.echo(
                f"  {run['run_id']}  {run['name'] or ''}  (from {run['via'][:14]}, "
                f"generation {run['generation']})"
            )


def _row(row: Any) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"block": row.block_number, "tx": row.tx_hash, "by": row.revoker, "reason": row.reason}


def _chain_revocation(settings: Any, digest: str) -> dict[str, Any] | None:
    """The dataset's revocation as the registry says now (None: not revoked)."""
    from ledger.chain.reader import RegistryReader
    from ledger.ids import from_hex

    return _revocation(RegistryReader.connect(settings), from_hex(digest, field="digest"))


def _revocation(reader: Any, digest: bytes) -> dict[str, Any] | None:
    found = reader.artifact_revocations([digest]).get(digest)
    if found is None:
        return None
    return {
        "block": found.block_number,
        "tx": found.tx_hash,
        "by": found.revoker,
        "reason": found.reason,
    }


@data_app.command("ls")
def ls(
    data_dir: Annotated[Path | None, DATA_DIR.typer()] = None,
    index_url: IndexUrl = None,
    no_sync: NoSync = False,
    as_json: Annotated[bool, JSON.typer()] = False,
) -> None:
    """Datasets the indexed runs trained on: runs per dataset, revoked or not."""
    from sqlalchemy.orm import Session

    from ledger.index import queries

    settings = load_settings(data_dir)
    engine = _index(settings, index_url, not no_sync)
    rows: list[Any] = []
    cursor = None
    with Session(engine) as session:
        while True:
            page, cursor = queries.list_datasets(session, cursor=cursor, limit=500)
            rows += page
            if cursor is None:
                break
    out = [
        {
            "cid": r.cid,
            "digest": r.digest,
            "kind": r.kind,
            "name": r.name,
            "bytes": r.bytes,
            "runs": r.runs,
            "revoked": r.revocation is not None,
            "reason": r.revocation.reason if r.revocation is not None else None,
        }
        for r in rows
    ]
    if as_json:
        print_json(out)
        return
    if not out:
        typer.echo("no datasets in the index (runs record them with data=)")
    for d in out:
        state = f"REVOKED: {d['reason']}" if d["revoked"] else ""
        typer.echo(f"{d['cid']}  {d['kind']:<10} {d['runs']:>4} run(s)  {d['name'] or ''}  {state}")


@data_app.command("revoke")
def revoke(
    dataset: Annotated[str, typer.Argument(help="The dataset's CID or 0x digest, or its path.")],
    reason: Annotated[str, typer.Option(help="Why it is revoked (recorded on chain).")],
    data_dir: Annotated[Path | None, DATA_DIR.typer()] = None,
) -> None:
    """Revoke a dataset on chain (an admin's key): every model trained on it, or derived
    from one that was, then fails `ledger verify` (revoked, exit 5)."""
    from ledger.chain.admin import RegistryAdmin
    from ledger.datasets import parse_dataset
    from ledger.errors import InputError, MissingRoleError

    if not reason.strip():
        raise InputError("--reason is empty", hint="say why the dataset is revoked")
    settings = load_settings(data_dir)
    cid = parse_dataset(_resolve(dataset, settings))
    admin = RegistryAdmin.connect(settings)
    me = admin.signer.address
    if not admin.is_admin(me):
        raise MissingRoleError(
            f"{me} is not an admin of registry {admin.address}: only admins revoke datasets",
            hint="run this with the admin's key (LEDGER_PRIVATE_KEY or LEDGER_KEYSTORE)",
        )
    earlier = _revocation(admin, cid.digest)
    if earlier is not None:
        raise InputError(
            f"dataset {cid} is already revoked (block {earlier['block']}: {earlier['reason']})",
            hint="a revocation is final; nothing was sent",
        )
    tx = admin.revoke_artifact(cid.digest, reason)
    typer.echo(f"dataset {cid} revoked in tx {tx.tx_hash} (block {tx.block_number})")
