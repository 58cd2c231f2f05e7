"""One DDP job is one run: two gloo processes on CPU, rank 0 commits, rank 1 sends nothing."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from ledger.chain.reader import RegistryReader
from ledger.chain.records import RunStatus
from ledger.chain.rpc import JsonRpc
from ledger.config import Settings
from ledger.errors import LedgerError
from ledger.store import LocalStore, find_by_digest
from ledger.training.hook import LedgerRun
from tests.conftest import Chain, free_port
from tests.training.test_flow import Tiny, fit

EPOCHS = 3


def _train(settings: Settings, out: Path, rank: int) -> dict[str, object]:
    torch.manual_seed(0)
    model = Tiny()
    ddp = DistributedDataParallel(model)
    optimiser = torch.optim.SGD(ddp.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(100 + rank)  # each rank its own shard
    x, y = torch.randn(32, 8, generator=generator), torch.randn(32, 1, generator=generator)
    with LedgerRun(
        model, name="ddp", config={"lr": 0.1}, out=out / "model.pt", settings=settings
    ) as run:
        fit(run, ddp, optimiser, x, y, EPOCHS)
    return {
        "run_id": run.run_id,
        "commits": [c.step for c in run.commits],
        "final_cid": str(run.final.file_cid) if run.final else None,
        "recorded_here": run.outbox is not None,
    }


def _join(rank: int, world_size: int, port: int) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)


def _leave() -> None:
    # DDP's module and reducer hold the process group and sit in reference cycles:
    # collected at interpreter exit, gloo's threads are torn down too late and the
    # rank can abort ("terminate called without an active exception"). Collect
    # them before the group is destroyed.
    gc.collect()
    dist.destroy_process_group()


def _worker(rank: int, world_size: int, port: int, settings: Settings, out: Path) -> None:
    _join(rank, world_size, port)
    try:
        report = _train(settings, out, rank)
        (out / f"rank{rank}.json").write_text(json.dumps(report))
        dist.barrier()  # neither rank closes its connections while the other still uses them
    finally:
        _leave()


def test_a_ddp_job_is_one_run_committed_by_rank_zero(chain: Chain, tmp_path: Path) -> None:
    settings = chain.settings(tmp_path / "ledger")
    mp.spawn(_worker, args=(2, free_port(), settings, tmp_path), nprocs=2, join=True)

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["recorded_here"] and not ranks[1]["recorded_here"]
    # every rank knows the run and its commits, as rank 0 recorded them
    assert ranks[0]["run_id"] == ranks[1]["run_id"]
    assert ranks[0]["commits"] == ranks[1]["commits"] == [0, 1, 2]
    assert ranks[0]["final_cid"] == ranks[1]["final_cid"] is not None

    reader = RegistryReader(JsonRpc(chain.rpc_url), chain.registry.address, chain.deploy_block)
    started = reader.all_events("RunStarted")
    assert len(started) == 1 and "0x" + bytes(started[0]["runId"]).hex() == ranks[0]["run_id"]
    run_id = bytes(started[0]["runId"])
    assert chain.registry.get_run(run_id).status is RunStatus.FINALIZED
    assert [r.step for r in chain.registry.checkpoints(run_id)] == [0, 1, 2]
    # one start, three checkpoints, one final record: rank 1 recorded nothing twice
    assert len(reader.all_events("CheckpointCommitted")) == EPOCHS
    assert len(reader.all_events("RunFinalized")) == 1

    store = LocalStore(tmp_path / "ledger" / "store")
    cid = find_by_digest(store, bytes(started[0]["manifestDigest"]))
    assert cid is not None
    manifest = json.loads(store.get_bytes(cid))
    assert manifest["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert sorted(p.name for p in (tmp_path / "model-checkpoints").iterdir()) == [
        "step-000000.pt",
        "step-000001.pt",
        "step-000002.pt",
    ]


def _failing_worker(rank: int, world_size: int, port: int, settings: Settings, out: Path) -> None:
    _join(rank, world_size, port)
    try:
        config = {"lr": float("nan")}  # rank 0 refuses to write this manifest
        run = LedgerRun(Tiny(), name="ddp", config=config, out=out / "model.pt", settings=settings)
        try:
            run.start()
            outcome = {"error": None}
        except LedgerError as exc:
            outcome = {"error": type(exc).__name__, "message": exc.message}
        (out / f"rank{rank}.json").write_text(json.dumps(outcome))
        dist.barrier()
    finally:
        _leave()


def test_when_rank_zero_cannot_record_every_rank_raises(chain: Chain, tmp_path: Path) -> None:
    settings = chain.settings(tmp_path / "ledger")
    mp.spawn(_failing_worker, args=(2, free_port(), settings, tmp_path), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["error"] == "InputError" and "NaN" in ranks[0]["message"]
    assert ranks[1]["error"] == "RecordError"
    assert "rank 0 could not record" in ranks[1]["message"]
    assert "InputError" in ranks[1]["message"]
