"""Provenance bundles: exported from a real Anvil and store, checked with no store.

Offline a fresh bundle is PROVEN (exit 7) as of its block; with an RPC it is
VERIFIED, and a revocation after export is found; every edit of the bundle is
refused; a bundle of another registry is refused where one is configured.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from ledger.bundle.check import verify_bundle
from ledger.bundle.export import Exporter
from ledger.chain.reader import RegistryReader
from ledger.chain.rpc import JsonRpc
from ledger.hashing.cid import file_cid
from ledger.ids import Relation
from ledger.store import LocalStore
from ledger.verify import Outcome, VerifyReport
from tests.chain.web3_registry import Registry
from tests.conftest import Chain
from tests.runs import Recorded, record_run

SCHEMA = json.loads((Path(__file__).parent / "statement_schema.json").read_text())


def reader(chain: Chain, registry: Registry | None = None) -> RegistryReader:
    address = (registry or chain.registry).address
    return RegistryReader(JsonRpc(chain.rpc_url), address, chain.deploy_block)


def lineage(registry: Registry, store: LocalStore) -> tuple[Recorded, Recorded]:
    base = record_run(registry, store, "base")
    child = record_run(
        registry,
        store,
        "child",
        parents=[(base.run_id, Relation.FINE_TUNE)],
        curve=[{"val_loss": 0.9}, {"val_loss": 0.4}],
        code={"vcs": "git", "commit": "a" * 40, "dirty": True, "uncommitted_sha256": "b" * 64},
        data={"train": {"kind": "bytes", "sha256": "c" * 64, "bytes": 10}},
        seed=7,
    )
    return base, child


def check(model: Path, bundle: dict[str, Any], **kw: Any) -> VerifyReport:
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    return verify_bundle(model, bundle, cid=file_cid(model), sha256=sha, **kw)


@pytest.fixture
def exported(
    chain: Chain, store: LocalStore, tmp_path: Path
) -> tuple[Path, dict[str, Any], Recorded, Recorded]:
    base, child = lineage(chain.registry, store)
    model = tmp_path / "model.safetensors"
    model.write_bytes(child.weights[-1])
    bundle = Exporter(reader(chain), store).export(child.run_id, weights=model)
    return model, bundle, base, child


def test_fresh_bundle_is_proven_offline(exported: Any) -> None:
    model, bundle, _, child = exported
    report = check(model, bundle)
    assert report.outcome is Outcome.PROVEN, report.failed
    assert report.outcome.exit_code == 7
    assert report.run_id == "0x" + child.run_id.hex()
    names = {c.name for c in report.checks}
    assert {"headers", "receipts", "state proof", "statement", "lineage", "subject"} <= names
    revoked = next(c for c in report.checks if c.name == "run not revoked")
    assert f"as of block {bundle['chain']['asOfBlock']}" in revoked.detail
    assert "not checked" in revoked.detail


def test_statement_is_in_toto_slsa(exported: Any, chain: Chain) -> None:
    model, bundle, base, child = exported
    statement = bundle["statement"]
    jsonschema.validate(statement, SCHEMA)
    subject = statement["subject"][0]
    assert subject["name"] == "model.safetensors"
    assert subject["digest"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert subject["digest"]["ledgerCid"] == file_cid(model).digest.hex()
    assert subject["digest"]["ledgerTensorRoot"] == child.tensor_root.hex()  # type: ignore[union-attr]
    build = statement["predicate"]["buildDefinition"]
    assert build["buildType"] == "ledger:ledger.manifest/v1"
    assert build["externalParameters"]["name"] == "child"
    assert build["externalParameters"]["seed"] == 7
    deps = {d["name"]: d for d in build["resolvedDependencies"]}
    assert deps["code"]["digest"] == {"gitCommit": "a" * 40}
    assert deps["code:uncommitted"]["digest"] == {"sha256": "b" * 64}
    assert deps["data:train"]["digest"] == {"sha256": "c" * 64}
    parent = deps[f"parent:0x{base.run_id.hex()}"]
    assert parent["annotations"]["relation"] == "fine-tune"
    assert parent["digest"]["ledgerCid"] == base.final_cid.digest.hex()  # type: ignore[union-attr]
    details = statement["predicate"]["runDetails"]
    chain_id = chain.w3.eth.chain_id
    assert details["builder"]["id"] == f"eip155:{chain_id}:{chain.registry.address}"
    assert details["metadata"]["invocationId"] == "0x" + child.run_id.hex()
    steps = [
        b["annotations"]["step"]
        for b in details["byproducts"]
        if "step" in b.get("annotations", {})
    ]
    assert steps == [0, 1]


def test_with_rpc_verified_and_revocation_after_export(exported: Any, chain: Chain) -> None:
    model, bundle, base, _ = exported
    assert check(model, bundle, rpcs=[chain.rpc_url]).outcome is Outcome.VERIFIED
    chain.registry.revoke_run(base.run_id, "poisoned data")
    offline = check(model, bundle)
    assert offline.outcome is Outcome.PROVEN  # the bundle cannot know: it says so
    online = check(model, bundle, rpcs=[chain.rpc_url])
    assert online.outcome is Outcome.REVOKED
    assert any("revoked as of block" in c.detail and not c.ok for c in online.checks)


def test_with_rpc_a_dataset_revoked_after_export(exported: Any, chain: Chain) -> None:
    from ledger.bundle.export import artifact_slot
    from ledger.chain.anvil import rpc_call
    from ledger.datasets import dataset_cid

    model, bundle, _, _ = exported
    dataset = dataset_cid({"kind": "bytes", "sha256": "c" * 64, "bytes": 10})  # the child's
    tx = chain.registry.revoke_artifact(dataset.digest, "consent withdrawn")
    # the slot the check proves holds the block of the revocation (the storage layout)
    word = rpc_call(
        chain.rpc_url,
        "eth_getStorageAt",
        [chain.registry.address, "0x" + artifact_slot(dataset.digest).hex(), "latest"],
    )
    assert int(word, 16) == tx.block_number
    offline = check(model, bundle)  # offline: as of its block, which cannot know
    assert offline.outcome is not Outcome.REVOKED
    assert not any(str(dataset) in c.detail for c in offline.checks)
    online = check(model, bundle, rpcs=[chain.rpc_url])
    assert online.outcome is Outcome.REVOKED
    named = [c for c in online.checks if str(dataset) in c.detail]
    assert len(named) == 1 and not named[0].ok and "consent" not in named[0].detail
    assert named[0].name.startswith("dataset ") and named[0].name.endswith("not revoked")
    assert f"revoked in block {tx.block_number}" in named[0].detail


def test_every_rpc_must_agree(exported: Any, chain: Chain) -> None:
    model, bundle, _, _ = exported
    report = check(model, bundle, rpcs=[chain.rpc_url, "http://127.0.0.1:9"])
    assert report.outcome is Outcome.MISMATCH
    assert [c.name for c in report.failed] == ["rpc http://127.0.0.1:9"]


def test_ancestor_revoked_before_export(chain: Chain, store: LocalStore, tmp_path: Path) -> None:
    base, child = lineage(chain.registry, store)
    chain.registry.revoke_run(base.run_id, "leaked test set")
    model = tmp_path / "model.bin"
    model.write_bytes(child.weights[-1])
    bundle = Exporter(reader(chain), store).export(child.run_id, weights=model)
    report = check(model, bundle)
    assert report.outcome is Outcome.REVOKED
    assert any("leaked test set" in c.detail for c in report.checks if not c.ok)


def _log(bundle: dict[str, Any]) -> dict[str, Any]:
    return bundle["chain"]["receipts"][-1]["receipt"]["logs"][0]


def _flip(text: str) -> str:
    return text[:-1] + ("0" if text[-1] != "0" else "1")


EDITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "document": lambda b: b["documents"].update(
        {k: v.replace("child", "chi1d") for k, v in b["documents"].items()}
    ),
    "statement": lambda b: b["statement"]["predicate"]["buildDefinition"][
        "externalParameters"
    ].update(seed=8),
    "log": lambda b: _log(b).update(data=_flip(_log(b)["data"])),
    "receipt": lambda b: b["chain"]["receipts"][0]["receipt"].update(cumulativeGasUsed="0x1"),
    "proof node": lambda b: b["chain"]["receipts"][0]["proof"].__setitem__(
        0, _flip(b["chain"]["receipts"][0]["proof"][0])
    ),
    "header": lambda b: b["chain"]["headers"][0].update(gasUsed="0x1"),
    "header and hash": lambda b: b["chain"]["headers"][-1].update(stateRoot="0x" + "11" * 32),
    "storage proof": lambda b: (
        b["chain"]["state"]["storageProof"][0].update(value="0x0")
        or b["chain"]["state"]["storageProof"][0]["proof"].__setitem__(
            -1, _flip(b["chain"]["state"]["storageProof"][0]["proof"][-1])
        )
    ),
    "chain id": lambda b: b["chain"].update(chainId=1),
    "registry": lambda b: b["chain"].update(registry="0x" + "22" * 20),
    "subject": lambda b: b["statement"]["subject"][0]["digest"].update(sha256="0" * 64),
    "dropped checkpoint": lambda b: b["chain"]["receipts"].pop(1),
    # nested past Python's limit: a verdict, not a RecursionError
    "documents nested too deep": lambda b: b["documents"].update(
        {k: "[" * 100_000 + "]" * 100_000 for k in b["documents"]}
    ),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_every_edit_is_refused(exported: Any, edit: str) -> None:
    model, bundle, _, _ = exported
    edited = copy.deepcopy(bundle)
    EDITS[edit](edited)
    report = check(model, edited)
    assert report.outcome is Outcome.MISMATCH, (edit, report.checks)
    assert report.failed


def test_other_weights_are_not_the_subject(exported: Any, tmp_path: Path) -> None:
    _, bundle, _base, _ = exported
    other = tmp_path / "other.bin"
    other.write_bytes(b"not the model")
    report = check(other, bundle)
    assert report.outcome is Outcome.MISMATCH
    assert [c.name for c in report.failed] == ["subject"]


def test_bundle_of_another_registry(chain: Chain, store: LocalStore, tmp_path: Path) -> None:
    other, _ = Registry.deploy(chain.w3, chain.admin)
    run = record_run(other, store, "elsewhere")
    model = tmp_path / "model.bin"
    model.write_bytes(run.weights[-1])
    bundle = Exporter(reader(chain, other), store).export(run.run_id, weights=model)
    chain_id = chain.w3.eth.chain_id
    assert check(model, bundle).outcome is Outcome.PROVEN
    expected = check(model, bundle, registry=chain.registry.address, chain_id=chain_id)
    assert expected.outcome is Outcome.MISMATCH
    assert [c.name for c in expected.failed] == ["registry"]
    other_chain = check(model, bundle, registry=other.address, chain_id=chain_id + 1)
    assert other_chain.outcome is Outcome.MISMATCH


def ledger(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")} | env
    full["PYTHONPATH"] = str(Path(__file__).parents[2])
    return subprocess.run(
        [sys.executable, "-m", "ledger", *args],
        cwd=cwd,
        env=full,
        text=True,
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_cli_export_then_verify_in_an_empty_folder(chain: Chain, tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = chain.settings(home)
    _base, child = lineage(chain.registry, LocalStore(settings.store_dir))
    work = tmp_path / "trainer"
    work.mkdir()
    model = work / "model.pt"
    model.write_bytes(child.weights[-1])
    done = ledger(work, "export", str(model), env={"LEDGER_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    bundle = work / "model.pt.provenance.json"
    # the committer's key is at hand (Anvil's dev key): the Statement is signed by default
    envelope = json.loads(bundle.read_text())["envelope"]
    assert envelope["signatures"][0]["keyid"] == chain.admin.address
    assert f"signed by {chain.admin.address}" in done.stdout
    statement = ledger(
        work,
        "export",
        "0x" + child.run_id.hex(),
        "--statement-only",
        env={"LEDGER_HOME": str(home)},
    )
    assert json.loads(statement.stdout)["_type"] == "https://in-toto.io/Statement/v1"
    # a machine with nothing of the trainer's: no data directory, no store, no RPC
    empty = tmp_path / "auditor"
    empty.mkdir()
    shutil.copy(model, empty / "model.pt")
    shutil.copy(bundle, empty / "model.pt.provenance.json")
    nothing = {"LEDGER_HOME": str(empty / ".ledger"), "LEDGER_RPC_URL": "http://127.0.0.1:9"}
    offline = ledger(
        empty, "verify", "model.pt", "--bundle", "model.pt.provenance.json", "--json", env=nothing
    )
    assert offline.returncode == 7, offline.stdout + offline.stderr
    assert json.loads(offline.stdout)["outcome"] == "proven"
    checks = {c["name"]: c for c in json.loads(offline.stdout)["checks"]}
    assert checks["signature"]["ok"] and chain.admin.address in checks["signature"]["detail"]
    text = ledger(empty, "verify", "model.pt", "--bundle", "model.pt.provenance.json", env=nothing)
    assert text.returncode == 7 and "PROVEN" in text.stdout
    online = ledger(
        empty,
        "verify",
        "model.pt",
        "--bundle",
        "model.pt.provenance.json",
        "--rpc",
        chain.rpc_url,
        env=nothing,
    )
    assert online.returncode == 0, online.stdout + online.stderr
    assert not (empty / ".ledger").exists()


def test_verify_bundle_hashes_the_file_once(exported: Any, tmp_path: Path) -> None:
    """The console script's early hash of ``verify FILE --bundle B`` is the CID and the
    sha256 together, and the bundle check takes it instead of hashing the file again."""
    from ledger.cli import _early
    from ledger.cli.bundle import check_with_bundle

    model, bundle, _, _ = exported
    path = tmp_path / "b.provenance.json"
    path.write_text(json.dumps(bundle))
    _early.start(["verify", str(model), "--bundle", str(path), "--json"])
    assert _early.started()
    assert _early._early is not None and _early._early.with_sha256
    code = check_with_bundle(model, path, rpcs=[], data_dir=tmp_path / "none", as_json=True)
    assert code == 7
    assert not _early.started()  # taken: no second hash of the file
