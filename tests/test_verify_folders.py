"""A model folder verifies only if every set of weights a loader may read from it
holds the recorded tensors: ``transformers`` reads ``model.safetensors`` before
the index, safetensors before torch files, and a file ``config.json`` names
under ``transformers_weights``; a sharded checkpoint's folder that also holds
Hugging Face weights is not clean either. Real Anvil, real files."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from ledger.store import LocalStore
from ledger.verify import Outcome
from tests.conftest import Chain
from tests.hashing.test_tensors import make_state_dict, save_sharded
from tests.test_verify_claimants import final_run, verifier


def evil_of(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: torch.full_like(t, 66) for name, t in state.items()}


def test_every_layout_a_loader_may_read_must_hold_the_recorded_tensors(
    chain: Chain,
    store: LocalStore,
    tmp_path: Path,
) -> None:
    state = make_state_dict()
    recorded = tmp_path / "recorded.safetensors"
    save_file(state, str(recorded))
    final_run(chain, store, recorded)
    check = verifier(chain, store)

    clean = tmp_path / "clean"
    save_sharded(state, clean, shards=2)
    save_file(state, str(clean / "model.safetensors"))  # both layouts, the same tensors
    torch.save(state, clean / "pytorch_model.bin")
    report = check.verify_file(clean)
    assert report.outcome is Outcome.VERIFIED, report.checks

    # the recorded shards for ledger's eyes, other weights where transformers looks first
    first = tmp_path / "single-first"
    save_sharded(state, first, shards=2)
    save_file(evil_of(state), str(first / "model.safetensors"))
    assert check.verify_file(first).outcome is not Outcome.VERIFIED

    def mismatch_naming(folder: Path, name: str) -> None:
        report = check.verify_file(folder)
        assert report.outcome is Outcome.MISMATCH
        assert name in " ".join(c.detail for c in report.failed)

    # the recorded single file, other tensors behind the index
    behind = tmp_path / "index-behind"
    save_sharded(evil_of(state), behind, shards=2)
    save_file(state, str(behind / "model.safetensors"))
    mismatch_naming(behind, "model.safetensors.index.json")

    # torch weights beside safetensors: a loader asked for .bin reads them
    beside = tmp_path / "bin-beside"
    beside.mkdir()
    save_file(state, str(beside / "model.safetensors"))
    torch.save(evil_of(state), beside / "pytorch_model.bin")
    mismatch_naming(beside, "pytorch_model.bin")

    # config.json naming another file for transformers to load
    redirected = tmp_path / "redirected"
    redirected.mkdir()
    save_file(state, str(redirected / "model.safetensors"))
    save_file(evil_of(state), str(redirected / "other.safetensors"))
    config = {"transformers_weights": "other.safetensors"}
    (redirected / "config.json").write_text(json.dumps(config))
    mismatch_naming(redirected, "other.safetensors")


def test_a_sharded_checkpoint_folder_holding_hugging_face_weights_is_not_clean(
    chain: Chain,
    store: LocalStore,
    tmp_path: Path,
) -> None:
    import pytest

    dcp = pytest.importorskip("torch.distributed.checkpoint")
    state = make_state_dict()
    folder = tmp_path / "step-000001"
    dcp.save(state, checkpoint_id=folder, no_dist=True)
    final_run(chain, store, folder)
    check = verifier(chain, store)
    assert check.verify_file(folder).outcome is Outcome.VERIFIED
    save_file(evil_of(state), str(folder / "model.safetensors"))
    report = check.verify_file(folder)
    assert report.outcome is not Outcome.VERIFIED
    assert "model.safetensors" in " ".join(c.detail for c in report.failed)
