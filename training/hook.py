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

A run given ``optimizer=`` (and ``scheduler=``, ``seed=``) is *replayable*:
each checkpoint also commits a resume file (training/_resume.py) and the
digests of the data orders its epochs reported (:meth:`LedgerRun.data_order`,
:meth:`LedgerRun.permutation`). Its loop iterates :meth:`LedgerRun.epochs`,
which starts where a resume (``resume=``) or ``ledger replay`` says; in replay
mode (``LEDGER_REPLAY``) nothing is recorded: for each segment ``ledger replay``
asks for, the run restores the committed state, trains up to the next
checkpoint with deterministic algorithms and writes the weights where ``ledger
replay`` reads them; after the last segment the loop ends. Everything the
training depends on must live in the model, the optimizer, the scheduler and
the RNGs, or follow from the epoch: that is what a resume restores.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from ledger.config import Settings, load_settings
from ledger.errors import LedgerError, NotReplayableError, RecordError
from ledger.hashing.cid import Cid
from ledger.hashing.tensors import TensorDigest
from ledger.ids import Digest32, Relation, RunId
from ledger.record.manifest import build_manifest, start_code_version
from ledger.record.outbox import Entry, Outbox, flush_timeout
from ledger.replay import ReplayOrder, ReplaySegment
from ledger.store import ArtifactStore
from ledger.training._distributed import Role, rank_zero
from ledger.training._resume import load_resume, order_digest, save_resume

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


def save_and_digest(state_dict: Mapping[str, torch.Tensor], path: Path) -> TensorDigest | None:
    """:func:`save_weights`, with the tensors' digests computed from memory on the
    other cores while the file is written: the same bytes the file holds, so the
    worker reads the file for its CID alone and the run's end waits for one hash
    of the final weights, not two. None (the worker then reads the tensors from
    the file) for tensors the tensor root does not take."""
    from concurrent.futures import ThreadPoolExecutor

    from ledger.errors import InputError
    from ledger.hashing._engine import default_workers
    from ledger.hashing.tensors import state_dict_digest_parallel

    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    with ThreadPoolExecutor(1, thread_name_prefix="ledger-final") as pool:
        digest = pool.submit(state_dict_digest_parallel, tensors, default_workers())
        save_weights(tensors, path)
        try:
            return digest.result()
        except InputError:  # an unsupported dtype...: the file decides, read by the worker
            return None


