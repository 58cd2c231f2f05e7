"""A Hugging Face ``transformers`` Trainer callback that records training as one ledger run.

::

    trainer = Trainer(model, args, train_dataset=ds, callbacks=[LedgerTrainerCallback(name="m")])

A thin layer over :class:`~ledger.training.hook.LedgerRun`, which does all the
recording. ``on_train_begin`` starts the run (config from ``config=``, else the
training arguments and the model's config); ``on_log`` and ``on_evaluate``
collect the latest scalar metrics; ``on_save`` commits a checkpoint of the
weights at ``state.global_step`` (so checkpoints follow the Trainer's own
``save_strategy``); ``on_train_end`` writes the final model with
``save_pretrained`` into the folder ``out`` (``model.safetensors`` and
``config.json``), commits ``model.safetensors`` and finalizes the run.
``ledger verify`` accepts the folder (by tensor root) or the file (by CID).

The manifest's ``data`` is ``data=`` if given, else the Trainer's
``train_dataset`` and ``eval_dataset`` (``train``, ``eval``; a mapping of eval
datasets gives ``eval.<name>``) where they are file- or array-backed: Hugging
Face datasets (their Arrow files), TensorDatasets, datasets with a
``ledger_fingerprint()`` method (:mod:`ledger.record.data`). Any other is left
out with a warning saying how to give it a fingerprint.

The Trainer has no exception hook: to mark a crashed ``trainer.train()`` failed
on chain, run it inside the callback, ``with callback: trainer.train()``.
Under DDP every process runs the callback and rank 0 records (see
:mod:`ledger.training._distributed`).

With ``replayable=True`` each committed checkpoint also commits the Trainer's own
checkpoint folder (``checkpoint-N/``: weights, ``optimizer.pt``, ``scheduler.pt``,
``rng_state.pth``, ``trainer_state.json``) as the resume file, archived as a tar.
Such a run is replayable by ``ledger replay`` when it trains with
``trainer.train(resume_from_checkpoint=callback.resume_from_checkpoint)``: in
replay mode that is the committed checkpoint, unpacked; training stops at the
next checkpoint, having written the replayed weights, and the Trainer's own
checkpoints go to the replay's temporary folder, not ``output_dir``.

Install with ``pip install 'ledger[hf]'``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import torch
from transformers import (
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from ledger.config import Settings
from ledger.errors import InputError, NotReplayableError, RecordError
from ledger.ids import Relation
from ledger.replay import ReplayOrder
from ledger.store import ArtifactStore
from ledger.training.hook import LedgerRun, save_weights

WEIGHTS_NAME = "model.safetensors"


class LedgerTrainerCallback(TrainerCallback):
    """Records ``trainer.train()``; the keyword arguments are :class:`LedgerRun`'s,
    except ``out``, the final model folder."""

    def __init__(
        self,
        *,
        name: str,
        out: str | Path = "model",
        config: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        seed: int | None = None,
        parents: Sequence[tuple[str | bytes, Relation | str]] = (),
        checkpoint_dir: str | Path | None = None,
        sweep: str | None = None,
        trial: int | None = None,
        settings: Settings | None = None,
        store: ArtifactStore | None = None,
        replayable: bool = False,
    ) -> None:
        self.folder = Path(out)
        self.replayable = replayable
        self.replay = ReplayOrder.from_env()
        if self.replay is not None and not replayable:
            raise NotReplayableError(
                "not replayable: LEDGER_REPLAY is set (by `ledger replay`) but this "
                "LedgerTrainerCallback was made without replayable=True; nothing recorded",
                hint="LedgerTrainerCallback(..., replayable=True) and trainer.train("
                "resume_from_checkpoint=callback.resume_from_checkpoint)",
            )
        self._saved: Path | None = None  # the checkpoint folder the Trainer just wrote
        self._checked = False
        self._options: dict[str, Any] = {
            "name": name,
            "out": self.folder / WEIGHTS_NAME,
            "data": data,
            "seed": seed,
            "parents": parents,
            "checkpoint_dir": checkpoint_dir or self.folder.with_name(f"{self.folder.name}-ckpts"),
            "sweep": sweep,
            "trial": trial,
            "settings": settings,
            "store": store,
        }
        self._config = None if config is None else dict(config)
        self.metrics: dict[str, float] = {}
        self.run: LedgerRun | None = None

    @property
    def resume_from_checkpoint(self) -> str | None:
        """What to pass as ``trainer.train(resume_from_checkpoint=)``: in replay mode the
        committed checkpoint folder the replay starts from (unpacked next to the
        replay's files), else None (a fresh run)."""
        if self.replay is None:
            return None
        archive = self.replay.segments[0].resume
        folder = archive.with_name(archive.name + ".d")
        if not folder.is_dir():
            unpack_checkpoint(archive, folder)
        return str(folder)

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        """Start the run."""
        if self.replayable and args.world_size > 1:
            raise RecordError(
                "LedgerTrainerCallback(replayable=True) records single-process training only"
            )
        if self.replay is not None:  # the Trainer's checkpoints go with the replay's files
            args.output_dir = str(self.replay.segments[0].out.with_suffix(".output"))
        model = _model(kwargs)
        config = self._config
        if config is None:
            model_config = getattr(model, "config", None)
            config = {
                "training_args": _plain(args.to_dict()),  # type: ignore[no-untyped-call]
                "model_config": _plain(model_config.to_dict()) if model_config else None,
            }
        options = dict(self._options)
        if options["data"] is None and state.is_world_process_zero:
            options["data"] = trainer_data(kwargs, options["settings"])
        resume: dict[str, Any] = {}
        if self.replayable:  # the Trainer's own checkpoint folder, archived, is the resume file
            resume = {"save_resume": self._archive_saved, "resume_suffix": ".tar"}
        self.run = LedgerRun(
            model, config=config, save=_pretrained_writer(model), **options, **resume
        )
        self.run.start()

    def on_step_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        """In replay mode, check once that the Trainer resumed where the replay starts."""
        segment = self.run.replay_segment if self.run is not None else None
        if segment is not None and not self._checked:
            self._checked = True
            if state.global_step != segment.start_epoch - 1:
                raise NotReplayableError(
                    f"not replayable: `ledger replay` asked to resume at step "
                    f"{segment.start_epoch - 1}, but the Trainer is at step {state.global_step}",
                    hint="trainer.train(resume_from_checkpoint=callback.resume_from_checkpoint)",
                )

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Keep the latest logged scalars (loss, learning rate...)."""
        self._note(logs)

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Keep the evaluation metrics (``eval_loss``...)."""
        self._note(metrics)

    def on_save(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        """Commit a checkpoint of the weights where the Trainer saves one (a replayable
        run's with the Trainer's checkpoint folder). In replay mode, the segment's
        last checkpoint writes the replayed weights and stops training."""
        if self.run is not None:
            self._saved = Path(str(args.output_dir)) / f"checkpoint-{state.global_step}"
            self.run.checkpoint(state.global_step, self._metrics(state))
            segment = self.run.replay_segment
            if segment is not None and state.global_step >= segment.stop_epoch:
                control.should_training_stop = True  # one segment per train()

    def _archive_saved(self, path: Path) -> None:
        if self._saved is None or not self._saved.is_dir():
            raise RecordError(
                f"the Trainer's checkpoint folder {self._saved} is missing: a replayable run "
                "commits it with each checkpoint"
            )
        archive_checkpoint(self._saved, path)

    def on_train_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        """Save the final model folder and finalize the run."""
        if self.run is not None and self.run.final is None:
            self.run.finish(self._metrics(state))

    # -- failures ---------------------------------------------------------------

    def __enter__(self) -> LedgerTrainerCallback:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """An exception out of ``trainer.train()`` marks the run failed, then propagates."""
        if exc is not None and self.run is not None and self.run.final is None:
            self.run.__exit__(exc_type, exc, tb)

    # -- metrics ------------------------------------------------------------------

    def _note(self, values: Mapping[str, Any] | None) -> None:
        for key, value in (values or {}).items():
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if number and math.isfinite(value):
                self.metrics[key] = float(value)

    def _metrics(self, state: TrainerState) -> dict[str, Any]:
        return {**self.metrics, "global_step": state.global_step, "epoch": state.epoch or 0.0}


# The Trainer's checkpoint folder, as the resume file: an uncompressed tar with its
# entries sorted and their times and owners zeroed (the same folder gives the same
# bytes, so the same CID). training_args.bin (a pickle, which a replay must never
# load) stays out: a resume reads the arguments the command gives.
_LEFT_OUT = ("training_args.bin",)


def archive_checkpoint(folder: Path, path: Path) -> None:
    """Write ``folder`` (a ``checkpoint-N/``) as a deterministic tar at ``path``."""
    import os
    import tarfile

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            if file.name in _LEFT_OUT:
                continue
            info = tar.gettarinfo(str(file), arcname=file.relative_to(folder).as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            info.mode = 0o644
            with file.open("rb") as handle:
                tar.addfile(info, handle)
    os.replace(tmp, path)


def unpack_checkpoint(archive: Path, folder: Path) -> None:
    """Unpack a committed checkpoint archive; regular files only, inside ``folder``
    (tarfile's ``data`` filter refuses links, devices and paths that leave it)."""
    import tarfile

    try:
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise InputError(f"{archive.name} is not a usable checkpoint archive: {exc}") from exc


def trainer_data(kwargs: Mapping[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Fingerprints of the Trainer's ``train_dataset`` and ``eval_dataset`` (a
    mapping of eval datasets gives ``eval.<name>``) where ledger can fingerprint
    them (:mod:`ledger.record.data`); others are left out with a warning.

    The Trainer hands its callbacks the train loader, not itself: it is found
    as the ``self`` of the ``Trainer`` method that called the callback. Without
    it, the train loader's dataset alone is recorded."""
    from ledger.config import load_settings
    from ledger.record.data import found_data, loader_datasets

    cache_dir = (settings or load_settings()).data_dir / "cache"
    trainer = _calling_trainer()
    if trainer is None:
        named = loader_datasets("train", kwargs.get("train_dataloader"))
    else:
        named = [("train", trainer.train_dataset)] if trainer.train_dataset is not None else []
        named += loader_datasets("eval", trainer.eval_dataset)
    return found_data(named, cache_dir=cache_dir)


def _calling_trainer() -> Trainer | None:
    import sys

    frame: FrameType | None = sys._getframe(1)
    for _ in range(16):  # Trainer.train > _inner_training_loop > handler > call_event
        if frame is None:
            break
        caller = frame.f_locals.get("self")
        if isinstance(caller, Trainer):
            return caller
        frame = frame.f_back
    return None


def _model(kwargs: Mapping[str, Any]) -> torch.nn.Module:
    model = kwargs.get("model")
    if not isinstance(model, torch.nn.Module):
        raise RecordError("the Trainer passed no model to the callback")
    return model


def _pretrained_writer(model: torch.nn.Module) -> Any:
    """Checkpoints as plain weights files; the final ``model.safetensors`` through
    ``save_pretrained`` into its folder (with ``config.json``)."""

    def save(state: Mapping[str, torch.Tensor], path: Path) -> None:
        save_pretrained = getattr(model, "save_pretrained", None)
        if path.name == WEIGHTS_NAME and callable(save_pretrained):
            save_pretrained(path.parent, state_dict=dict(state))
            return
        save_weights(state, path)

    return save


def _plain(value: Any) -> Any:
    """``value`` with anything canonical JSON cannot hold turned into text."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return str(value)
