"""Outbox figures: what a checkpoint costs the training loop, and commit throughput.

On a throw-away local Anvil, one run hands over N checkpoint files (a small
MLP's state dict each, written beforehand) through the outbox, with its
background worker:

- **append**: the time ``Outbox.checkpoint`` keeps the training loop, per call
  (median and p99), against the named baseline ``torch.save`` of the same
  weights (what the loop pays anyway to write a checkpoint). Goal: well under
  1 ms.
- **throughput**: checkpoints confirmed on chain per second, from the first
  append to the last receipt (storing, tensor roots, batching, signing, mining
  included), against the named baseline of one ``commitCheckpoint``
  transaction per checkpoint through the same client (the synchronous
  recorder's path). Goal: at least 100 per second.

Ends with one JSON line of the figures.

Run: ``make bench-outbox`` (or ``.venv/bin/python bench/outbox.py --checkpoints 1000``)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from ledger.chain.admin import RegistryAdmin
from ledger.chain.anvil import AnvilProcess, free_port
from ledger.chain.rpc import JsonRpc
from ledger.chain.sender import Signer
from ledger.config import ANVIL_DEV_KEY, Secret, Settings, save_deployment
from ledger.hashing.merkle import CheckpointLeaf
from ledger.record.manifest import build_manifest
from ledger.record.outbox import Outbox

GOAL_APPEND_MS = 1.0
GOAL_PER_SECOND = 100.0


def mlp_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 1)
    )
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=1000)
    parser.add_argument("--baseline", type=int, default=100, help="one-tx-each checkpoints")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ledger-bench-outbox-") as tmp:
        root = Path(tmp)
        anvil = AnvilProcess(root / "chain", port=free_port())
        anvil.start(persist=False)
        try:
            figures = measure(root, anvil.rpc_url, args.checkpoints, args.baseline)
        finally:
            anvil.stop()
    print(
        f"append: median {figures['append_median_us']:.0f} us,"
        f" p99 {figures['append_p99_us']:.0f} us"
        f" (torch.save of the same weights: median {figures['torch_save_median_us']:.0f} us;"
        f" ratio {figures['append_vs_torch_save']:.3f}; goal < {GOAL_APPEND_MS:g} ms)"
    )
    print(
        f"throughput: {figures['outbox_per_s']:.0f} checkpoints/s confirmed "
        f"({figures['transactions']} transactions) vs one tx each "
        f"{figures['one_tx_each_per_s']:.0f}/s: ratio {figures['speedup_vs_one_tx_each']:.1f}x; "
        f"goal >= {GOAL_PER_SECOND:g}/s"
    )
    print(json.dumps(figures, sort_keys=True))


def measure(root: Path, rpc_url: str, count: int, baseline: int) -> dict[str, float]:
    registry, tx = RegistryAdmin.deploy(JsonRpc(rpc_url), Signer(Secret(ANVIL_DEV_KEY)))
    chain_id = registry.chain_id
    settings = Settings(data_dir=root / "ledger", rpc_url=rpc_url)
    save_deployment(settings, address=registry.address, chain_id=chain_id, block=tx.block_number)
    settings = settings.with_overrides(
        registry_address=registry.address, chain_id=chain_id, deploy_block=tx.block_number
    )

    # the checkpoint files, written first (timing torch.save as the baseline)
    files, saves = [], []
    for step in range(count):
        path = root / "ckpt" / f"step-{step:06d}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        state = mlp_state(step)
        t0 = time.perf_counter()
        torch.save(state, path)
        saves.append(time.perf_counter() - t0)
        files.append(path)

    outbox = Outbox(settings)
    run_id = outbox.start_run(build_manifest(name="bench-outbox", config={"n": count}))
    appends = []
    started = time.perf_counter()
    for step, path in enumerate(files):
        t0 = time.perf_counter()
        outbox.checkpoint(run_id, step, path, {"loss": 1.0 / (step + 1)})
        appends.append(time.perf_counter() - t0)
    remaining = outbox.flush(600)
    elapsed = time.perf_counter() - started
    if remaining:
        raise SystemExit(f"{remaining} records still open after 600 s")
    entries = outbox.journal.entries(run_id=run_id)
    transactions = len({e.tx_hash for e in entries if e.kind == "checkpoint"})

    # baseline: one transaction per checkpoint, same client, same chain
    base_run, _ = registry.start_run(bytes(range(32)))
    t0 = time.perf_counter()
    for step in range(baseline):
        registry.commit_checkpoint(
            base_run, CheckpointLeaf(step, bytes([1]) * 32, bytes([2]) * 32, bytes([3]) * 32)
        )
    one_each = baseline / (time.perf_counter() - t0)

    per_s = count / elapsed
    append_median = statistics.median(appends)
    return {
        "checkpoints": count,
        "append_median_us": append_median * 1e6,
        "append_p99_us": sorted(appends)[int(len(appends) * 0.99) - 1] * 1e6,
        "torch_save_median_us": statistics.median(saves) * 1e6,
        "append_vs_torch_save": append_median / statistics.median(saves),
        "outbox_per_s": per_s,
        "transactions": transactions,
        "one_tx_each_per_s": one_each,
        "speedup_vs_one_tx_each": per_s / one_each,
        "goal_per_s": GOAL_PER_SECOND,
        "goal_append_ms": GOAL_APPEND_MS,
    }


if __name__ == "__main__":
    main()
