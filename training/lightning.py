"""A Lightning callback that records the fit as one ledger run.

::

    trainer = L.Trainer(max_epochs=5, callbacks=[LedgerCallback(name="my-model")])

A thin layer over :class:`~ledger.training.hook.LedgerRun`, which does all the
recording: ``on_fit_start`` starts the run (config from ``config=`` or the
module's ``hparams``), ``on_train_epoch_end`` (which Lightning calls after the
epoch's validation) hands the logged metrics to :meth:`LedgerRun.epoch_end`
and so commits a checkpoint every ``checkpoint_every`` epochs, ``on_fit_end``
writes the final model and finalizes, ``on_exception`` marks the run failed.

The manifest's ``data`` is ``data=`` if given; else the DataModule's
``ledger_data`` (a mapping of data sources, or a method returning one); else
the datasets of the train and validation loaders (``train``, ``val``) where
they are file- or array-backed: TensorDatasets, Hugging Face datasets,
datasets with a ``ledger_fingerprint()`` method (:mod:`ledger.record.data`).
Any other is left out with a warning saying how to give it a fingerprint.

The final file is a full Lightning checkpoint written by
``trainer.save_checkpoint`` when ``out`` ends in ``.ckpt`` (``ledger verify``
reads its ``state_dict``; its hyperparameters must be plain values so that it
loads with ``weights_only=True``), else the module's state dict (``.pt`` or
``.safetensors``). Under DDP every rank runs the callback and rank 0 records
(see :mod:`ledger.training._distributed`).

With ``replayable=True`` each committed checkpoint also commits Lightning's own
checkpoint (``trainer.save_checkpoint``: weights, optimizer and scheduler states,
loop progress, and the random number generators' states, which this callback
adds) as the resume file. Such a fit is replayable by ``ledger replay`` when it
is started as ``trainer.fit(model, ..., ckpt_path=callback.ckpt_path)``: in
replay mode that is the committed checkpoint to start from, and the fit stops
after the next checkpoint's epoch, having written the replayed weights.

Install with ``pip install 'ledger[lightning]'``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from ledger.config import Settings
from ledger.errors import NotReplayableError, RecordError
from ledger.ids import Relation
from ledger.replay import ReplayOrder
from ledger.store import ArtifactStore
from ledger.training._resume import rng_states, set_rng_states
from ledger.training.hook import LedgerRun, save_weights

RNG_KEY = "ledger_rng_states"
"""Where a replayable run's Lightning checkpoints keep the generators' states."""


class LedgerCallback(pl.Callback):
    """Records ``trainer.fit`` on the ledger; the keyword arguments are :class:`LedgerRun`'s."""

    def __init__(
        self,
        *,
        name: str,
        out: str | Path = "model.ckpt",
        config: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        seed: int | None = None,
        parents: Sequence[tuple[str | bytes, Relation | str]] = (),
        checkpoint_every: int = 1,
        checkpoint_dir: str | Path | None = None,
        sweep: str | None = None,
        trial: int | None = None,
        settings: Settings | None = None,
        store: ArtifactStore | None = None,
        replayable: bool = False,
    ) -> None:
        super().__init__()
        self.out = Path(out)
        self.replayable = replayable
        self.replay = ReplayOrder.from_env()
        if self.replay is not None and not replayable:
            raise NotReplayableError(
                "not replayable: LEDGER_REPLAY is set (by `ledger replay`) but this "
                "LedgerCallback was made without replayable=True; nothing recorded",
                hint="LedgerCallback(..., replayable=True) and trainer.fit(..., "
                "ckpt_path=callback.ckpt_path)",
            )
        self._options: dict[str, Any] = {
            "name": name,
            "out": self.out,
            "data": data,
            "seed": seed,
            "parents": parents,
            "checkpoint_every": checkpoint_every,
            "checkpoint_dir": checkpoint_dir,
            "sweep": sweep,
            "trial": trial,
            "settings": settings,
            "store": store,
        }
        self._config = None if config is None else dict(config)
        self.run: LedgerRun | None = None

    @property
    def ckpt_path(self) -> str | None:
        """What to pass as ``trainer.fit(..., ckpt_path=)``: in replay mode the committed
        checkpoint the replay starts from, else None (a fresh fit)."""
        return str(self.replay.segments[0].resume) if self.replay is not None else None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the run."""
        if self.replay is not None and trainer.ckpt_path != self.ckpt_path:
            raise NotReplayableError(
                "not replayable: `ledger replay` asked to resume from a committed checkpoint, "
                "but trainer.fit() was not given it",
                hint="trainer.fit(model, ..., ckpt_path=callback.ckpt_path)",
            )
        if self.replayable and trainer.world_size > 1:
            raise RecordError(
                "LedgerCallback(replayable=True) records single-process fits only: its "
                "checkpoints are written by rank 0 alone"
            )
        config = self._config if self._config is not None else dict(pl_module.hparams)
        config.setdefault("max_epochs", trainer.max_epochs)
        options = dict(self._options)
        if options["data"] is None and trainer.is_global_zero:
            options["data"] = fit_data(trainer, options["settings"])
        resume: dict[str, Any] = {}
        if self.replayable:  # Lightning's own checkpoint (with the RNGs) is the resume file
            resume = {"save_resume": trainer.save_checkpoint, "resume_suffix": ".ckpt"}
        self.run = LedgerRun(
            pl_module, config=config, save=_keep_final(self.out), **options, **resume
        )
        self.run.start()

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Keep the random number generators' states in the checkpoint (Lightning
        does not): a resume from it draws what the run drew."""
        if self.replayable:
            checkpoint[RNG_KEY] = rng_states()

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Restore the generators' states a replayable run's checkpoint holds."""
        if RNG_KEY in checkpoint:
            set_rng_states(checkpoint[RNG_KEY])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Note the epoch's logged metrics (validation included); maybe commit a checkpoint.
        In replay mode, the replayed segment's last epoch writes its weights and stops."""
        if self.run is not None and not trainer.sanity_checking:
            epoch = trainer.current_epoch
            self.run.epoch_end(epoch, logged_metrics(trainer))
            segment = self.run.replay_segment
            if segment is not None and epoch >= segment.stop_epoch:
                trainer.should_stop = True  # one segment per fit; ledger replay runs the next

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write the final model and finalize the run."""
        if self.run is None or self.run.final is not None:
            return
        if self.run.replay is not None:  # replay mode writes nothing of the user's
            self.run.finish()
            return
        if self.out.suffix == ".ckpt":  # every rank calls it (it has a barrier); rank 0 writes
            trainer.save_checkpoint(self.out)
        self.run.finish(logged_metrics(trainer) or None)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Mark the run failed, naming the exception."""
        if self.run is not None and self.run.final is None:
            self.run.__exit__(type(exception), exception, exception.__traceback__)


