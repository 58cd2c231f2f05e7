"""Sharded checkpoints: an FSDP2 job of two gloo processes on CPU writes
torch.distributed.checkpoint folders, every rank its own shards; rank 0 records
each folder once (its `ipfs add -r --hidden` CID, the logical tensor root) and
`ledger verify` checks the folder, names a changed shard and tensor, and
verifies the gathered model by its tensor root."""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from ledger.chain.reader import RegistryReader
from ledger.chain.records import RunStatus
from ledger.chain.rpc import JsonRpc
from ledger.config import Settings
from ledger.errors import RecordError
from ledger.hashing.cid import path_cid
from ledger.hashing.dcp import dcp_plan
from ledger.hashing.tensors import tensor_digest
from ledger.store import LocalStore
from ledger.training.hook import LedgerRun
from ledger.verify import Outcome, Verifier
from tests.conftest import Chain, free_port

EPOCHS = 2


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        # 5 rows over 2 ranks: chunks of 3 and 2 rows; 1 row: one rank's chunk is empty
        self.hidden = nn.Linear(8, 5)
        self.head = nn.Linear(5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.hidden(x)))


def _worker(rank: int, port: int, settings: Settings, out: Path) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = Mlp()
        fully_shard(model, mesh=init_device_mesh("cpu", (2,)))
        optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
        generator = torch.Generator().manual_seed(100 + rank)
        x, y = torch.randn(16, 8, generator=generator), torch.randn(16, 1, generator=generator)
        with LedgerRun(
            model,
            name="fsdp",
            config={"lr": 0.1},
            out=out / "model",
            checkpoint_dir=out / "checkpoints",
            settings=settings,
            sharded=True,
        ) as run:
            for epoch in range(EPOCHS):
                optimiser.zero_grad()
                nn.functional.mse_loss(model(x), y).backward()
                optimiser.step()
                run.epoch_end(epoch, {"epoch": epoch})
        # clone: a gathered tensor may sit in a padded storage, whose extra bytes
        # the verifier would rightly report
        gathered = {k: v.full_tensor().clone() for k, v in model.state_dict().items()}
        if rank == 0:  # the same weights in one file, as a user would export them
            torch.save(gathered, out / "gathered.pt")
        report = {
            "run_id": run.run_id,
            "recorded_here": run.outbox is not None,
            "commits": [c.step for c in run.commits],
            "final_cid": str(run.final.file_cid) if run.final and run.final.file_cid else None,
        }
        (out / f"rank{rank}.json").write_text(json.dumps(report))
        dist.barrier()
    finally:
        gc.collect()
        dist.destroy_process_group()


def _train(chain: Chain, tmp_path: Path, mode: str = "copy") -> list[dict[str, object]]:
    settings = dataclasses.replace(chain.settings(tmp_path / "ledger"), store_weights=mode)
    mp.spawn(_worker, args=(free_port(), settings, tmp_path), nprocs=2, join=True)
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]


