"""The PyTorch training hook: three lines commit a whole run.

::

    with LedgerRun(model, name="price-forecast", config=cfg, out="model.pt") as run:
        for epoch in range(epochs):
            ...                                   # train as usual
            run.epoch_end(epoch, {"val_loss": v})  # checkpoint every N epochs

At start the run's manifest (config, code version, environment, data
fingerprints, seed, parents) is committed; each checkpoint commits the weights
file, its tensor root and the metrics; leaving the block writes the final model
file (``out``; ``.pt`` via ``torch.save``, ``.safetensors`` via safetensors) and
finalizes the run with the Merkle root of its checkpoints. An exception inside
the block marks the run failed on chain and propagates unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from ledger.chain.registry import Registry, Relation
from ledger.config import Settings, load_settings
from ledger.errors import LedgerError, RecordError
from ledger.hashing.tensors import TensorDigest, state_dict_digest
from ledger.manifest import build_manifest
from ledger.recorder import RunRecorder, WeightsCommit
from ledger.store import ArtifactStore, open_store

log = logging.getLogger("ledger.training")


def save_weights(state_dict: Mapping[str, torch.Tensor], path: Path) -> None:
    """Write a state dict: safetensors for ``.safetensors``, else ``torch.save``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(path))
    else:
        torch.save(tensors, path)


class LedgerRun:
    """Records one training run of ``model``; use as a context manager."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        name: str,
        config: Mapping[str, Any],
        out: str | Path,
        data: Mapping[str, Any] | None = None,
        seed: int | None = None,
        parents: Sequence[tuple[str | bytes, Relation | str]] = (),
        checkpoint_every: int = 1,
        checkpoint_dir: str | Path | None = None,
        settings: Settings | None = None,
        registry: Registry | None = None,
        store: ArtifactStore | None = None,
        code_root: Path | None = None,
    ) -> None:
        if checkpoint_every < 1:
            raise RecordError("checkpoint_every must be 1 or more (epochs between checkpoints)")
        self.model = model
        self.name = name
        self.config = dict(config)
        self.data = dict(data or {})
        self.seed = seed
        self.parents = [(_run_id_bytes(p), _relation(r)) for p, r in parents]
        self.checkpoint_every = checkpoint_every
        self.out = Path(out)
        self.checkpoint_dir = (
            Path(checkpoint_dir)
            if checkpoint_dir
            else (self.out.parent / f"{self.out.stem}-checkpoints")
        )
        self._settings = settings
        self._registry = registry
        self._store = store
        self._code_root = code_root
        self.recorder: RunRecorder | None = None
        self.last_metrics: dict[str, Any] = {}
        self.commits: list[WeightsCommit] = []
        self.final: WeightsCommit | None = None

    # -- life cycle ---------------------------------------------------------------

    def __enter__(self) -> LedgerRun:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            if self.final is None:
                self.finish()
            return
        if self.recorder is not None and self.recorder.status == "running":
            try:
                self.recorder.fail(f"{type(exc).__name__}: {exc}")
            except LedgerError as fail_exc:  # keep the training error as the one raised
                log.warning("could not mark run failed: %s", fail_exc)

    @property
    def run_id(self) -> str:
        return self._require_recorder().run_id_hex

    def start(self) -> str:
        settings = self._settings or load_settings()
        registry = self._registry or Registry.connect(settings)
        store = self._store or open_store(settings)
        manifest = build_manifest(
            name=self.name,
            config=self.config,
            data=self.data,
            seed=self.seed,
            parents=[
                {"run_id": "0x" + p.hex(), "relation": r.name.lower().replace("_", "-")}
                for p, r in self.parents
            ],
            code_root=self._code_root,
        )
        self.recorder = RunRecorder(registry, store)
        self.recorder.start(manifest, self.parents)
        log.info("ledger run %s started", self.recorder.run_id_hex)
        return self.recorder.run_id_hex

    def epoch_end(self, epoch: int, metrics: Mapping[str, Any]) -> WeightsCommit | None:
        """Note an epoch's metrics; every ``checkpoint_every`` epochs commit a checkpoint."""
        self.last_metrics = dict(metrics)
        if (epoch + 1) % self.checkpoint_every:
            return None
        return self.checkpoint(epoch, metrics)

    def checkpoint(self, step: int, metrics: Mapping[str, Any]) -> WeightsCommit:
        """Write the model's weights to the checkpoint directory and commit them."""
        recorder = self._require_recorder()
        path = self.checkpoint_dir / f"step-{step:06d}{self.out.suffix or '.pt'}"
        tensors = self._save(path)
        commit = recorder.checkpoint(step, path, metrics, tensors)
        self.commits.append(commit)
        return commit

    def finish(
        self,
        metrics: Mapping[str, Any] | None = None,
        state_dict: Mapping[str, torch.Tensor] | None = None,
    ) -> WeightsCommit:
        """Write the final model file (``out``) and finalize the run.

        ``state_dict`` overrides the model's current weights (e.g. the best epoch's
        under early stopping).
        """
        recorder = self._require_recorder()
        tensors = self._save(self.out, state_dict)
        self.final = recorder.finalize(self.out, dict(metrics or self.last_metrics), tensors)
        log.info("ledger run %s finalized: %s", recorder.run_id_hex, self.final.file_cid)
        return self.final

    def _save(
        self, path: Path, state_dict: Mapping[str, torch.Tensor] | None = None
    ) -> TensorDigest:
        state = dict(state_dict if state_dict is not None else self.model.state_dict())
        save_weights(state, path)
        return state_dict_digest(state)

    def _require_recorder(self) -> RunRecorder:
        if self.recorder is None:
            raise RecordError("the run is not started; use `with LedgerRun(...)` or call start()")
        return self.recorder


def _run_id_bytes(value: str | bytes) -> bytes:
    raw = value if isinstance(value, bytes) else bytes.fromhex(value.removeprefix("0x"))
    if len(raw) != 32:
        raise RecordError(f"parent run id {value!r} is not 32 bytes")
    return raw


def _relation(value: Relation | str) -> Relation:
    if isinstance(value, Relation):
        return value
    try:
        return Relation.parse(value)
    except ValueError as exc:
        raise RecordError(str(exc)) from exc