def fit_data(trainer: pl.Trainer, settings: Settings | None = None) -> dict[str, Any]:
    """Fingerprints of the fit's data: the DataModule's ``ledger_data`` (a mapping
    of data sources, or a method returning one) if it has one, else the datasets
    of the train and validation loaders, where ledger can fingerprint them
    (:mod:`ledger.record.data`); others are left out with a warning."""
    from ledger.config import load_settings
    from ledger.record.data import found_data, loader_datasets

    cache_dir = (settings or load_settings()).data_dir / "cache"
    module = getattr(trainer, "datamodule", None)
    given = getattr(module, "ledger_data", None) if module is not None else None
    if callable(given):
        given = given()
    if given is not None:
        sources = given.items() if isinstance(given, Mapping) else [("data", given)]
        return found_data([(str(k), v) for k, v in sources], cache_dir=cache_dir)
    named: list[tuple[str, Any]] = []
    loops = (("train", trainer.fit_loop), ("val", trainer.fit_loop.epoch_loop.val_loop))
    for name, loop in loops:
        # the loaders are built after on_fit_start: ask their source (what fit() was given,
        # or the DataModule's / LightningModule's *_dataloader hook) as Lightning will
        source = getattr(loop, "_data_source", None)
        if source is not None and source.is_defined():
            named += loader_datasets(name, source.dataloader())
    return found_data(named, cache_dir=cache_dir)


def logged_metrics(trainer: pl.Trainer) -> dict[str, float]:
    """The trainer's scalar callback metrics as plain floats."""
    metrics: dict[str, float] = {}
    for key, value in trainer.callback_metrics.items():
        scalar = isinstance(value, torch.Tensor) and value.numel() == 1
        if scalar or isinstance(value, (int, float)):
            metrics[key] = float(value)
    return metrics


def _keep_final(final: Path) -> Any:
    """A writer for LedgerRun: checkpoints as state dicts; a final ``.ckpt`` is
    already written by ``trainer.save_checkpoint``."""

    def save(state: Mapping[str, torch.Tensor], path: Path) -> None:
        if path == final and final.suffix == ".ckpt":
            return
        save_weights(state, path)

    return save
