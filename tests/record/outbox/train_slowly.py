"""A training process for the fault tests: a small MLP, one checkpoint per epoch.

``python tests/outbox/train_slowly.py OUT EPOCHS SECONDS_PER_EPOCH`` with
``LEDGER_HOME`` naming the data directory. It prints ``epoch N`` after each
epoch's checkpoint is handed over, and ``done RUN_ID`` at the end, so a test can
time its signals against real progress.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch import nn

from ledger.training.hook import LedgerRun


def main() -> None:
    out, epochs, pause = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.randn(256, 8)
    y = x.sum(dim=1, keepdim=True)
    with LedgerRun(model, name="fault-test", config={"epochs": epochs}, out=out, seed=0) as run:
        print(f"started {run.run_id}", flush=True)
        for epoch in range(epochs):
            optimiser.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimiser.step()
            run.epoch_end(epoch, {"loss": float(loss)})
            print(f"epoch {epoch}", flush=True)
            time.sleep(pause)
    print(f"done {run.run_id}", flush=True)


if __name__ == "__main__":
    main()
