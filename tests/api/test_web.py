"""The web page in a real browser: Debian's chromium, headless, driven by Playwright.

``make test`` installs chromium first (``make browser``); Playwright never
downloads a browser of its own.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.config import Settings
from ledger.ids import Relation
from ledger.index.indexer import Indexer
from ledger.store import LocalStore
from tests.conftest import Chain, free_port
from tests.runs import record_run

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"),
    reason="needs Debian's chromium: run `make browser` (make test does)",
)


@pytest.fixture
def index_url(tmp_path: Path) -> str:  # the page is tested on SQLite only
    return f"sqlite:///{tmp_path / 'index.sqlite'}"


@pytest.fixture
def server(settings: Settings, indexer: Indexer) -> Iterator[str]:
    import uvicorn

    from ledger.api.app import ApiConfig, create_app

    app = create_app(settings, ApiConfig(follow=False), engine=indexer.engine, indexer=indexer)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_runs_table_run_chart_lineage_badges(
    chain: Chain, data_store: LocalStore, indexer: Indexer, server: str
) -> None:
    from playwright.sync_api import expect, sync_playwright

    assert shutil.which("chromium") or Path(CHROMIUM).exists(), "chromium is not installed"
    curve = [
        {"val_loss": 0.9, "epoch": 0},
        {"val_loss": 0.6, "epoch": 1},
        {"val_loss": 0.4, "epoch": 2},
    ]
    base = record_run(chain.registry, data_store, "base-model", curve=curve)
    tuned = record_run(
        chain.registry, data_store, "tuned-model", parents=[(base.run_id, Relation.FINE_TUNE)]
    )
    bad = record_run(chain.registry, data_store, "leaky-model")
    chain.registry.revoke_run(bad.run_id, "trained on test data")
    indexer.run_once()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(server + "/")
            rows = page.locator("#runs tbody tr")
            expect(rows).to_have_count(3)
            expect(page.locator("#runs")).to_contain_text("base-model")
            expect(page.locator(f'tr[data-run="{bad.hex}"]')).to_have_class("revoked")
            expect(page.locator(f'tr[data-run="{bad.hex}"] .badge.revoked')).to_have_text("revoked")
            expect(page.locator(f'tr[data-run="{base.hex}"] .badge.revoked')).to_have_count(0)

            page.fill("#filter", "name:tuned*")
            page.click("#filter-form button")
            expect(rows).to_have_count(1)
            expect(page.locator(f'tr[data-run="{tuned.hex}"]')).to_have_count(1)

            page.goto(f"{server}/runs/{base.hex}")
            line = page.locator('#charts figure[data-group="loss"] canvas')
            expect(line).to_have_count(1)
            points = line.evaluate(
                "c => Chart.getChart(c).getDatasetMeta(0).data.map(p => [p.x, p.y])"
            )
            assert len(points) == 3  # one point per checkpoint epoch
            ys = [p[1] for p in points]
            assert ys[0] < ys[1] < ys[2]  # falling loss: each point lower on screen
            expect(page.locator("#verify")).to_have_text("VERIFIED (re-checked on chain)")
            expect(page.locator("#lineage-graph")).to_contain_text("tuned-model")
            expect(page.locator("#lineage-graph")).to_contain_text("fine-tune")
            expect(page.locator("#revoked .badge.revoked")).to_have_count(0)

            page.goto(f"{server}/runs/{bad.hex}")
            expect(page.locator("#revoked .badge.revoked")).to_have_text("revoked")
            expect(page.locator("#revoked")).to_contain_text("trained on test data")
            expect(page.locator("#verify")).to_have_text("REVOKED (re-checked on chain)")
        finally:
            browser.close()


def test_names_cannot_disguise_and_long_names_wrap(
    chain: Chain, data_store: LocalStore, indexer: Indexer, server: str
) -> None:
    from playwright.sync_api import expect, sync_playwright

    spoof = record_run(chain.registry, data_store, "invoice\u202egpj.exe\u200b")
    long_name = "x" * 400
    long = record_run(chain.registry, data_store, long_name, final={"loss\u2066": 0.1})
    chain.registry.revoke_run(long.run_id, "reason\u202e" + "y" * 300)
    indexer.run_once()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1024, "height": 768})
            violations: list[str] = []
            page.on(
                "console",
                lambda m: (
                    violations.append(m.text) if "Content Security Policy" in m.text else None
                ),
            )
            page.goto(server + "/")
            cell = page.locator(f'tr[data-run="{spoof.hex}"] td').nth(2)
            expect(cell).to_have_text("invoice⟦U+202E⟧gpj.exe⟦U+200B⟧")
            badge = page.locator(f'tr[data-run="{long.hex}"] .badge.revoked')
            expect(badge).to_have_count(1)
            box = badge.bounding_box()
            assert box is not None and box["x"] + box["width"] <= 1024  # still on screen

            page.goto(f"{server}/runs/{long.hex}")
            expect(page.locator("#revoked")).to_contain_text("reason⟦U+202E⟧")
            expect(page.locator("#checkpoints")).to_contain_text("loss⟦U+2066⟧")
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 1024, width  # the long name and reason wrap
            assert violations == []
        finally:
            browser.close()


def test_docs_work_offline_under_the_csp(server: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            elsewhere: list[str] = []
            violations: list[str] = []

            def route(r: Any) -> None:
                if r.request.url.startswith(server):
                    r.continue_()
                else:
                    elsewhere.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.on(
                "console",
                lambda m: (
                    violations.append(m.text) if "Content Security Policy" in m.text else None
                ),
            )
            page.goto(server + "/docs")
            # Swagger UI's bundle is 1.5 MB of script: give a loaded machine time to run it
            expect(page.locator(".swagger-ui .info .title")).to_contain_text(
                "ledger audit API", timeout=20_000
            )
            expect(page.locator(".opblock-summary-path").first).to_be_visible()
            assert elsewhere == [] and violations == []
        finally:
            browser.close()


def test_run_page_downloads_the_bundle(
    chain: Chain, data_store: LocalStore, indexer: Indexer, server: str
) -> None:
    import json

    from playwright.sync_api import expect, sync_playwright

    run = record_run(chain.registry, data_store, "shared-model")
    open_run = record_run(chain.registry, data_store, "still-training", finalize=False)
    indexer.run_once()
    assert run.final_cid is not None

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(accept_downloads=True)
            violations: list[str] = []
            page.on(
                "console",
                lambda m: (
                    violations.append(m.text) if "Content Security Policy" in m.text else None
                ),
            )
            page.goto(f"{server}/runs/{run.hex}")
            link = page.locator("#bundle")
            expect(link).to_be_visible()
            with page.expect_download() as info:
                link.click()
            download = info.value
            assert download.suggested_filename == f"run-{run.run_id.hex()[:12]}.provenance.json"
            bundle = json.loads(Path(download.path()).read_text())
            subject = bundle["statement"]["subject"][0]
            assert subject["digest"]["ledgerCid"] == run.final_cid.digest.hex()
            assert bundle["statement"]["predicate"]["runDetails"]["metadata"]["invocationId"] == (
                "0x" + run.run_id.hex()
            )

            page.goto(f"{server}/runs/{open_run.hex}")  # nothing to export before the end
            expect(page.locator("#checkpoints tbody tr")).to_have_count(1)
            expect(page.locator("#bundle")).to_be_hidden()
            assert violations == []
        finally:
            browser.close()
