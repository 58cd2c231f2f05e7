"""Verifying a model you received: the chain, but not the trainer's store.

The run's documents are fetched from the data directory's store, the configured
IPFS node, or an audit API (``--api``), and always re-hashed against the chain.
Without any of them the verdict is UNCHECKED (exit 6), never MISMATCH, which
means tampered. Real Anvil, real files, a real ``uvicorn`` serving the
trainer's store, and a real HTTP server that lies.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ledger.chain.anvil import free_port
from ledger.chain.reader import RegistryReader
from ledger.chain.rpc import JsonRpc
from ledger.config import Settings
from ledger.index.indexer import Indexer
from ledger.store import LocalStore
from ledger.store.sources import document_sources
from ledger.verify import Outcome, Verifier, VerifyReport
from tests.cli.test_cli import chain_env, ledger
from tests.conftest import Chain
from tests.hashing.test_tensors import make_state_dict
from tests.recorder import RunRecorder
from tests.runs import manifest


@pytest.fixture
def index_url(tmp_path: Path) -> str:  # the documents route is the same on either database
    return f"sqlite:///{tmp_path / 'index.sqlite'}"


@pytest.fixture
def recorded(chain: Chain, data_store: LocalStore, tmp_path: Path) -> RunRecorder:
    """A run finalized with a real weights file, its documents in the trainer's store."""
    model = tmp_path / "received" / "model.pt"
    model.parent.mkdir()
    torch.save(make_state_dict(), model)
    run = RunRecorder(chain.registry, data_store)
    run.start(manifest("shared model"))
    run.finalize(model, {"loss": 0.25})
    return run


@pytest.fixture
def api(settings: Settings, indexer: Indexer) -> Iterator[str]:
    """``ledger serve``'s app over the trainer's data directory, on a real port."""
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


@pytest.fixture
def lying_api(data_store: LocalStore) -> Iterator[str]:
    """An HTTP server answering the documents route with altered bytes of the manifest."""

    class Liar(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            cid = self.path.rsplit("/", 1)[-1]
            blob = data_store.root / "blobs" / cid
            if not blob.exists():
                self.send_response(404)
                self.end_headers()
                return
            data = blob.read_bytes()
            if b'"ledger.manifest/v1"' in data:
                data = data.replace(b"shared model", b"shared m0del")
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Liar)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join(timeout=10)


def third_party(chain: Chain, tmp_path: Path) -> Settings:
    """Another data directory: the chain and the registry, no store of its own."""
    return chain.settings(tmp_path / "elsewhere")


def verify(chain: Chain, settings: Settings, model: Path, api: str | None = None) -> VerifyReport:
    reader = RegistryReader(JsonRpc(chain.rpc_url), chain.registry.address, chain.deploy_block)
    return Verifier(reader, document_sources(settings, api=api)).verify_file(model)


def test_without_the_documents_the_verdict_is_unchecked_not_mismatch(
    chain: Chain, recorded: RunRecorder, tmp_path: Path
) -> None:
    model = tmp_path / "received" / "model.pt"
    report = verify(chain, third_party(chain, tmp_path), model)
    assert report.outcome is Outcome.UNCHECKED
    assert report.outcome.exit_code == 6
    assert report.run_id == recorded.run_id_hex and not report.failed
    # without its manifest, the run's datasets cannot be checked against revocations either
    assert {c.name for c in report.unchecked} == {"run manifest", "metrics", "data not revoked"}
    assert all("--api" in c.detail for c in report.unchecked)
    checks = report.to_json()["checks"]
    assert any(c["unchecked"] and not c["ok"] for c in checks)
    # tampering still wins over missing documents: another file, --run of the run
    other = tmp_path / "other.pt"
    torch.save(make_state_dict(seed=1), other)
    v = Verifier(
        RegistryReader(JsonRpc(chain.rpc_url), chain.registry.address, chain.deploy_block),
        document_sources(third_party(chain, tmp_path)),
    )
    assert v.verify_file(other, expected_run=recorded.run_id).outcome is Outcome.MISMATCH


def test_documents_from_an_audit_api_verify_and_altered_ones_are_a_mismatch(
    chain: Chain, recorded: RunRecorder, tmp_path: Path, api: str, lying_api: str
) -> None:
    model = tmp_path / "received" / "model.pt"
    elsewhere = third_party(chain, tmp_path)
    report = verify(chain, elsewhere, model, api=api)
    assert report.outcome is Outcome.VERIFIED, report.checks
    assert not report.unchecked

    lied = verify(chain, elsewhere, model, api=lying_api)
    assert lied.outcome is Outcome.MISMATCH
    (manifest_check,) = [c for c in lied.failed]
    assert manifest_check.name == "run manifest"
    assert recorded.manifest_cid is not None and str(recorded.manifest_cid) in manifest_check.detail
    assert lying_api in manifest_check.detail

    # a source with genuine bytes wins over one that lies, whatever the order
    local = LocalStore(elsewhere.store_dir)
    local.put_bytes(b"{}")  # the folder exists, without the run's documents
    gone = verify(chain, elsewhere, model, api="http://127.0.0.1:9")  # nothing listens there
    assert gone.outcome is Outcome.UNCHECKED
    assert "does not answer" in gone.unchecked[0].detail


def test_the_documents_route_serves_json_documents_only(
    recorded: RunRecorder, api: str, data_store: LocalStore, tmp_path: Path
) -> None:
    import urllib.error
    import urllib.request

    assert recorded.manifest_cid is not None
    with urllib.request.urlopen(f"{api}/api/v1/documents/{recorded.manifest_cid}") as answer:
        assert answer.read() == data_store.get_bytes(recorded.manifest_cid)
    weights = data_store.put_bytes(b"\x80\x02not a document")
    for cid, status in ((str(weights), 404), ("not-a-cid", 422)):
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"{api}/api/v1/documents/{cid}")
        assert error.value.code == status
    # a damaged copy in the API's store is not served (and is no 5xx)
    data_store.path_for(recorded.manifest_cid).write_bytes(b'{"schema": "forged"}')
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(f"{api}/api/v1/documents/{recorded.manifest_cid}")
    assert error.value.code == 404


def test_the_command_exits_6_without_documents_and_0_with_api(
    chain: Chain, recorded: RunRecorder, tmp_path: Path, api: str
) -> None:
    model = str(tmp_path / "received" / "model.pt")
    env = chain_env(chain, tmp_path / "elsewhere")
    alone = ledger("verify", model, env=env)
    assert alone.returncode == 6, alone.stderr
    assert "UNCHECKED" in alone.stdout and "--api" in alone.stdout
    helped = ledger("verify", model, "--api", api, "--json", env=env)
    assert helped.returncode == 0, helped.stdout + helped.stderr
    assert json.loads(helped.stdout)["outcome"] == "verified"
