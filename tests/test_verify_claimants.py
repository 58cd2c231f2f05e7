"""Several runs claiming the same weights: the origin, the other claimants, revocations.

Anyone with the committer role can record an existing file (or a re-saved copy
of its tensors) as their own run's weights. ``verify`` names the earliest record
as the origin, lists the others, and a revocation of any of them (or of one of
their ancestors) makes the verdict REVOKED. Real Anvil, real files, a LocalStore.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ledger.chain.reader import RegistryReader
from ledger.chain.rpc import JsonRpc
from ledger.ids import Relation
from ledger.store import LocalStore
from ledger.verify import Outcome, Verifier
from tests.conftest import Chain
from tests.hashing.test_tensors import make_state_dict
from tests.recorder import RunRecorder
from tests.runs import manifest


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    torch.save(make_state_dict(), path)
    return path


@pytest.fixture
def resaved(tmp_path: Path) -> Path:
    """The same tensors as ``model``, in another file (another CID)."""
    path = tmp_path / "model.safetensors"
    save_file(make_state_dict(), str(path))
    return path


def verifier(chain: Chain, store: LocalStore) -> Verifier:
    reader = RegistryReader(JsonRpc(chain.rpc_url), chain.registry.address, chain.deploy_block)
    return Verifier(reader, store)


def recorder(chain: Chain, store: LocalStore, who: str = "admin") -> RunRecorder:
    account = getattr(chain, who)
    if who != "admin":
        chain.registry.grant_committer(account.address)
    return RunRecorder(chain.as_(account), store)


def final_run(
    chain: Chain,
    store: LocalStore,
    weights: Path,
    *,
    who: str = "admin",
    name: str = "run",
    parents: list[tuple[bytes, Relation]] | None = None,
) -> RunRecorder:
    rec = recorder(chain, store, who)
    rec.start(manifest(name, parents or []), parents or [])
    rec.finalize(weights, {"loss": 0.1})
    return rec


def test_the_earliest_record_is_the_origin_and_later_claimants_are_listed(
    chain: Chain, store: LocalStore, model: Path
) -> None:
    # the origin records the file as a checkpoint; a later run claims it as its final weights
    origin = recorder(chain, store)
    origin.start(manifest("origin"))
    origin.checkpoint(0, model, {"loss": 0.2})
    claimant = final_run(chain, store, model, who="alice", name="copycat")

    report = verifier(chain, store).verify_file(model)
    assert report.outcome is Outcome.VERIFIED, report.failed
    assert report.run_id == origin.run_id_hex
    assert report.origin is not None and report.origin["run_id"] == origin.run_id_hex
    assert [c["run_id"] for c in report.claimants] == [claimant.run_id_hex]
    other = report.claimants[0]
    assert other["committer"] == chain.alice.address and other["matched_by"] == "file"
    assert other["block"] > report.origin["block"]
    json = report.to_json()
    assert json["origin"]["run_id"] == origin.run_id_hex
    assert json["claimants"][0]["run_id"] == claimant.run_id_hex
    # only one tensor root was claimed and no other file holds it: tensors were not read
    assert report.tensor_root is None


def test_a_later_claim_of_a_copy_does_not_hide_a_revoked_origin(
    chain: Chain, store: LocalStore, model: Path, resaved: Path
) -> None:
    origin = final_run(chain, store, model, name="leaky")
    chain.registry.revoke_run(origin._require_run(), "trained on the test set")
    # someone records a re-saved copy (another CID, the same tensors) as their own run
    laundered = final_run(chain, store, resaved, who="alice", name="clean, honest")

    report = verifier(chain, store).verify_file(resaved)
    assert report.outcome is Outcome.REVOKED
    assert report.origin is not None and report.origin["run_id"] == origin.run_id_hex
    assert report.origin["matched_by"] == "tensors"
    assert [c["run_id"] for c in report.claimants] == [laundered.run_id_hex]
    revoked = [c for c in report.failed if "revoked" in c.detail]
    assert revoked and origin.run_id_hex in revoked[0].detail
    assert "trained on the test set" in revoked[0].detail
    # the file found by CID had its tensor root checked against the other records
    assert report.tensor_root is not None


def test_a_revoked_later_claimant_or_its_revoked_ancestor_makes_the_verdict_revoked(
    chain: Chain, store: LocalStore, model: Path
) -> None:
    origin = final_run(chain, store, model, name="origin")
    # an unrelated run, revoked, is the parent of a run that claims the origin's file
    tainted_parent = recorder(chain, store)
    tainted_parent.start(manifest("tainted parent"))
    chain.registry.revoke_run(tainted_parent._require_run(), "poisoned data")
    child = final_run(
        chain,
        store,
        model,
        who="alice",
        name="child",
        parents=[(tainted_parent._require_run(), Relation.FINE_TUNE)],
    )
    report = verifier(chain, store).verify_file(model)
    assert report.outcome is Outcome.REVOKED
    assert report.run_id == origin.run_id_hex
    claims = [c for c in report.failed if c.name == "claimants"]
    assert claims and child.run_id_hex in claims[0].detail
    assert tainted_parent.run_id_hex in claims[0].detail and "poisoned data" in claims[0].detail

    # a later claimant revoked itself
    other = final_run(chain, store, model, who="bob", name="other")
    chain.as_(chain.admin).revoke_run(other._require_run(), "false claim")
    report = verifier(chain, store).verify_file(model)
    assert report.outcome is Outcome.REVOKED
    detail = next(c for c in report.failed if c.name == "claimants").detail
    assert other.run_id_hex in detail and "false claim" in detail


def test_a_run_named_with_run_that_only_claimed_the_weights_later_is_not_their_origin(
    chain: Chain, store: LocalStore, model: Path
) -> None:
    origin = final_run(chain, store, model, name="origin")
    copy = final_run(chain, store, model, who="alice", name="copy")
    v = verifier(chain, store)
    report = v.verify_file(model, expected_run=copy._require_run())
    assert report.outcome is Outcome.MISMATCH
    assert report.run_id == copy.run_id_hex
    check = next(c for c in report.failed if c.name == "origin")
    assert origin.run_id_hex in check.detail
    # a run derived from the origin (e.g. resumed without training) may record them again
    resumed = final_run(
        chain,
        store,
        model,
        who="bob",
        name="resumed",
        parents=[(origin._require_run(), Relation.RESUME)],
    )
    report = v.verify_file(model, expected_run=resumed._require_run())
    assert report.outcome is Outcome.VERIFIED, report.failed
    assert next(c for c in report.checks if c.name == "origin").ok


def test_claimants_disagreeing_on_the_tensor_root_are_settled_by_reading_the_file(
    chain: Chain, store: LocalStore, model: Path
) -> None:
    origin = final_run(chain, store, model, name="origin")
    # a claimant records the same file CID with a tensor root it does not hold
    liar = recorder(chain, store, "alice")
    liar.start(manifest("liar"))
    from ledger.hashing.tensors import tensor_digest

    real = tensor_digest(model)
    bogus = replace(real, root=os.urandom(32))
    liar.finalize(model, {"loss": 0.3}, tensors=bogus)

    report = verifier(chain, store).verify_file(model)
    assert report.run_id == origin.run_id_hex
    assert report.tensor_root == real.root.hex()
    assert report.outcome is Outcome.VERIFIED, report.failed
    listed = {c["run_id"]: c for c in report.claimants}
    assert listed[liar.run_id_hex]["tensor_root_ok"] is False


def test_a_copy_recorded_with_a_made_up_tensor_root_does_not_hide_a_revoked_origin(
    chain: Chain, store: LocalStore, model: Path, resaved: Path
) -> None:
    from ledger.hashing.tensors import tensor_digest

    origin = final_run(chain, store, model, name="leaky")
    chain.registry.revoke_run(origin._require_run(), "trained on the test set")
    # the launderer records the re-saved copy's CID under a tensor root it does not
    # hold, so no record of the copy's CID names the origin's root
    launderer = recorder(chain, store, "alice")
    launderer.start(manifest("fresh"))
    bogus = replace(tensor_digest(resaved), root=os.urandom(32))
    launderer.finalize(resaved, {"loss": 0.2}, tensors=bogus)

    report = verifier(chain, store).verify_file(resaved)
    # a revocation exists on the registry, so the file's real tensors are read
    assert report.tensor_root == tensor_digest(resaved).root.hex()
    assert report.outcome is Outcome.REVOKED, report.failed
    assert report.origin is not None and report.origin["run_id"] == origin.run_id_hex
    revoked = [c for c in report.failed if "revoked" in c.detail]
    assert revoked and "trained on the test set" in revoked[0].detail
