"""Derived models on the price-forecast example: relations on chain, verification through
the lineage, taint by a revoked or broken ancestor, and ``ledger lineage``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from examples.lineage import (
    Parent,
    _quantize_dynamic,
    derive_all,
    load,
    load_quantized,
    quantized_state_dict,
)
from examples.price_forecast import Config
from ledger.chain.reader import RegistryReader
from ledger.chain.rpc import JsonRpc
from ledger.hashing.cid import Cid
from ledger.ids import Relation
from ledger.store import LocalStore, find_by_digest
from ledger.verify import Outcome, Verifier
from tests.cli.test_cli import chain_env, ledger
from tests.conftest import Chain

SMALL = Config(minutes=900, window=16, hidden=(24, 12), max_epochs=2, batch_size=64)
DERIVED = {
    "pruned": Relation.PRUNING,
    "int8": Relation.QUANTIZATION,
    "student": Relation.DISTILLATION,
    "finetuned": Relation.FINE_TUNE,
    "resumed": Relation.RESUME,
}
FILES = {
    "pruned": "pruned.pt",
    "int8": "int8.safetensors",
    "student": "student.pt",
    "finetuned": "finetuned.pt",
    "resumed": "resumed.pt",
    "base": "base.pt",
}


@pytest.fixture
def family(chain: Chain, tmp_path: Path) -> dict[str, Any]:
    settings = chain.settings(tmp_path / "ledger")
    return derive_all(SMALL, tmp_path / "out", settings, epochs=1)


def verifier(chain: Chain, tmp_path: Path) -> Verifier:
    reader = RegistryReader(JsonRpc(chain.rpc_url), chain.registry.address, chain.deploy_block)
    return Verifier(reader, LocalStore(tmp_path / "ledger" / "store"))


def test_each_derivation_records_its_parent_and_relation(
    chain: Chain, tmp_path: Path, family: dict[str, Any]
) -> None:
    base_id = bytes.fromhex(family["base"].run_id[2:])
    store = LocalStore(tmp_path / "ledger" / "store")
    for label, relation in DERIVED.items():
        run_id = bytes.fromhex(family[label].run_id[2:])
        started = chain.registry.events("RunStarted", run_id)[0]
        assert [(bytes(p["runId"]), int(p["relation"])) for p in started["parents"]] == [
            (base_id, int(relation))
        ], label
        cid = find_by_digest(store, bytes(started["manifestDigest"]))
        assert cid is not None
        manifest = json.loads(store.get_bytes(cid))
        assert manifest["parents"] == [
            {"run_id": family["base"].run_id, "relation": relation.name.lower().replace("_", "-")}
        ]
        if label == "resumed":  # the manifest names the very checkpoint file it resumed from
            recorded = {r.weights_digest for r in chain.registry.checkpoints(base_id)}
            assert Cid.parse(manifest["data"]["checkpoint"]["cid"]).digest in recorded
    v = verifier(chain, tmp_path)
    for label, name in FILES.items():
        report = v.verify_file(tmp_path / "out" / name)
        assert report.outcome is Outcome.VERIFIED, (label, report.checks)
        if label != "base":
            lineage = next(c for c in report.checks if c.name == "lineage")
            assert lineage.ok and "1 ancestor" in lineage.detail


def test_pruned_weights_are_plain_and_sparse(family: dict[str, Any], tmp_path: Path) -> None:
    state = torch.load(tmp_path / "out" / "pruned.pt", weights_only=True)
    assert not any(k.endswith(("_orig", "_mask")) for k in state)
    weights = [v for k, v in state.items() if k.endswith("weight")]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert 0.45 <= zeros <= 0.55


def test_the_int8_form_rebuilds_the_identical_quantized_model(
    family: dict[str, Any], tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    base: Parent = family["base"]
    state = load_file(str(tmp_path / "out" / "int8.safetensors"))
    assert state["net.0.weight_int8"].dtype == torch.int8
    quantized = _quantize_dynamic(load(base).eval())
    rebuilt = load_quantized(state, base.cfg)
    x = torch.randn(5, base.cfg.window)
    assert torch.equal(quantized(x), rebuilt(x))
    again = quantized_state_dict(rebuilt)
    assert set(again) == set(state)
    assert all(torch.equal(again[k], state[k]) for k in state)


def test_a_revoked_ancestor_taints_every_descendant(
    chain: Chain, tmp_path: Path, family: dict[str, Any]
) -> None:
    base = family["base"]
    chain.registry.revoke_run(bytes.fromhex(base.run_id[2:]), "series held future prices")
    v = verifier(chain, tmp_path)
    for label in DERIVED:
        report = v.verify_file(tmp_path / "out" / FILES[label])
        assert report.outcome is Outcome.REVOKED, label
        lineage = next(c for c in report.checks if c.name == "lineage")
        assert not lineage.ok
        assert base.run_id in lineage.detail and "future prices" in lineage.detail


def test_an_ancestor_whose_manifest_is_gone_or_forged_fails_the_child(
    chain: Chain, tmp_path: Path, family: dict[str, Any]
) -> None:
    base = family["base"]
    store = LocalStore(tmp_path / "ledger" / "store")
    started = chain.registry.events("RunStarted", bytes.fromhex(base.run_id[2:]))[0]
    cid = find_by_digest(store, bytes(started["manifestDigest"]))
    assert cid is not None
    original = store.path_for(cid).read_bytes()
    v = verifier(chain, tmp_path)

    store.path_for(cid).unlink()  # gone: the child cannot be checked, nothing says tampered
    report = v.verify_file(tmp_path / "out" / "student.pt")
    assert report.outcome is Outcome.UNCHECKED
    lineage = next(c for c in report.checks if c.name == "lineage")
    assert not lineage.ok and lineage.unchecked
    assert base.run_id in lineage.detail and "manifest" in lineage.detail

    store.path_for(cid).write_bytes(original.replace(b"price-forecast", b"price-forgery!"))
    report = v.verify_file(tmp_path / "out" / "finetuned.pt")
    assert report.outcome is Outcome.MISMATCH
    assert base.run_id in next(c for c in report.checks if c.name == "lineage").detail


def test_an_ancestor_whose_final_metrics_are_gone_fails_the_child(
    chain: Chain, tmp_path: Path, family: dict[str, Any]
) -> None:
    base = family["base"]
    store = LocalStore(tmp_path / "ledger" / "store")
    final = chain.registry.final_record(bytes.fromhex(base.run_id[2:]))
    assert final is not None
    cid = find_by_digest(store, final.metrics_digest)
    assert cid is not None
    store.path_for(cid).unlink()
    report = verifier(chain, tmp_path).verify_file(tmp_path / "out" / "int8.safetensors")
    assert report.outcome is Outcome.UNCHECKED
    lineage = next(c for c in report.checks if c.name == "lineage")
    assert base.run_id in lineage.detail and "metrics" in lineage.detail


def test_the_lineage_command_prints_the_tree(
    chain: Chain, tmp_path: Path, family: dict[str, Any]
) -> None:
    env = chain_env(chain, tmp_path / "ledger")
    base = family["base"]
    student = family["student"]
    chain.registry.revoke_run(bytes.fromhex(family["pruned"].run_id[2:]), "bad mask")
    out = ledger("lineage", student.run_id, "--json", env=env)
    assert out.returncode == 0, out.stderr
    tree = json.loads(out.stdout)
    assert tree["run"]["run_id"] == student.run_id
    assert [(a["run_id"], a["relation"]) for a in tree["ancestors"]] == [
        (base.run_id, "distillation")
    ]
    whole = json.loads(ledger("lineage", base.run_id, "--json", env=env).stdout)
    children = {c["run_id"]: c for c in whole["descendants"]}
    assert set(children) == {family[k].run_id for k in DERIVED}
    assert children[family["pruned"].run_id]["revoked"] is True
    assert children[family["int8"].run_id]["relation"] == "quantization"

    text = ledger("lineage", base.run_id, env=env)
    assert text.returncode == 0, text.stderr
    assert "price-forecast-int8" in text.stdout and "quantization" in text.stdout
    assert "REVOKED" in text.stdout and "bad mask" in text.stdout
