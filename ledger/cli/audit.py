"""``ledger index`` and ``ledger serve``: the audit flow's commands.

Everything heavy (SQLAlchemy, FastAPI, uvicorn) is imported inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ledger.cli.options import DATA_DIR, PORT, load_settings

app = typer.Typer()
IndexUrl = Annotated[
    str | None,
    typer.Option(
        "--index-url",
        envvar="LEDGER_INDEX_URL",
        help="Index database URL [default: sqlite:///<data dir>/index.sqlite]",
    ),
]
Confirmations = Annotated[
    int | None,
    typer.Option(
        "--confirmations",
        min=0,
        help="Blocks to wait before indexing "
        "[default: LEDGER_CONFIRMATIONS, else 0 on a dev chain, 12 elsewhere]",
    ),
]


@app.command()
def index(
    data_dir: Annotated[Path | None, DATA_DIR.typer()] = None,
    index_url: IndexUrl = None,
    confirmations: Confirmations = None,
    follow: Annotated[bool, typer.Option("--follow", help="Keep following new blocks.")] = False,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between passes.")] = 1.0,
) -> None:
    """Index the registry's events into SQL (one pass, or --follow)."""
    import threading

    from ledger.index import open_index
    from ledger.index.service import build_indexer

    settings = load_settings(data_dir)
    engine = open_index(settings, index_url)
    indexer = build_indexer(settings, engine, confirmations=confirmations)
    if follow:
        stop = threading.Event()
        try:
            indexer.follow(stop, interval=interval)
        except KeyboardInterrupt:
            stop.set()
        return
    result = indexer.run_once()
    typer.echo(
        json.dumps(
            {
                "from_block": result.from_block,
                "to_block": result.to_block,
                "events": result.events,
                "documents": result.documents,
                "rolled_back_to": result.rolled_back_to,
                "indexed_block": indexer.status.last_block,
                "seconds": round(result.seconds, 3),
            }
        )
    )


@app.command()
def serve(
    data_dir: Annotated[Path | None, DATA_DIR.typer()] = None,
    index_url: IndexUrl = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, PORT.typer(help="Port.", min=1, max=65535)] = 8000,
    confirmations: Confirmations = None,
    no_index: Annotated[
        bool, typer.Option("--no-index", help="Serve only; another process runs `ledger index`.")
    ] = False,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Server processes (this one indexes).")
    ] = 1,
) -> None:
    """Serve the audit API and web page (and index in the background).

    LEDGER_API_TOKEN turns on bearer-token auth; LEDGER_API_CORS lists allowed origins.
    """
    import uvicorn

    from ledger.api.app import ApiConfig, create_app
    from ledger.index import open_index
    from ledger.index.service import build_indexer

    settings = load_settings(data_dir)
    config = ApiConfig.from_env(index_url=index_url, follow=not no_index)
    engine = open_index(settings, index_url)
    indexer = None if no_index else build_indexer(settings, engine, confirmations=confirmations)
    typer.echo(f"ledger audit API on http://{host}:{port}/ (OpenAPI at /docs)")
    if workers == 1:
        app = create_app(settings, config, engine=engine, indexer=indexer)
        uvicorn.run(app, host=host, port=port, log_level="warning")
        return
    _serve_workers(settings, index_url, indexer, host, port, workers)


def _serve_workers(
    settings: Any, index_url: str | None, indexer: Any, host: str, port: int, workers: int
) -> None:
    """Worker processes serve (their app built by ``app_from_env``); this one indexes."""
    import os

    import uvicorn

    from ledger.index.service import BackgroundIndexer

    os.environ["LEDGER_HOME"] = str(settings.data_dir)
    if index_url:
        os.environ["LEDGER_INDEX_URL"] = index_url
    background = BackgroundIndexer(indexer) if indexer is not None else None
    if background is not None:
        background.start()
    try:
        uvicorn.run(
            "ledger.api.app:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
        )
    finally:
        if background is not None:
            background.stop()