def save_sharded(state_dict: Mapping[str, Any], folder: Path) -> None:
    """Every rank writes its shards of ``state_dict`` into the new folder ``folder``
    with ``torch.distributed.checkpoint`` (a collective: every rank calls it).

    A folder that already holds files is refused on every rank before any
    writes (the folder's CID would cover stale shards of an earlier save).
    """
    from torch.distributed.checkpoint.state_dict_saver import save

    if folder.is_dir() and any(folder.iterdir()):
        raise RecordError(
            f"{folder} already holds files; a sharded checkpoint is written to a new folder",
            hint="remove the folder, or give the run another checkpoint_dir or out",
        )
    folder.mkdir(parents=True, exist_ok=True)
    save(dict(state_dict), checkpoint_id=folder)


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
    (training/_distributed.py). ``sharded=True`` (FSDP and other sharded
    models) writes each checkpoint and the final weights as a
    ``torch.distributed.checkpoint`` folder, every rank its own shard files;
    rank 0 records the folder: its ``ipfs add -r --hidden`` CID and the tensor
    root of the logical state dict (:mod:`ledger.hashing.dcp`).
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
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any | None = None,
        resume: str | Path | None = None,
        save_resume: Callable[[Path], None] | None = None,
        resume_suffix: str = ".pt",
        sharded: bool = False,
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
        # replayable runs (training/_resume.py): what a resume needs, with each checkpoint
        self.optimizer, self.scheduler = optimizer, scheduler
        # a framework's own checkpoint as the resume file (lightning.py, hf.py): it
        # writes it, and in replay mode restores it itself
        self._save_resume, self._resume_suffix = save_resume, resume_suffix
        if (scheduler is not None or resume is not None) and optimizer is None:
            raise RecordError(
                "scheduler= and resume= need optimizer= too: a run is replayable "
                "only with its optimizer's state"
            )
        self._resume_from = Path(resume) if resume is not None else None
        # every rank writes its shards of each checkpoint (torch.distributed.checkpoint)
        self.sharded = sharded
        if sharded and (optimizer is not None or save is not None or save_resume is not None):
            raise RecordError(
                "sharded=True writes torch.distributed.checkpoint folders itself; it takes "
                "none of save=, save_resume= and optimizer= (replay of sharded runs is not "
                "supported yet)"
            )
        self._first_epoch = 0
        self._orders: dict[int, str] = {}  # epoch -> data order digest, since the last checkpoint
        self._data_fingerprints: dict[str, Any] = {}
        self.replay = ReplayOrder.from_env()
        self._segment = 0  # in replay mode, the index of the segment being replayed
        if self.replay is not None and not self.replayable:
            raise NotReplayableError(
                "not replayable: LEDGER_REPLAY is set (by `ledger replay`) but this LedgerRun "
                "has no optimizer=, so it cannot restore the committed state; nothing recorded",
                hint="pass optimizer=, scheduler= and seed= to LedgerRun",
            )

    @property
    def replayable(self) -> bool:
        """Whether each checkpoint commits what a resume needs (``optimizer=`` given,
        or a framework's ``save_resume``)."""
        return self.optimizer is not None or self._save_resume is not None

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
            if self.status in ("running", "replaying"):
                self.finish()
            return
        if self.status == "replaying":  # nothing was recorded, nothing to fail
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
        if self.replay is not None:
            return self._start_replay(self.replay)
        if self._resume_from is not None:
            self._first_epoch = self._restore(self._resume_from) + 1
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
            extra={"replay": self._replay_facts()} if self.replayable else None,
        )
        self._run_id = self.outbox.start_run(manifest, self.parents)
        self.status = "running"
        log.info("ledger run %s started", self._run_id)
        return self._run_id

    def epochs(self, count: int) -> Iterator[int]:
        """The epochs to run of ``count``: from 0, or after the epoch a resume
        restored; in replay mode the interval ``ledger replay`` asked for, after
        which the replayed weights are written and the loop ends."""
        if self.replay is not None:
            for index, segment in enumerate(self.replay.segments):
                if index:  # each segment starts from its own committed state
                    self._enter_segment(index)
                yield from range(segment.start_epoch, segment.stop_epoch + 1)
            return
        yield from range(self._first_epoch, count)

    def data_order(self, epoch: int, indices: Iterable[int] | torch.Tensor) -> str:
        """Note the order in which ``epoch`` visits the data (the sampler's
        indices); its digest is committed with the next checkpoint. Returns it."""
        digest = order_digest(indices)
        self._orders[epoch] = digest
        return digest

    def permutation(self, epoch: int, n: int) -> list[int]:
        """A seeded shuffle of ``range(n)`` for ``epoch`` (from ``seed`` and the
        epoch alone, so a resume or replay visits the same order), noted as
        :meth:`data_order`."""
        if self.seed is None:
            raise RecordError("permutation() needs the run's seed: pass seed= to LedgerRun")
        generator = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + epoch)
        order = [int(i) for i in torch.randperm(n, generator=generator)]
        self.data_order(epoch, order)
        return order

    def epoch_end(self, epoch: int, metrics: Mapping[str, Any]) -> Commit | None:
        """Note an epoch's metrics; every ``checkpoint_every`` epochs commit a checkpoint."""
        self.last_metrics = dict(metrics)
        if (epoch + 1) % self.checkpoint_every:
            return None
        return self.checkpoint(epoch, metrics)

    def checkpoint(self, step: int, metrics: Mapping[str, Any]) -> Commit:
        """Write the model's weights to the checkpoint directory and hand them over
        (a replayable run's resume file with them).

        A ``sharded`` run's checkpoint is a ``torch.distributed.checkpoint`` folder
        (``step-000007/``) that every rank writes its shards into (every rank must
        call this, as it must call ``dcp.save``); rank 0 then hands the folder over.
        """
        if not self.sharded:
            return self._checkpoint(step, metrics, None)
        if self.status == "running":
            path = self.checkpoint_dir / f"step-{step:06d}"
            save_sharded(self.model.state_dict(), path)
            return self._checkpoint(step, metrics, path)
        return self._checkpoint(step, metrics, None)  # rank 0 says why it cannot

    @rank_zero(lambda run, commit: run._shared_commits.append(commit))
    def _checkpoint(self, step: int, metrics: Mapping[str, Any], written: Path | None) -> Commit:
        if self.status == "replaying":
            return self._replay_checkpoint(step)
        outbox, run_id = self._require_running()
        if written is not None:  # every rank wrote its shards already
            path = written
        else:
            path = self.checkpoint_dir / f"step-{step:06d}{self.out.suffix or '.pt'}"
            self._save(self.model.state_dict(), path)
        resume = None
        if self.replayable:
            if "resume" in metrics:
                raise RecordError("metric 'resume' is a replayable run's own; rename that metric")
            resume = self.checkpoint_dir / f"step-{step:06d}.resume{self._resume_suffix}"
            if self._save_resume is not None:
                self._save_resume(resume)
            else:
                assert self.optimizer is not None
                save_resume(
                    resume,
                    epoch=step,
                    model=self.model,
                    optimizer=self.optimizer,
                    scheduler=self.scheduler,
                )
            orders = {str(e): d for e, d in sorted(self._orders.items())}
            metrics = {**metrics, "resume": {"epoch": step, "data_order": orders}}
            self._orders.clear()
        entry_id = outbox.checkpoint(run_id, step, path, metrics, resume=resume)
        self._entries.append(entry_id)
        return Commit(entry_id, step, path, "pending")

    def finish(
        self,
        metrics: Mapping[str, Any] | None = None,
        state_dict: Mapping[str, torch.Tensor] | None = None,
    ) -> Commit:
        """Write the final model file (``out``), hand it over, and wait (bounded) for
        the run's records to be on chain.

        ``state_dict`` overrides the model's current weights (e.g. the best epoch's
        under early stopping). A ``sharded`` run's final weights are the folder
        ``out``, written by every rank (every rank must call this).
        """
        written = None
        if self.sharded and self.status == "running":
            written = self.out
            save_sharded(state_dict if state_dict is not None else self.model.state_dict(), written)
        return self._finish(metrics, state_dict, written)

    @rank_zero(lambda run, commit: run._follow_finish(commit))
    def _finish(
        self,
        metrics: Mapping[str, Any] | None,
        state_dict: Mapping[str, torch.Tensor] | None,
        written: Path | None,
    ) -> Commit:
        if self.status == "replaying":  # the replayed weights were written at the checkpoint
            self.status = "replayed"
            return Commit(0, None, self.out, "replayed")
        outbox, run_id = self._require_running()
        tensors = None
        if written is None:
            weights = state_dict if state_dict is not None else self.model.state_dict()
            if self._save is save_weights:  # our writer: hash the tensors as it writes them
                tensors = save_and_digest(weights, self.out)
            else:
                self._save(weights, self.out)
        self._final_entry = outbox.finalize(
            run_id, self.out, dict(metrics or self.last_metrics), tensors=tensors
        )
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

    # -- replayable runs (training/_resume.py) ---------------------------------------

    def _replay_facts(self) -> dict[str, Any]:
        """What tells a replayer whether bitwise replay can be expected."""
        cuda = any(p.is_cuda for p in self.model.parameters())
        facts: dict[str, Any] = {
            "resumable": True,
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "device": "cuda" if cuda else "cpu",
        }
        if self._resume_from is not None:
            facts["resumed_after_epoch"] = self._first_epoch - 1
        return facts

    def _restore(self, path: Path) -> int:
        return load_resume(
            path, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler
        )

    def _start_replay(self, order: ReplayOrder) -> str:
        """Replay mode: restore the first segment's committed state; record nothing."""
        from ledger.record.data import fingerprints

        torch.use_deterministic_algorithms(True)
        self._enter_segment(0)
        self._data_fingerprints = fingerprints(self.data)  # read afresh: no cache
        self._run_id, self.status = order.run_id, "replaying"
        return order.run_id

    @property
    def replay_segment(self) -> ReplaySegment | None:
        """In replay mode, the segment being replayed."""
        return self.replay.segments[self._segment] if self.replay is not None else None

    def _enter_segment(self, index: int) -> None:
        """Restore segment ``index``'s committed resume file (model, optimizer,
        scheduler, RNGs) and forget the data orders noted so far."""
        assert self.replay is not None
        self._segment = index
        segment = self.replay.segments[index]
        self._orders.clear()
        if self._save_resume is not None:  # the framework restores its own checkpoint
            return
        epoch = self._restore(segment.resume)
        if epoch + 1 != segment.start_epoch:
            raise RecordError(
                f"the replay's resume file ends epoch {epoch}, not {segment.start_epoch - 1}"
            )
        log.info(
            "replaying run %s, epochs %d-%d", self.replay.run_id, epoch + 1, segment.stop_epoch
        )

    def _replay_checkpoint(self, step: int) -> Commit:
        """In replay mode: the segment's last checkpoint writes the replayed
        weights and what the loop reported; earlier ones only note their orders."""
        import json

        segment = self.replay_segment
        assert segment is not None
        if step == segment.stop_epoch:
            self._save(self.model.state_dict(), segment.out)
            result = {
                "epoch": step,
                "data_order": {str(e): d for e, d in sorted(self._orders.items())},
                "data": self._data_fingerprints,
            }
            segment.result.write_text(json.dumps(result))
        return Commit(0, step, segment.out, "replayed")

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
