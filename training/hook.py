"""The PyTorch training hook: three lines commit a whole run.

::

    with LedgerRun(model, name="price-forecast", config=cfg, out="model.pt") as run:
        for epoch in range(epochs):
            ...                                   # train as usual
            run.epoch_end(epoch, {"val_loss": v})  # checkpoint every N epochs

At start the run's manifest (config, code version, environment, data
fingerprints, seed, parents) is handed to the durable outbox (:mod:`ledger.record.outbox`);
each checkpoint writes the weights file and hands over its path and metrics;
leaving the block writes the final model file (``out``; ``.pt`` via
``torch.save``, ``.safetensors`` via safetensors), hands it over and waits,
bounded by ``LEDGER_FLUSH_TIMEOUT``, for the run's records to be on chain, then
says in one line what was recorded (and what is still open, or was refused). At
start, when the chain answers, the registry and the key's committer role are
checked: a run none of whose records could land fails before training. The
training loop never waits on the chain or the store: a background worker
hashes, stores and commits. An exception inside the block records the run as
failed and propagates unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from ledger.config import Settings, load_settings
from ledger.errors import LedgerError, RecordError
from ledger.hashing.cid import Cid
from ledger.ids import Digest32, Relation, RunId
from ledger.record.manifest import build_manifest, start_code_version
from ledger.record.outbox import Entry, Outbox, flush_timeout
from ledger.store import ArtifactStore
from ledger.training._distributed import Role, rank_zero

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


@dataclass(frozen=True)
class Commit:
    """One weights file handed to the outbox, and what became of it.

    ``state`` is the journal's (``pending`` … ``confirmed``); the identities
    are filled in once the worker has stored the file.
    """

    entry_id: int
    step: int | None
    path: Path
    state: str
    file_cid: Cid | None = None
    tensor_root: bytes | None = None
    metrics_cid: Cid | None = None
    tx_hash: str | None = None
    block_number: int | None = None

    @classmethod
    def of(cls, entry: Entry) -> Commit:
        record = entry.record or {}
        return cls(
            entry_id=entry.id,
            step=entry.step,
            path=Path(entry.payload.get("path", "")),
            state=entry.state,
            file_cid=Cid.parse(record["file_cid"]) if "file_cid" in record else None,
            tensor_root=Digest32.parse(record["tensor_root"], field="tensor_root")
            if "tensor_root" in record
            else None,
            metrics_cid=Cid.parse(record["metrics_cid"]) if "metrics_cid" in record else None,
            tx_hash=entry.tx_hash,
            block_number=entry.block_number,
        )


class LedgerRun:
    """Records one training run of ``model``; use as a context manager.

    ``sweep``/``trial`` group hyperparameter-search trials (the manifest's
    ``sweep`` key); ``save`` lets a framework write weights files itself (the
    worker reads the tensor root from the written file). Under
    ``torch.distributed`` every rank enters the run and rank 0 alone records
    (training/_distributed.py).
    """

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
        store: ArtifactStore | None = None,
        code_root: Path | None = None,
        flush_timeout: float | None = None,
        sweep: str | None = None,
        trial: int | None = None,
        save: Callable[[Mapping[str, torch.Tensor], Path], None] | None = None,
    ) -> None:
        if checkpoint_every < 1:
            raise RecordError("checkpoint_every must be 1 or more (epochs between checkpoints)")
        self.model = model
        self.name = name
        self.config = dict(config)
        self.data = dict(data or {})
        self.seed = seed
        self.parents = [
            (RunId.parse(p, field="parent run id"), Relation.parse(r)) for p, r in parents
        ]
        self.checkpoint_every = checkpoint_every
        self.out = Path(out)
        self.checkpoint_dir = (
            Path(checkpoint_dir)
            if checkpoint_dir
            else (self.out.parent / f"{self.out.stem}-checkpoints")
        )
        self._settings = settings
        self._store = store
        self._code_root = code_root
        self._flush_timeout = flush_timeout
        self.outbox: Outbox | None = None
        self._run_id: str | None = None
        self.status = "new"
        self.last_metrics: dict[str, Any] = {}
        self._entries: list[int] = []
        self._final_entry: int | None = None
        self.sweep, self.trial = sweep, trial
        self._save = save or save_weights  # a framework's own writer (lightning.py, hf.py)
        self._role: Role | None = None  # set on start (training/_distributed.py)
        # on ranks other than 0: what rank 0 recorded (see _follow_start/_follow_finish)
        self._shared_commits: list[Commit] = []
        self._shared_final: Commit | None = None

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
            if self.status == "running":
                self.finish()
            return
        if self.outbox is not None and self._run_id is not None and self.status == "running":
            self.status = "failed"
            try:
                self.outbox.fail(self._run_id, f"{type(exc).__name__}: {exc}")
                self.flush()
            except LedgerError as fail_exc:  # keep the training error as the one raised
                log.warning("could not record the run as failed: %s", fail_exc)

    @property
    def run_id(self) -> str:
        if self._run_id is None:
            raise RecordError("the run is not started; use `with LedgerRun(...)` or call start()")
        return self._run_id

    @rank_zero(lambda run, run_id: run._follow_start(run_id))
    def start(self) -> str:
        """Append the run's manifest to the outbox; returns the run id (no chain wait)."""
        if self.status != "new":
            raise RecordError(f"this LedgerRun was already started ({self.status})")
        settings = self._settings or load_settings()
        code = start_code_version(self._code_root)  # git runs while the key is read
        try:
            self.outbox = Outbox.for_settings(settings, self._store)
            # fail before training when no record could land (no registry, no role)
            unreachable = self.outbox.check_chain()
        except BaseException:
            code()  # git's answer is waited for, not left behind
            raise
        if unreachable:
            self.outbox.worker.say(
                f"{unreachable}; training goes on and its records wait in the outbox "
                f"({self.outbox.journal.path})"
            )
        manifest = build_manifest(
            name=self.name,
            config=self.config,
            data=self.data,
            seed=self.seed,
            parents=[{"run_id": str(p), "relation": r.label} for p, r in self.parents],
            code_root=self._code_root,
            world_size=self._role.world_size if self._role else 1,
            backend=self._role.backend if self._role and self._role.distributed else None,
            sweep=self.sweep,
            trial=self.trial,
            cache_dir=settings.data_dir / "cache",
            code=code,
        )
        self._run_id = self.outbox.start_run(manifest, self.parents)
        self.status = "running"
        log.info("ledger run %s started", self._run_id)
        return self._run_id

    def epoch_end(self, epoch: int, metrics: Mapping[str, Any]) -> Commit | None:
        """Note an epoch's metrics; every ``checkpoint_every`` epochs commit a checkpoint."""
        self.last_metrics = dict(metrics)
        if (epoch + 1) % self.checkpoint_every:
            return None
        return self.checkpoint(epoch, metrics)

    @rank_zero(lambda run, commit: run._shared_commits.append(commit))
    def checkpoint(self, step: int, metrics: Mapping[str, Any]) -> Commit:
        """Write the model's weights to the checkpoint directory and hand them over."""
        outbox, run_id = self._require_running()
        path = self.checkpoint_dir / f"step-{step:06d}{self.out.suffix or '.pt'}"
        self._save(self.model.state_dict(), path)
        entry_id = outbox.checkpoint(run_id, step, path, metrics)
        self._entries.append(entry_id)
        return Commit(entry_id, step, path, "pending")

    @rank_zero(lambda run, commit: run._follow_finish(commit))
    def finish(
        self,
        metrics: Mapping[str, Any] | None = None,
        state_dict: Mapping[str, torch.Tensor] | None = None,
    ) -> Commit:
        """Write the final model file (``out``), hand it over, and wait (bounded) for
        the run's records to be on chain.

        ``state_dict`` overrides the model's current weights (e.g. the best epoch's
        under early stopping).
        """
        outbox, run_id = self._require_running()
        self._save(state_dict if state_dict is not None else self.model.state_dict(), self.out)
        self._final_entry = outbox.finalize(run_id, self.out, dict(metrics or self.last_metrics))
        self.status = "finished"
        self.flush()
        final = self.final
        assert final is not None
        log.info("ledger run %s finished: %s (%s)", run_id, final.file_cid, final.state)
        return final

    def flush(self, timeout: float | None = None) -> int:
        """Wait up to ``timeout`` s (default ``LEDGER_FLUSH_TIMEOUT``) for this run's
        records; returns how many are still open.

        Says on stderr, in one line, what was recorded, what is still open (and
        why) and what was refused. The process's exit neither waits for these
        records again nor repeats the line.
        """
        if self.outbox is None or self._run_id is None:
            return 0
        if timeout is None:
            timeout = self._flush_timeout if self._flush_timeout is not None else flush_timeout()
        remaining = self.outbox.flush(timeout, self._run_id)
        self.outbox.worker.say(self.outbox.report(self._run_id, timeout))
        self.outbox.settled(self._run_id)
        return remaining

    @property
    def commits(self) -> list[Commit]:
        """The checkpoints handed over so far, as the journal sees them now."""
        if self.outbox is None:
            return list(self._shared_commits)
        ids = self.outbox.journal_ids(self._entries)  # records a full disk holds are not in it
        return [Commit.of(e) for e in self.outbox.journal.entries(ids=ids)] if ids else []

    @property
    def manifest_cid(self) -> Cid | None:
        """The CID of the run's manifest, once the worker has stored it."""
        if self.outbox is None or self._run_id is None:
            return None
        for entry in self.outbox.journal.entries(run_id=self._run_id):
            if entry.kind == "start" and entry.record is not None:
                return Cid.parse(entry.record["manifest_cid"])
        return None

    @property
    def final(self) -> Commit | None:
        """The final weights' commit, once :meth:`finish` handed them over."""
        if self.outbox is None or self._final_entry is None:
            return self._shared_final
        return Commit.of(self.outbox.journal.entry(self._final_entry))

    def _follow_start(self, run_id: str) -> None:
        """On a rank other than 0: the run rank 0 started (no outbox here)."""
        self._run_id, self.status = run_id, "running"

    def _follow_finish(self, commit: Commit) -> None:
        self._shared_final, self.status = commit, "finished"

    def _require_running(self) -> tuple[Outbox, str]:
        if self.outbox is None or self._run_id is None:
            raise RecordError("the run is not started; use `with LedgerRun(...)` or call start()")
        if self.status != "running":
            raise RecordError(f"run {self._run_id} is {self.status}; it takes no more records")
        return self.outbox, self._run_id
