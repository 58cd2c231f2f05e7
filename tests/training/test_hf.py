"""The transformers Trainer callback: a tiny BERT built from its config (nothing is
downloaded) trains with a real Trainer; the run lands on the real Anvil."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers reads it: never touch the network

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainingArguments,
)

from ledger.chain.records import RunStatus
from ledger.hashing.tensors import tensor_digest
from ledger.training.hf import LedgerTrainerCallback
from tests.cli.test_cli import chain_env, ledger
from tests.conftest import Chain


class Tokens(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Random token sequences; the label is whether token 7 occurs."""

    def __init__(self, n: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 30, (n, 12), generator=generator)
        self.labels = (self.ids == 7).any(dim=1).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.ids[i],
            "attention_mask": torch.ones_like(self.ids[i]),
            "labels": self.labels[i],
        }


class Explode(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        raise RuntimeError("corrupt shard")


def tiny_bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=32,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


def arguments(tmp_path: Path, epochs: int = 2) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        num_train_epochs=epochs,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="epoch",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )


def test_a_trainer_run_is_recorded_and_its_folder_verifies(chain: Chain, tmp_path: Path) -> None:
    settings = chain.settings(tmp_path / "ledger")
    callback = LedgerTrainerCallback(name="tiny-bert", out=tmp_path / "model", settings=settings)
    trainer = Trainer(
        model=tiny_bert(),
        args=arguments(tmp_path),
        train_dataset=Tokens(32, 0),
        eval_dataset=Tokens(16, 1),
        callbacks=[callback],
    )
    trainer.train()

    run = callback.run
    assert run is not None and run.final is not None
    run_id = bytes.fromhex(run.run_id[2:])
    assert chain.registry.get_run(run_id).status is RunStatus.FINALIZED
    assert [r.step for r in chain.registry.checkpoints(run_id)] == [4, 8]  # 32/8 steps an epoch
    assert "eval_loss" in callback.metrics
    folder = tmp_path / "model"
    assert {"model.safetensors", "config.json"} <= {p.name for p in folder.iterdir()}
    assert tensor_digest(folder).root == run.final.tensor_root

    env = chain_env(chain, tmp_path / "ledger")
    for target, matched_by in ((folder, "tensors"), (folder / "model.safetensors", "file")):
        out = ledger("verify", str(target), "--json", env=env)
        assert out.returncode == 0, out.stdout + out.stderr
        report = json.loads(out.stdout)
        assert report["run_id"] == run.run_id and report["matched_by"] == matched_by
    # a checkpoint the callback committed verifies as that step
    step = ledger(
        "verify", str(tmp_path / "model-ckpts" / "step-000004.safetensors"), "--json", env=env
    )
    assert step.returncode == 0 and json.loads(step.stdout)["step"] == 4


def test_a_crashed_train_is_marked_failed(chain: Chain, tmp_path: Path) -> None:
    settings = chain.settings(tmp_path / "ledger")
    callback = LedgerTrainerCallback(name="tiny-bert", out=tmp_path / "model", settings=settings)
    trainer = Trainer(
        model=tiny_bert(),
        args=arguments(tmp_path),
        train_dataset=Explode(),
        eval_dataset=Tokens(8, 1),
        callbacks=[callback],
    )
    with pytest.raises(RuntimeError, match="corrupt shard"), callback:
        trainer.train()
    assert callback.run is not None
    run_id = bytes.fromhex(callback.run.run_id[2:])
    assert chain.registry.get_run(run_id).status is RunStatus.FAILED
    reason: Any = chain.registry.events("RunFailed", run_id)[0]["reason"]
    assert "corrupt shard" in reason


def test_a_trainer_run_records_its_train_and_eval_datasets(chain: Chain, tmp_path: Path) -> None:
    import datasets

    from ledger.chain.records import RunStatus as Status
    from ledger.record.data import fingerprint
    from ledger.store import LocalStore, find_by_digest

    def hf_tokens(n: int, seed: int) -> datasets.Dataset:
        tokens = Tokens(n, seed)
        return datasets.Dataset.from_dict(
            {
                "input_ids": tokens.ids.tolist(),
                "attention_mask": torch.ones_like(tokens.ids).tolist(),
                "labels": tokens.labels.tolist(),
            }
        )

    train, held_out = hf_tokens(16, 0), hf_tokens(8, 1)
    train.save_to_disk(str(tmp_path / "train-ds"))
    train = datasets.load_from_disk(str(tmp_path / "train-ds"))  # Arrow-file-backed
    settings = chain.settings(tmp_path / "ledger")
    callback = LedgerTrainerCallback(name="tiny-bert", out=tmp_path / "model", settings=settings)
    Trainer(
        model=tiny_bert(),
        args=arguments(tmp_path, epochs=1),
        train_dataset=train,
        eval_dataset={"held": held_out, "tokens": Tokens(8, 2)},
        callbacks=[callback],
    ).train()
    run = callback.run
    assert run is not None
    run_id = bytes.fromhex(run.run_id[2:])
    assert chain.registry.get_run(run_id).status is Status.FINALIZED
    store = LocalStore(tmp_path / "ledger" / "store")
    digest = bytes(chain.registry.events("RunStarted", run_id)[0]["manifestDigest"])
    cid = find_by_digest(store, digest)
    assert cid is not None
    data = json.loads(store.get_bytes(cid))["data"]
    # the plain torch Dataset of the test has no fingerprint: left out, not a failure
    assert set(data) == {"train", "eval.held"}
    assert data["train"] == fingerprint(train) and data["train"]["files"]
    assert data["eval.held"] == fingerprint(held_out) and data["eval.held"]["rows"] == 8
