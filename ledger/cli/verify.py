"""``ledger verify``, ``ledger cid`` and ``ledger tensors``: the commands that read a model file.

``verify`` does its work in :func:`ledger.cli.check.check_file`, which the
console script also calls without typer when the arguments are plain (its
options are :data:`ledger.cli.options.VERIFY_OPTIONS`, the table both read).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ledger.cli.options import (
    BUNDLE,
    BUNDLE_RPC,
    DATA_DIR,
    JSON,
    VERIFY_API,
    VERIFY_PATH,
    VERIFY_RUN,
    print_json,
)
from ledger.cli.progress import progress_bar

app = typer.Typer()


@app.command()
def cid(
    path: Annotated[Path, typer.Argument(help="File or folder to hash.")],
    cid_version: Annotated[
        int | None,
        typer.Option("--cid-version", min=0, max=1, help="1 (default) or 0, as 'ipfs add'."),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            help="Kubo import profile: unixfs-v1-2025 (IPIP-499: CIDv1, raw leaves, 1 MiB "
            "chunks, 1,024 links, folders sharded by block size) or unixfs-v0-2015.",
        ),
    ] = None,
    hidden: Annotated[
        bool, typer.Option("--hidden", help="Include hidden files and folders ('.name').")
    ] = False,
) -> None:
    """Print the CID `ipfs add -r -Q --only-hash` would print for a file or folder.

    CIDv1 raw leaves by default. In a folder, hidden entries are skipped unless
    --hidden, and symbolic links are kept as links (not followed), as `ipfs add -r` does.
    """
    from ledger.hashing.cid import path_cid

    with progress_bar(path, json_output=False) as progress:
        result = path_cid(
            path, cid_version=cid_version, profile=profile, hidden=hidden, progress=progress
        )
    typer.echo(str(result))


@app.command()
def tensors(
    path: Annotated[
        Path,
        typer.Argument(help="Weights file (.pt, .pth, .ckpt, .bin, .safetensors) or HF folder."),
    ],
    as_json: Annotated[bool, JSON.typer()] = False,
) -> None:
    """Print the tensor root of weights (file or model folder); --json: every tensor's digest."""
    from ledger.hashing.tensors import tensor_digest

    digest = tensor_digest(path)
    if as_json:
        print_json(digest.index())
    else:
        typer.echo(f"{digest.scheme}:{digest.root.hex()}  ({len(digest.leaves)} tensors)")


@app.command()
def verify(
    path: Annotated[Path, VERIFY_PATH.typer()],
    run: Annotated[str | None, VERIFY_RUN.typer()] = None,
    api: Annotated[str | None, VERIFY_API.typer()] = None,
    data_dir: Annotated[Path | None, DATA_DIR.typer()] = None,
    as_json: Annotated[bool, JSON.typer()] = False,
    bundle: Annotated[Path | None, BUNDLE.typer()] = None,
    rpc: Annotated[list[str] | None, BUNDLE_RPC.typer()] = None,
) -> None:
    """Re-check a model file: exit 0 verified, 3 mismatch, 4 unknown, 5 revoked, 6 unchecked
    (recorded, but the run's documents could not be fetched), 7 proven by --bundle offline."""
    if bundle is not None:
        from ledger.cli.bundle import check_with_bundle

        raise typer.Exit(
            check_with_bundle(path, bundle, rpcs=rpc or [], data_dir=data_dir, as_json=as_json)
        )
    if rpc:
        raise typer.BadParameter("--rpc checks a --bundle; give --bundle FILE", param_hint="--rpc")
    from ledger.cli.check import check_file

    raise typer.Exit(check_file(path, run=run, data_dir=data_dir, as_json=as_json, api=api))
