"""Next-minute price forecasting with a small MLP, committed to the ledger.

The seed case: a synthetic minute-level price series (a seeded random walk with
drift, a daily cycle and noise; nothing is downloaded), cut into sliding
windows and normalised with the training split's statistics. A 3-layer MLP
(window -> 128 -> 64 -> 1, He-normal init, ReLU) is trained with Adam
(lr 1e-3), a plateau LR schedule and early stopping on validation loss. The
``run`` lines are all the ledger needs; with ``optimizer=``, ``scheduler=``,
``seed=`` and ``run.epochs()`` the run is replayable (``ledger replay RUN --
python -m examples.price_forecast``).

Run: ``python -m examples.price_forecast --out model.pt``
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ledger.config import Settings
from ledger.training.hook import LedgerRun


@dataclass(frozen=True)
class Config:
    minutes: int = 6_000
    window: int = 32
    hidden: tuple[int, int] = (128, 64)
    lr: float = 1e-3
    batch_size: int = 128
    max_epochs: int = 12
    patience: int = 3
    lr_factor: float = 0.5
    lr_patience: int = 1
    val_fraction: float = 0.2
    seed: int = 7


def price_series(minutes: int, seed: int) -> np.ndarray:
    """A deterministic synthetic minute-level price series."""
    rng = np.random.default_rng(seed)
    t = np.arange(minutes)
    returns = rng.normal(2e-6, 8e-4, size=minutes)
    daily = 0.004 * np.sin(2 * math.pi * t / 1_440)
    return (100.0 * np.exp(np.cumsum(returns)) * (1 + daily)).astype(np.float32)


def windows(series: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Sliding windows of ``window`` minutes and the next minute's price."""
    x = np.lib.stride_tricks.sliding_window_view(series[:-1], window)
    y = series[window:]
    return x.copy(), y.copy()


class PriceMLP(nn.Module):
    def __init__(self, window: int, hidden: tuple[int, int]) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(window, hidden[0]),
            nn.ReLU(),
            nn.Linear(hidden[0], hidden[1]),
            nn.ReLU(),
            nn.Linear(hidden[1], 1),
        )
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x).squeeze(-1)
        return out


def train(
    cfg: Config,
    out: Path,
    settings: Settings | None = None,
    *,
    sweep: str | None = None,
    trial: int | None = None,
) -> LedgerRun:
    torch.manual_seed(cfg.seed)
    series = price_series(cfg.minutes, cfg.seed)
    x, y = windows(series, cfg.window)
    split = int(len(x) * (1 - cfg.val_fraction))
    mean, std = (
        float(series[: split + cfg.window].mean()),
        float(series[: split + cfg.window].std()),
    )
    xt = torch.from_numpy((x - mean) / std)
    yt = torch.from_numpy((y - mean) / std)
    train_x, train_y, val_x, val_y = xt[:split], yt[:split], xt[split:], yt[split:]

    model = PriceMLP(cfg.window, cfg.hidden)
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimiser, factor=cfg.lr_factor, patience=cfg.lr_patience
    )
    loss_fn = nn.MSELoss()
    best_loss, best_state, stale = math.inf, None, 0

    with LedgerRun(
        model,
        name="price-forecast",
        config=asdict(cfg),
        out=out,
        data={"series": series},
        seed=cfg.seed,
        settings=settings,
        sweep=sweep,
        trial=trial,
        optimizer=optimiser,
        scheduler=schedule,
    ) as run:
        # run.epochs() starts where `ledger replay` (or a resume) says; the data order
        # comes from the seed and the epoch alone (run.permutation), and the optimiser,
        # the LR schedule and the RNGs are committed with each checkpoint: replayable
        for epoch in run.epochs(cfg.max_epochs):
            model.train()
            order = torch.tensor(run.permutation(epoch, len(train_x)))
            total = 0.0
            for start in range(0, len(order), cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                optimiser.zero_grad()
                loss = loss_fn(model(train_x[idx]), train_y[idx])
                loss.backward()
                optimiser.step()
                total += float(loss.detach()) * len(idx)
            model.eval()
            with torch.no_grad():
                val_loss = float(loss_fn(model(val_x), val_y))
            schedule.step(val_loss)
            metrics = {
                "epoch": epoch,
                "train_loss": total / len(train_x),
                "val_loss": val_loss,
                "lr": optimiser.param_groups[0]["lr"],
            }
            print(f"epoch {epoch:2d}  train {metrics['train_loss']:.5f}  val {val_loss:.5f}")
            run.epoch_end(epoch, metrics)
            if val_loss < best_loss - 1e-6:
                best_loss, stale = val_loss, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
                if stale >= cfg.patience:
                    print(f"early stop after epoch {epoch} (best val {best_loss:.5f})")
                    break
        # (in replay mode the loop ends after the replayed checkpoint; finish records nothing)
        final = {"best_val_loss": best_loss, "val_loss": best_loss, "epochs": epoch + 1}
        run.finish(final, state_dict=best_state)
    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("price-forecast.pt"),
        help="final model file (.pt or .safetensors)",
    )
    parser.add_argument("--epochs", type=int, default=Config.max_epochs)
    parser.add_argument("--seed", type=int, default=Config.seed)
    args = parser.parse_args(argv)
    run = train(Config(max_epochs=args.epochs, seed=args.seed), args.out)
    if run.replay is not None:  # under `ledger replay`: nothing was recorded or written
        return
    assert run.final is not None
    print(f"run {run.run_id} finalized; model {args.out} (CID {run.final.file_cid})")


if __name__ == "__main__":
    main()
