"""The Lightning callback: a real Trainer fits a small module, the run lands on the real Anvil."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ledger.chain.reader import RegistryReader
from ledger.chain.records import RunStatus
from ledger.chain.rpc import JsonRpc
from ledger.hashing._torchfile import read_tensors
from ledger.hashing.tensors import state_dict_digest, tensor_digest
from ledger.store import LocalStore, find_by_digest
from ledger.training.lightning import LedgerCallback
from tests.cli.test_cli import chain_env, ledger
from tests.conftest import Chain, free_port


class Regressor(pl.LightningModule):
    def __init__(self, width: int = 8, lr: float = 0.05, explode_at: int = -1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.current_epoch == self.hparams["explode_at"]:
            raise RuntimeError("loss exploded")
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"])


def loaders() -> tuple[DataLoader[Any], DataLoader[Any]]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=generator)
    y = x.sum(dim=1, keepdim=True)
    return (
        DataLoader(TensorDataset(x[:48], y[:48]), batch_size=16),
        DataLoader(TensorDataset(x[48:], y[48:]), batch_size=16),
    )


def trainer(callback: LedgerCallback, epochs: int = 2) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )


def test_a_fit_is_recorded_and_its_ckpt_verifies(chain: Chain, tmp_path: Path) -> None:
    pl.seed_everything(0)
    settings = chain.settings(tmp_path / "ledger")
    callback = LedgerCallback(name="lit", out=tmp_path / "final.ckpt", settings=settings)
    train, val = loaders()
    trainer(callback).fit(Regressor(), train, val)

    run = callback.run
    assert run is not None and run.final is not None
    run_id = bytes.fromhex(run.run_id[2:])
    assert chain.registry.get_run(run_id).status is RunStatus.FINALIZED
    steps = [r.step for r in chain.registry.checkpoints(run_id)]
    assert steps == [0, 1]
    # the epoch metrics (validation included) went into the metrics documents
    assert {"train_loss", "val_loss"} <= set(run.last_metrics)

    ckpt = torch.load(tmp_path / "final.ckpt", weights_only=True)
    assert "state_dict" in ckpt and "optimizer_states" in ckpt  # a real Lightning checkpoint
    assert ckpt["hyper_parameters"]["width"] == 8
    # the torch-free reader understands a real Lightning checkpoint, without torch's help
    tensors = read_tensors(tmp_path / "final.ckpt")
    assert tensors is not None
    assert {name for name, *_ in tensors} == set(ckpt["state_dict"])
    assert tensor_digest(tmp_path / "final.ckpt").root == state_dict_digest(ckpt["state_dict"]).root

    env = chain_env(chain, tmp_path / "ledger")
    out = ledger("verify", str(tmp_path / "final.ckpt"), "--json", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["run_id"] == run.run_id and report["is_final"] and report["matched_by"] == "file"
    # the manifest took the module's hyperparameters as the config
    shown = ledger("show", run.run_id, env=env)
    assert shown.returncode == 0, shown.stderr


def test_a_fit_that_raises_marks_the_run_failed(chain: Chain, tmp_path: Path) -> None:
    settings = chain.settings(tmp_path / "ledger")
    callback = LedgerCallback(name="lit", out=tmp_path / "final.ckpt", settings=settings)
    train, val = loaders()
    with pytest.raises(RuntimeError, match="exploded"):
        trainer(callback, epochs=3).fit(Regressor(explode_at=1), train, val)
    assert callback.run is not None
    run_id = bytes.fromhex(callback.run.run_id[2:])
    assert chain.registry.get_run(run_id).status is RunStatus.FAILED
    assert "loss exploded" in chain.registry.events("RunFailed", run_id)[0]["reason"]
    assert [r.step for r in chain.registry.checkpoints(run_id)] == [0]
    assert not (tmp_path / "final.ckpt").exists()


def test_a_two_process_ddp_fit_is_one_run(
    chain: Chain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    settings = chain.settings(tmp_path / "ledger")
    callback = LedgerCallback(name="lit-ddp", out=tmp_path / "final.ckpt", settings=settings)
    train, val = loaders()
    pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    ).fit(Regressor(), train, val)

    reader = RegistryReader(JsonRpc(chain.rpc_url), chain.registry.address, chain.deploy_block)
    started = reader.all_events("RunStarted")
    assert len(started) == 1
    run_id = bytes(started[0]["runId"])
    assert chain.registry.get_run(run_id).status is RunStatus.FINALIZED
    assert [r.step for r in chain.registry.checkpoints(run_id)] == [0, 1]
    assert len(reader.all_events("CheckpointCommitted")) == 2
    assert len(reader.all_events("RunFinalized")) == 1
    store = LocalStore(tmp_path / "ledger" / "store")
    cid = find_by_digest(store, bytes(started[0]["manifestDigest"]))
    assert cid is not None
    assert json.loads(store.get_bytes(cid))["distributed"] == {"world_size": 2, "backend": "gloo"}
    env = chain_env(chain, tmp_path / "ledger")
    out = ledger("verify", str(tmp_path / "final.ckpt"), "--json", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["run_id"] == "0x" + run_id.hex()


def recorded_manifest(chain: Chain, data_dir: Path, run_id: str) -> dict[str, Any]:
    started = chain.registry.events("RunStarted", bytes.fromhex(run_id[2:]))
    store = LocalStore(data_dir / "store")
    cid = find_by_digest(store, bytes(started[0]["manifestDigest"]))
    assert cid is not None
    manifest: dict[str, Any] = json.loads(store.get_bytes(cid))
    return manifest


class Folders(pl.LightningDataModule):
    """A DataModule that reads a folder and says so through ``ledger_data``."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def ledger_data(self) -> dict[str, Any]:
        return {"corpus": self.root}

    def train_dataloader(self) -> DataLoader[Any]:
        return loaders()[0]


def test_a_fit_records_its_loaders_datasets(chain: Chain, tmp_path: Path) -> None:
    from ledger.record.data import fingerprint

    settings = chain.settings(tmp_path / "ledger")
    callback = LedgerCallback(name="lit", out=tmp_path / "final.ckpt", settings=settings)
    train, val = loaders()
    trainer(callback, epochs=1).fit(Regressor(), train, val)
    assert callback.run is not None
    data = recorded_manifest(chain, tmp_path / "ledger", callback.run.run_id)["data"]
    assert data == {"train": fingerprint(train.dataset), "val": fingerprint(val.dataset)}
    assert data["train"]["kind"] == "tensor-dataset" and data["train"]["rows"] == 48


def test_a_fit_records_the_datamodules_ledger_data(chain: Chain, tmp_path: Path) -> None:
    from ledger.hashing.cid import path_cid

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("a")
    settings = chain.settings(tmp_path / "ledger")
    callback = LedgerCallback(name="lit", out=tmp_path / "final.ckpt", settings=settings)
    trainer(callback, epochs=1).fit(Regressor(), datamodule=Folders(corpus))
    assert callback.run is not None
    data = recorded_manifest(chain, tmp_path / "ledger", callback.run.run_id)["data"]
    assert set(data) == {"corpus"}
    assert data["corpus"]["kind"] == "folder" and data["corpus"]["cid"] == str(path_cid(corpus))
