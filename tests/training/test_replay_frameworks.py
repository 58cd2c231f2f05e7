"""`ledger replay` of Lightning and Hugging Face Trainer runs: their own checkpoints
(``.ckpt``; ``checkpoint-N/``) are the committed resume files; a tiny local model
(no downloads) replays identically, one segment per fit. Real Anvil, real store."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ledger.replay import ReplayOutcome
from tests.conftest import Chain
from tests.training.test_replay import git, record, replay

pytest.importorskip("lightning")

LIGHTNING = """
import os
import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from ledger.training.lightning import LedgerCallback

SPOOF = os.environ.get("SPOOF", "")


class Tiny(pl.LightningModule):
    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        x = x + 0.01 * torch.randn_like(x)  # the torch RNG must be restored
        return nn.functional.mse_loss(self.net(x), y)

    def on_train_epoch_start(self) -> None:
        if SPOOF == "lr" and self.current_epoch == 2:
            for group in self.optimizers().param_groups:
                group["lr"] *= 3

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)]


pl.seed_everything(7)
data = torch.load("data.pt")
loader = DataLoader(TensorDataset(data["x"], data["y"]), batch_size=8, shuffle=True)
callback = LedgerCallback(name="lightning-replay", out="out/model.pt", replayable=True)
trainer = pl.Trainer(max_epochs=3, callbacks=[callback], logger=False, enable_progress_bar=False,
                     enable_checkpointing=False, enable_model_summary=False, accelerator="cpu")
trainer.fit(Tiny(), loader, ckpt_path=callback.ckpt_path)
"""


def _project(tmp_path: Path, script: str) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "train.py").write_text(script)
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(32, 4, generator=generator)
    torch.save({"x": x, "y": x.sum(1, keepdim=True)}, repo / "data.pt")
    (repo / ".gitignore").write_text("out/\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "train")
    return repo


@pytest.mark.parametrize("spoof", ["", "lr"])
def test_a_lightning_fit_replays_from_its_own_checkpoints(
    chain: Chain, tmp_path: Path, spoof: str
) -> None:
    repo = _project(tmp_path, LIGHTNING)
    settings, run_id = record(chain, tmp_path, repo, spoof=spoof)
    report = replay(settings, run_id, repo, seed=1)
    assert [(s.start, s.stop) for s in report.segments] == [(0, 1), (1, 2)]
    if not spoof:
        assert report.outcome is ReplayOutcome.REPRODUCED, report.lines()
        assert [s.verdict for s in report.segments] == ["identical", "identical"]
    else:  # the learning rate tripled in epoch 2, which the config does not say
        assert report.outcome is ReplayOutcome.DIVERGED
        assert report.segments[0].verdict == "identical"
        assert report.segments[1].verdict == "diverged"
        assert "net.0.weight" in report.segments[1].line()


HF = """
import os
import torch
from torch import nn
from transformers import Trainer, TrainingArguments
from ledger.training.hf import LedgerTrainerCallback

SPOOF = os.environ.get("SPOOF", "")


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))

    def forward(self, x, labels=None):
        out = self.net(x + 0.01 * torch.randn_like(x))  # the torch RNG must be restored
        return {"loss": nn.functional.mse_loss(out, labels), "logits": out}


class Rows(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


torch.manual_seed(7)
data = torch.load("data.pt")
args = TrainingArguments(output_dir="out/hf", per_device_train_batch_size=8, max_steps=12,
                         save_strategy="steps", save_steps=4, learning_rate=0.05, seed=7,
                         logging_steps=4, report_to=[], use_cpu=True, disable_tqdm=True,
                         lr_scheduler_type="linear", dataloader_num_workers=0)
callback = LedgerTrainerCallback(name="hf-replay", out="out/model", replayable=True)
x = data["x"]
if SPOOF == "data":  # a checkpoint trained on other data: the last 4 steps see other rows
    x = x.clone()
model = Tiny()
trainer = Trainer(model=model, args=args, train_dataset=Rows(x, data["y"]), callbacks=[callback])
if SPOOF == "data":
    from transformers import TrainerCallback

    class Swap(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == 8:
                x.copy_(torch.randn(x.shape, generator=torch.Generator().manual_seed(99)))

    trainer.add_callback(Swap())
trainer.train(resume_from_checkpoint=callback.resume_from_checkpoint)
"""


@pytest.mark.parametrize("spoof", ["", "data"])
def test_a_trainer_run_replays_from_its_own_checkpoint_folders(
    chain: Chain, tmp_path: Path, spoof: str
) -> None:
    pytest.importorskip("transformers")
    repo = _project(tmp_path, HF)
    settings, run_id = record(chain, tmp_path, repo, spoof=spoof)
    report = replay(settings, run_id, repo, seed=1)
    assert [(s.start, s.stop) for s in report.segments] == [(4, 8), (8, 12)]
    if not spoof:
        assert report.outcome is ReplayOutcome.REPRODUCED, report.lines()
        assert [s.verdict for s in report.segments] == ["identical", "identical"]
    else:  # steps 9-12 trained on other rows of the same shapes
        assert report.outcome is ReplayOutcome.DIVERGED
        assert report.segments[0].verdict == "identical"
        assert report.segments[1].verdict == "diverged" and "net.0.weight" in (
            report.segments[1].line()
        )
    assert sorted(p.name for p in (repo / "out" / "hf").iterdir()) == [
        "checkpoint-12",
        "checkpoint-4",
        "checkpoint-8",
    ]  # the recorded run's; the replays wrote theirs elsewhere
