"""The dataset pages in a real browser, over the index's datasets API: a dataset's
runs and derived models, its revocation, and the taint it puts on them in the runs
table and on the run page. Skipped where this ledger has no dataset tracking."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.config import Settings
from ledger.ids import Relation
from ledger.index.indexer import Indexer
from ledger.store import LocalStore
from tests.conftest import Chain, free_port
from tests.runs import record_run

datasets = pytest.importorskip("ledger.datasets")

CHROMIUM = "/usr/bin/chromium"
AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
SERIOUS = ("serious", "critical")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

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


def test_dataset_pages_show_users_descendants_and_revocation(
    chain: Chain, data_store: LocalStore, indexer: Indexer, server: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    from ledger.record.data import fingerprint

    dataset_cid = datasets.dataset_cid

    folder = tmp_path / "D"
    (folder / "shards").mkdir(parents=True)
    (folder / "shards" / "0.bin").write_bytes(b"d" * 1000)
    (folder / "labels.csv").write_bytes(b"x,y\n1,2\n")
    d = fingerprint(folder)
    reg = chain.registry
    trained = record_run(reg, data_store, "on-d", data={"train": d})
    tuned = record_run(
        reg, data_store, "on-d-tuned", parents=[(trained.run_id, Relation.FINE_TUNE)]
    )
    clean = record_run(reg, data_store, "clean")
    cid = str(dataset_cid(d))
    reg.revoke_artifact(dataset_cid(d).digest, "licence withdrawn")
    indexer.run_once()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server + "/datasets")
            row = page.locator(f'#datasets tr[data-dataset="{cid}"]')
            expect(row).to_have_class("revoked")
            expect(row).to_contain_text("licence withdrawn")
            row.locator("a").click()
            page.wait_for_url(f"**/datasets/{cid}")
            expect(page.locator("#state .badge.revoked")).to_have_count(1)
            expect(page.locator("#facts")).to_contain_text("licence withdrawn")
            expect(page.locator(f'#used-by tr[data-run="{trained.hex}"]')).to_contain_text("train")
            derived = page.locator(f'#descendants tr[data-run="{tuned.hex}"]')
            expect(derived.locator(".badge.tainted")).to_have_count(1)
            expect(page.locator(f'#descendants tr[data-run="{clean.hex}"]')).to_have_count(0)

            page.goto(server + "/")  # taint by data in the runs table
            expect(page.locator(f'tr[data-run="{trained.hex}"] .badge.tainted')).to_have_count(1)
            expect(page.locator(f'tr[data-run="{tuned.hex}"] .badge.tainted')).to_have_count(1)
            expect(page.locator(f'tr[data-run="{clean.hex}"] .badge.tainted')).to_have_count(0)

            page.goto(f"{server}/runs/{trained.hex}")
            expect(page.locator("#taint")).to_contain_text("trained on revoked data")
            expect(page.locator("#summary")).to_contain_text("licence withdrawn")
            link = page.locator(f'#summary a[href="/datasets/{cid}"]')
            expect(link).to_have_count(1)
            node = page.locator(f'#lineage-graph a.dataset[href="/datasets/{cid}"]')
            expect(node).to_contain_text("REVOKED")
            node.click()
            page.wait_for_url(f"**/datasets/{cid}")
            assert errors == []

            # axe-core on the dataset page (injected: a context that bypasses the CSP)
            context = browser.new_context(bypass_csp=True)
            checked = context.new_page()
            checked.goto(f"{server}/datasets/{cid}")
            expect(checked.locator("#used-by tbody tr")).to_have_count(1)
            checked.add_script_tag(path=str(AXE))
            result = checked.evaluate("async () => await axe.run(document)")
            serious = [v["id"] for v in result["violations"] if v["impact"] in SERIOUS]
            assert serious == []
            context.close()
        finally:
            browser.close()
