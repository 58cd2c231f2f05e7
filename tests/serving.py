"""The audit API on a real port, and the browser the page's tests drive.

``serve_api`` runs ``ledger serve``'s app (over a test's settings and index) with
uvicorn on a thread and gives its base URL; the page's tests launch Debian's
chromium with ``CHROMIUM_ARGS`` and skip, outside CI, where it is not installed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ledger.chain.anvil import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE = Path(__file__).resolve().parents[1] / "node_modules" / "axe-core" / "axe.min.js"

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"),
    reason="needs Debian's chromium: run `make browser` (make test does)",
)


@contextmanager
def serve_api(settings: Any, indexer: Any, engine: Any = None) -> Iterator[str]:
    """The API over ``settings`` and ``indexer``'s index, served on a free port."""
    import uvicorn

    from ledger.api.app import ApiConfig, create_app

    app = create_app(
        settings, ApiConfig(follow=False), engine=engine or indexer.engine, indexer=indexer
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