def test_an_fsdp_job_records_each_sharded_checkpoint_once(chain: Chain, tmp_path: Path) -> None:
    ranks = _train(chain, tmp_path)
    assert ranks[0]["recorded_here"] and not ranks[1]["recorded_here"]
    assert ranks[0]["run_id"] == ranks[1]["run_id"]
    assert ranks[0]["commits"] == ranks[1]["commits"] == [0, 1]

    reader = RegistryReader(JsonRpc(chain.rpc_url), chain.registry.address, chain.deploy_block)
    assert len(reader.all_events("RunStarted")) == 1
    assert len(reader.all_events("CheckpointCommitted")) == EPOCHS  # not one per rank
    (final,) = reader.all_events("RunFinalized")
    run_id = bytes(final["runId"])
    assert chain.registry.get_run(run_id).status is RunStatus.FINALIZED

    folder = tmp_path / "model"
    # both ranks wrote shards; the metadata is a hidden file
    plan = dcp_plan(folder)
    assert plan.files == ("__0_0.distcp", "__1_0.distcp")
    assert {len(t.pieces) for t in plan.tensors} == {2}
    # the CID is `ipfs add -r --hidden --cid-version=1` of the folder: it covers .metadata
    cid = path_cid(folder, hidden=True)
    assert bytes(final["weightsDigest"]) == cid.digest
    assert ranks[0]["final_cid"] == ranks[1]["final_cid"] == str(cid)
    assert path_cid(folder).digest != cid.digest
    # the tensor root is the logical state dict's: the gathered weights in one file
    root = tensor_digest(tmp_path / "gathered.pt").root
    assert bytes(final["tensorRoot"]) == root == tensor_digest(folder).root
    for step, event in enumerate(reader.all_events("CheckpointCommitted")):
        step_folder = tmp_path / "checkpoints" / f"step-{step:06d}"
        assert bytes(event["weightsDigest"]) == path_cid(step_folder, hidden=True).digest
        assert bytes(event["tensorRoot"]) == tensor_digest(step_folder).root

    store = LocalStore(tmp_path / "ledger" / "store")
    verifier = Verifier(chain.registry, store)
    report = verifier.verify_file(folder)
    assert report.outcome is Outcome.VERIFIED, report.checks
    assert report.matched_by == "file" and report.file_cid == str(cid)
    # the gathered model verifies against the sharded record by its tensor root
    gathered = verifier.verify_file(tmp_path / "gathered.pt")
    assert gathered.outcome is Outcome.VERIFIED, [c for c in gathered.checks if not c.ok]
    assert gathered.matched_by == "tensors"
    # copy mode: every shard and the metadata are in the store
    for name in (".metadata", "__0_0.distcp", "__1_0.distcp"):
        assert store.has(path_cid(folder / name))

    # one changed byte in rank 1's rows of a tensor: named, shard and tensor
    tampered = tmp_path / "tampered"
    shutil.copytree(folder, tampered)
    piece = next(p for p in plan.tensors[0].pieces if p.file == "__1_0.distcp")
    with open(tampered / piece.file, "r+b") as handle:
        handle.seek(piece.offset)
        byte = handle.read(1)
        handle.seek(piece.offset)
        handle.write(bytes([byte[0] ^ 1]))
    assert verifier.verify_file(tampered).outcome is Outcome.UNKNOWN
    report = verifier.verify_file(tampered, expected_run=run_id)
    assert report.outcome is Outcome.MISMATCH
    details = {c.name: c.detail for c in report.checks if not c.ok}
    assert details["files"] == "changed: __1_0.distcp"
    assert details["tensors"] == f"changed: {plan.tensors[0].name}"


def test_reference_mode_records_the_shards_where_they_are(chain: Chain, tmp_path: Path) -> None:
    ranks = _train(chain, tmp_path, mode="reference")
    assert ranks[0]["commits"] == [0, 1]
    store = LocalStore(tmp_path / "ledger" / "store")
    folder = tmp_path / "model"
    for name in (".metadata", "__0_0.distcp", "__1_0.distcp"):
        cid = path_cid(folder / name)
        assert not store.path_for(cid).exists()  # no copy
        assert store.reference(cid) is not None  # but a reference
    report = Verifier(chain.registry, store).verify_file(folder)
    assert report.outcome is Outcome.VERIFIED, report.checks


def test_a_sharded_run_takes_no_writer_of_its_own() -> None:
    with pytest.raises(RecordError, match="sharded=True"):
        LedgerRun(Mlp(), name="x", config={}, out="m", sharded=True, save=lambda sd, p: None)


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_one_process_and_stale_folders(chain: Chain, tmp_path: Path) -> None:
    """Without a process group a sharded run is one rank; a checkpoint folder that
    already holds files (an earlier save's shards) is refused before any write."""
    settings = chain.settings(tmp_path / "ledger")
    model = Mlp()
    with LedgerRun(
        model, name="one", config={}, out=tmp_path / "model", settings=settings, sharded=True
    ) as run:
        commit = run.checkpoint(0, {"loss": 1.0})
    assert commit.path == tmp_path / "model-checkpoints" / "step-000000"
    final = run.final
    assert final is not None and final.state == "confirmed"
    assert final.file_cid == path_cid(tmp_path / "model", hidden=True)
    assert final.tensor_root == tensor_digest(tmp_path / "model").root
    assert final.tensor_root == tensor_digest(tmp_path / "model-checkpoints" / "step-000000").root

    stale = tmp_path / "again-checkpoints" / "step-000000"
    stale.mkdir(parents=True)
    (stale / "__5_0.distcp").write_bytes(b"old shard")
    again = LedgerRun(
        model, name="again", config={}, out=tmp_path / "again", settings=settings, sharded=True
    )
    with pytest.raises(RecordError, match="already holds files"), again:
        again.checkpoint(0, {})
    assert again.status == "failed"  # the block's error records the run as failed
    assert sorted(p.name for p in stale.iterdir()) == ["__5_0.distcp"]
