"""Commit and verify flows end to end: the hook, a real Anvil, the real contract, a LocalStore."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from ledger.chain.records import RunStatus
from ledger.config import Secret
from ledger.errors import BadIdError, InputError, TransactionRevertedError
from ledger.hashing.merkle import CheckpointLeaf, checkpoint_root
from ledger.hashing.tensors import state_dict_digest, tensor_digest
from ledger.store import LocalStore, find_by_digest
from ledger.training.hook import LedgerRun
from ledger.verify import Outcome, Verifier, VerifyReport
from tests.conftest import Chain
from tests.hashing.test_tensors import lightning_checkpoint, save_sharded
from tests.recorder import RunRecorder


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(torch.relu(self.fc1(x)))
        return out


def train(
    chain: Chain,
    tmp_path: Path,
    *,
    epochs: int = 3,
    name: str = "tiny",
    parents: list[tuple[str, str]] | None = None,
    out: str = "model.pt",
    seed: int = 0,
) -> LedgerRun:
    torch.manual_seed(seed)
    model = Tiny()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    with LedgerRun(
        model,
        name=name,
        config={"lr": 0.1, "epochs": epochs},
        out=tmp_path / out,
        data={"x": x},
        seed=seed,
        parents=parents or [],
        settings=chain.settings(tmp_path / "ledger"),
    ) as run:
        fit(run, model, optimiser, x, y, epochs)
    return run


def fit(
    run: LedgerRun,
    forward: nn.Module,
    optimiser: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
) -> None:
    """Full-batch epochs, each ending with ``run.epoch_end`` and its loss."""
    for epoch in range(epochs):
        optimiser.zero_grad()
        loss = nn.functional.mse_loss(forward(x), y)
        loss.backward()
        optimiser.step()
        run.epoch_end(epoch, {"loss": float(loss.detach())})


def verifier(chain: Chain, tmp_path: Path) -> Verifier:
    return Verifier(chain.registry, LocalStore(tmp_path / "ledger" / "store"))


def manifest_digest_of(chain: Chain, run_id: bytes) -> bytes:
    return bytes(chain.registry.events("RunStarted", run_id)[0]["manifestDigest"])


def failed_checks(report: VerifyReport) -> list[str]:
    return [c.name for c in report.checks if not c.ok]


def test_a_trained_model_is_committed_and_verifies(chain: Chain, tmp_path: Path) -> None:
    run = train(chain, tmp_path, epochs=3)
    run_id = bytes.fromhex(run.run_id[2:])
    record = chain.registry.get_run(run_id)
    assert record.status is RunStatus.FINALIZED
    assert record.committer == chain.admin.address

    leaves = [
        CheckpointLeaf(c.step or 0, c.file_cid.digest, c.tensor_root, c.metrics_cid.digest)
        for c in run.commits
    ]
    assert [c.step for c in run.commits] == [0, 1, 2]
    final = chain.registry.final_record(run_id)
    assert final is not None and final.final is not None
    assert final.final.checkpoint_root == checkpoint_root(leaves) != b"\x00" * 32
    assert final.final.checkpoint_count == 3
    assert record.final_commitment == final.final.commitment

    report = verifier(chain, tmp_path).verify_file(tmp_path / "model.pt")
    assert report.outcome is Outcome.VERIFIED, report.checks
    assert report.run_id == run.run_id and report.is_final and report.matched_by == "file"
    assert not failed_checks(report)
    names = {c.name for c in report.checks}
    assert {"run manifest", "metrics", "metrics binding", "run committer"} <= names


def test_a_checkpoint_file_verifies_as_that_checkpoint(chain: Chain, tmp_path: Path) -> None:
    train(chain, tmp_path, epochs=3)
    checkpoint = tmp_path / "model-checkpoints" / "step-000001.pt"
    report = verifier(chain, tmp_path).verify_file(checkpoint)
    assert report.outcome is Outcome.VERIFIED
    assert (report.is_final, report.step) == (False, 1)
    proof = next(c for c in report.checks if c.name == "checkpoint proof")
    assert proof.ok and "3 checkpoints" in proof.detail


def test_the_final_record_is_checked_against_the_stored_commitment(
    chain: Chain, tmp_path: Path
) -> None:
    train(chain, tmp_path)
    report = verifier(chain, tmp_path).verify_file(tmp_path / "model.pt")
    commitment = next(c for c in report.checks if c.name == "final commitment")
    assert commitment.ok


def test_same_weights_resaved_or_as_safetensors_verify_by_tensor_root(
    chain: Chain, tmp_path: Path
) -> None:
    train(chain, tmp_path)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    torch.save(state, tmp_path / "renamed-copy.pt")
    save_file(state, str(tmp_path / "model.safetensors"))
    assert (tmp_path / "renamed-copy.pt").read_bytes() != (tmp_path / "model.pt").read_bytes()
    for name in ("renamed-copy.pt", "model.safetensors"):
        report = verifier(chain, tmp_path).verify_file(tmp_path / name)
        assert report.outcome is Outcome.VERIFIED, (name, report.checks)
        assert report.matched_by == "tensors"
        container = next(c for c in report.checks if c.name == "container")
        assert "identical tensors" in container.detail


def test_one_changed_element_is_named_by_tensor(chain: Chain, tmp_path: Path) -> None:
    run = train(chain, tmp_path)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    state["fc2.weight"][0, 3] += 1e-3
    torch.save(state, tmp_path / "model.pt.tampered")

    v = verifier(chain, tmp_path)
    assert v.verify_file(tmp_path / "model.pt.tampered").outcome is Outcome.UNKNOWN
    report = v.verify_file(
        tmp_path / "model.pt.tampered", expected_run=bytes.fromhex(run.run_id[2:])
    )
    assert report.outcome is Outcome.MISMATCH
    assert report.tensor_diff is not None
    assert report.tensor_diff.changed == ("fc2.weight",)
    assert not report.tensor_diff.added and not report.tensor_diff.removed


def test_one_tensor_root_across_names_formats_ckpt_and_sharded_folders(
    chain: Chain, tmp_path: Path
) -> None:
    run = train(chain, tmp_path)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    root = state_dict_digest(state).root
    copies = tmp_path / "copies"
    copies.mkdir()
    torch.save(state, copies / "first-name.pt")
    torch.save(state, copies / "second-name.pth")
    save_file(state, str(copies / "model.safetensors"))
    torch.save(lightning_checkpoint(state), copies / "epoch=2-step=3.ckpt")
    save_sharded(state, copies / "hf-sharded", shards=2)
    (copies / "hf-single").mkdir()
    save_file(state, str(copies / "hf-single" / "model.safetensors"))
    targets = [
        "first-name.pt",
        "second-name.pth",
        "model.safetensors",
        "epoch=2-step=3.ckpt",
        "hf-sharded",
        "hf-single",
    ]
    v = verifier(chain, tmp_path)
    for name in targets:
        assert tensor_digest(copies / name).root == root, name
        report = v.verify_file(copies / name)
        assert report.outcome is Outcome.VERIFIED, (name, report.checks)
        assert report.matched_by == "tensors" and report.run_id == run.run_id
        assert report.tensor_root == root.hex()
    folder = v.verify_file(copies / "hf-sharded")
    assert folder.is_folder and folder.file_cid is None
    assert folder.files == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    assert "no file CID" in next(c.detail for c in folder.checks if c.name == "record")
    assert folder.to_json()["kind"] == "folder"


def test_a_changed_tensor_in_a_sharded_folder_is_named(chain: Chain, tmp_path: Path) -> None:
    run = train(chain, tmp_path)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    state["fc1.bias"][2] -= 0.5
    save_sharded(state, tmp_path / "hf", shards=2)
    v = verifier(chain, tmp_path)
    unknown = v.verify_file(tmp_path / "hf")
    assert unknown.outcome is Outcome.UNKNOWN
    assert "tensor root is not recorded" in unknown.checks[-1].detail
    report = v.verify_file(tmp_path / "hf", expected_run=bytes.fromhex(run.run_id[2:]))
    assert report.outcome is Outcome.MISMATCH
    assert report.tensor_diff is not None and report.tensor_diff.changed == ("fc1.bias",)
    assert "file CID" not in {c.name for c in report.checks}


@pytest.mark.parametrize("damage", ["flip", "truncate", "append"])
def test_damaged_files_are_not_verified(chain: Chain, tmp_path: Path, damage: str) -> None:
    train(chain, tmp_path)
    data = bytearray((tmp_path / "model.pt").read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) - 100]
    else:
        data += b"\x00"
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(bytes(data))
    report = verifier(chain, tmp_path).verify_file(damaged)
    assert report.outcome in (Outcome.UNKNOWN, Outcome.MISMATCH)
    if damage == "append":  # torch still reads it: same tensors, but an unclean container
        assert report.outcome is Outcome.MISMATCH
        assert failed_checks(report) == ["container"]
        assert "appended" in next(c.detail for c in report.checks if c.name == "container")


def test_a_pickle_with_code_is_never_run(chain: Chain, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"weight": Evil()}))
    report = verifier(chain, tmp_path).verify_file(evil)
    assert not marker.exists()
    assert report.outcome is Outcome.UNKNOWN
    tensors_check = next(c for c in report.checks if c.name == "tensors")
    assert not tensors_check.ok and "refused to load" in tensors_check.detail


def test_an_exception_in_training_marks_the_run_failed(chain: Chain, tmp_path: Path) -> None:
    model = Tiny()
    run = LedgerRun(
        model,
        name="crash",
        config={},
        out=tmp_path / "never.pt",
        settings=chain.settings(tmp_path / "ledger"),
    )
    with pytest.raises(RuntimeError, match="diverged"), run:
        run.epoch_end(0, {"loss": 1.0})
        raise RuntimeError("loss diverged")
    record = chain.registry.get_run(bytes.fromhex(run.run_id[2:]))
    assert record.status is RunStatus.FAILED
    assert not (tmp_path / "never.pt").exists()
    events = chain.registry.events("RunFailed", record.run_id)
    assert events[0]["reason"] == "RuntimeError: loss diverged"
    # the checkpoint taken before the crash is genuine and still verifies
    report = verifier(chain, tmp_path).verify_file(
        tmp_path / "never-checkpoints" / "step-000000.pt"
    )
    assert report.outcome is Outcome.VERIFIED
    assert any(c.name == "run status" and "failed" in c.detail for c in report.checks)


def test_revocation_taints_the_run_and_its_descendants(chain: Chain, tmp_path: Path) -> None:
    parent = train(chain, tmp_path / "p", name="base")
    child = train(
        chain, tmp_path / "c", name="tuned", parents=[(parent.run_id, "fine-tune")], seed=1
    )
    parent_id = bytes.fromhex(parent.run_id[2:])
    started = chain.registry.events("RunStarted", bytes.fromhex(child.run_id[2:]))[0]
    assert [(bytes(p["runId"]), p["relation"]) for p in started["parents"]] == [(parent_id, 1)]

    # the child's store must also hold the parent's manifest and final metrics for the
    # lineage walk (an ancestor verifies only if its documents do)
    child_store = LocalStore(tmp_path / "c" / "ledger" / "store")
    parent_store = LocalStore(tmp_path / "p" / "ledger" / "store")
    final = chain.registry.final_record(parent_id)
    assert final is not None
    for digest in (manifest_digest_of(chain, parent_id), final.metrics_digest):
        cid = find_by_digest(parent_store, digest)
        assert cid is not None
        child_store.put_bytes(parent_store.get_bytes(cid))

    v = verifier(chain, tmp_path / "c")
    assert v.verify_file(tmp_path / "c" / "model.pt").outcome is Outcome.VERIFIED

    chain.registry.revoke_run(parent_id, "trained on leaked test data")
    report = v.verify_file(tmp_path / "c" / "model.pt")
    assert report.outcome is Outcome.REVOKED
    ancestor = [c for c in report.checks if c.name.startswith("ancestor") and not c.ok]
    assert ancestor and "leaked test data" in ancestor[0].detail
    assert parent.run_id[:14] in ancestor[0].name

    own = verifier(chain, tmp_path / "p").verify_file(tmp_path / "p" / "model.pt")
    assert own.outcome is Outcome.REVOKED


def test_changed_or_missing_store_documents_are_a_mismatch(chain: Chain, tmp_path: Path) -> None:
    run = train(chain, tmp_path)
    store = LocalStore(tmp_path / "ledger" / "store")
    record = chain.registry.get_run(bytes.fromhex(run.run_id[2:]))
    manifest_cid = find_by_digest(store, manifest_digest_of(chain, record.run_id))
    assert manifest_cid is not None
    store.path_for(manifest_cid).write_bytes(b'{"schema":"forged"}')
    report = verifier(chain, tmp_path).verify_file(tmp_path / "model.pt")
    assert report.outcome is Outcome.MISMATCH
    assert "run manifest" in failed_checks(report)

    assert run.final is not None
    store.path_for(run.final.metrics_cid).unlink()
    report = verifier(chain, tmp_path).verify_file(tmp_path / "model.pt")
    assert {"run manifest", "metrics"} <= set(failed_checks(report))


def test_a_committer_who_lost_the_role_no_longer_verifies(chain: Chain, tmp_path: Path) -> None:
    chain.registry.grant_committer(chain.alice.address)
    settings = chain.settings(tmp_path / "ledger").with_overrides(
        private_key=Secret("0x" + bytes(chain.alice.key).hex())
    )
    model = Tiny()
    with LedgerRun(model, name="alice", config={}, out=tmp_path / "model.pt", settings=settings):
        pass
    v = verifier(chain, tmp_path)
    assert v.verify_file(tmp_path / "model.pt").outcome is Outcome.VERIFIED
    chain.registry.revoke_committer(chain.alice.address)
    report = v.verify_file(tmp_path / "model.pt")
    assert report.outcome is Outcome.MISMATCH
    assert failed_checks(report) == ["run committer"]


def test_a_retried_start_is_refused_not_duplicated(chain: Chain, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    manifest = {"schema": "ledger.manifest/v1", "name": "same", "created_at": "fixed"}
    first = RunRecorder(chain.registry, store)
    run_id = first.start(manifest)
    with pytest.raises(TransactionRevertedError) as info:
        RunRecorder(chain.registry, store).start(manifest)
    assert info.value.error_name == "RegistryRunExists"
    assert info.value.error_args == (run_id,)


def test_a_file_that_is_no_weights_is_unknown_with_a_reason(chain: Chain, tmp_path: Path) -> None:
    junk = tmp_path / "notes.safetensors"
    junk.write_bytes(struct.pack("<Q", 10) + b"not json!!")
    report = verifier(chain, tmp_path).verify_file(junk)
    assert report.outcome is Outcome.UNKNOWN
    detail = next(c.detail for c in report.checks if c.name == "tensors")
    assert "notes.safetensors" in detail and "not JSON" in detail


@pytest.mark.parametrize(
    ("parent", "relation", "needle"),
    [
        ("0x12", "fine-tune", "parent run id: '0x12' is not 32 bytes of hex"),
        ("0x" + "zz" * 32, "fine-tune", "is not 32 bytes of hex"),
        (b"short", "fine-tune", "parent run id: 5 bytes given"),
        ("0x" + "ab" * 32, "cousin", "unknown relation 'cousin'"),
    ],
)
def test_bad_parents_are_input_errors_before_anything_starts(
    tmp_path: Path, parent: str | bytes, relation: str, needle: str
) -> None:
    with pytest.raises(InputError, match=needle) as info:
        LedgerRun(
            nn.Linear(1, 1),
            name="child",
            config={},
            out=tmp_path / "m.pt",
            parents=[(parent, relation)],
        )
    assert isinstance(info.value, BadIdError) == (relation != "cousin")
    assert not (tmp_path / "m.pt").exists()


def test_the_final_weights_are_hashed_as_they_are_written(chain: Chain, tmp_path: Path) -> None:
    """The hook hands the worker the final file's tensor digests, hashed from the
    tensors it wrote (the run's end then waits for the CID alone); they are the
    file's own, as a reader of the file finds them."""
    for seed, out in enumerate(("model.pt", "model.safetensors")):
        run = train(chain, tmp_path / out, epochs=1, out=out, seed=seed)
        assert run.outbox is not None and run._final_entry is not None
        entry = run.outbox.journal.entry(run._final_entry)
        assert entry.payload["tensors"]["root"] == tensor_digest(tmp_path / out / out).root.hex()
        final = run.final
        assert final is not None and final.state == "confirmed"
        assert final.tensor_root == tensor_digest(tmp_path / out / out).root
        assert verifier(chain, tmp_path / out).verify_file(tmp_path / out / out).outcome is (
            Outcome.VERIFIED
        )
