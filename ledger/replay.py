"""Replay verification: re-run segments of a recorded training run and compare.

``ledger verify`` proves a file is what a run committed; replay checks that the
committed checkpoints came from the training the run claims (Proof-of-Learning,
Jia et al. 2021). A replayable run (``LedgerRun(..., optimizer=...)``) commits
with each checkpoint a resume file (model, optimizer, scheduler and RNG states,
the epoch) and the digests of its epochs' data orders, bound on chain through
the checkpoint's metrics document (``resume``).

:func:`replay_run` picks K of the run's checkpoint intervals with the
*verifier's* seed (at random, or the K largest weight updates), refuses when the
working tree's code is not the manifest's (unless told to go on), and for each
interval k -> k+1 runs the training command with ``LEDGER_REPLAY`` naming a
replay order: the hook restores committed checkpoint k's resume file (fetched
from the store and re-hashed; its model must be checkpoint k's weights), trains
with deterministic algorithms up to checkpoint k+1, writes the weights and stops.
Each segment's verdict:

* **identical** -- the replayed weights have checkpoint k+1's tensor root;
* **within tolerance** -- every tensor and the whole model under the
  thresholds (:class:`Thresholds`: L-inf of the difference, L2 of the difference
  relative to the committed weights' norm, cosine distance);
* **diverged** -- naming the tensors over a threshold and their distances, or a
  data order or data fingerprint that differs from the committed one.

Overall **reproduced** (exit 0) when every segment is identical or within
tolerance, else **diverged** (exit 8). What stops a verdict is a
:class:`~ledger.errors.ReplayError` (exit 9): not replayable, code drift, the
command failed. An interrupted replay (Ctrl-C, SIGTERM) stops the training
command (its whole process group), removes its temporary files and raises
:class:`~ledger.errors.ReplayInterruptedError` (exit 130): no verdict, nothing
recorded.

``ledger replay --record`` stores the report (canonical JSON, schema
``ledger.replay-report/v1``) and attests each replayed interval on chain
(``attestReplay``: run, from and to step, reproduced or not, the report's
digest), signed by the replayer's key: :func:`record_report`,
:func:`attestations`.

Replay is no proof against a committer who controls the code path the verifier
runs (the code is the committer's own); it shows that the committed checkpoints
follow from the committed code, config, data and each other.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import json
import math
import os
import random
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger.documents import DocumentKind, read_document
from ledger.errors import (
    CodeDriftError,
    ConfigError,
    InputError,
    IntegrityError,
    NotReplayableError,
    ReplayError,
    ReplayInterruptedError,
)
from ledger.hashing.cid import Cid, file_cid
from ledger.ids import to_hex
from ledger.store import ArtifactStore, find_by_digest

if TYPE_CHECKING:
    import torch

    from ledger.chain.admin import RegistryAdmin
    from ledger.chain.reader import RegistryReader

__all__ = [
    "Attestation",
    "ReplayOrder",
    "ReplayOutcome",
    "ReplayReport",
    "ReplaySegment",
    "Segment",
    "Thresholds",
    "attestations",
    "read_report",
    "record_report",
    "replay_run",
]

# -- replay orders: what ledger replay asks of one run of the training command ------
#
# ``ledger replay`` runs the training command with ``LEDGER_REPLAY`` naming a JSON
# replay order: for each segment, the resume file to start from, the epochs to run,
# and where to write the replayed weights and what the loop reported. The hook
# (training/hook.py) reads it. Orders are written before ledger needs torch.

REPLAY_ENV = "LEDGER_REPLAY"
RESULT_SUFFIX = ".json"
"""The replay result (data orders and fingerprints) sits next to the replayed weights."""


@dataclass(frozen=True)
class ReplaySegment:
    """One interval to replay: from a committed resume file to the next checkpoint."""

    resume: Path  # the committed resume file of checkpoint k (fetched and re-hashed)
    start_epoch: int  # the first epoch to run: checkpoint k's epoch + 1
    stop_epoch: int  # checkpoint k+1's epoch: its weights are written to ``out``
    out: Path

    @property
    def result(self) -> Path:
        """Where the loop's report (data orders, fingerprints) goes, next to ``out``."""
        return self.out.with_name(self.out.name + RESULT_SUFFIX)


@dataclass(frozen=True)
class ReplayOrder:
    """What ``ledger replay`` asks of one run of the training command: the
    segments to replay, in order. A :class:`~ledger.training.hook.LedgerRun` loop
    replays them all in one process (restoring each segment's committed state,
    so none depends on the one before); a framework's callback replays the first
    and stops, and ``ledger replay`` runs the command again for the rest."""

    run_id: str
    segments: tuple[ReplaySegment, ...]

    @classmethod
    def from_env(cls) -> ReplayOrder | None:
        where = os.environ.get(REPLAY_ENV)
        if not where:
            return None
        try:
            body = json.loads(Path(where).read_text())
            segments = tuple(
                ReplaySegment(
                    resume=Path(s["resume"]),
                    start_epoch=int(s["start_epoch"]),
                    stop_epoch=int(s["stop_epoch"]),
                    out=Path(s["out"]),
                )
                for s in body["segments"]
            )
            if not segments:
                raise ValueError("no segments")
            return cls(run_id=str(body["run_id"]), segments=segments)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{REPLAY_ENV}={where} is not a replay order ({exc})",
                hint=f"{REPLAY_ENV} is set by `ledger replay`; unset it to train",
            ) from exc

    def write(self, path: Path) -> None:
        body = {
            "run_id": self.run_id,
            "segments": [
                {
                    "resume": str(s.resume),
                    "start_epoch": s.start_epoch,
                    "stop_epoch": s.stop_epoch,
                    "out": str(s.out),
                }
                for s in self.segments
            ],
        }
        path.write_text(json.dumps(body))


class ReplayOutcome(enum.StrEnum):
    REPRODUCED = "reproduced"
    DIVERGED = "diverged"

    @property
    def exit_code(self) -> int:
        return 0 if self is ReplayOutcome.REPRODUCED else 8


@dataclass(frozen=True)
class Thresholds:
    """Distances under which replayed weights count as the committed ones.

    Each applies per tensor and to the whole model (all tensors as one vector):
    ``linf`` the largest absolute difference, ``l2`` the L2 norm of the
    difference over the committed weights' L2 norm, ``cosine`` one minus the
    cosine similarity. The defaults expect what deterministic CPU replay gives
    (bit for bit); loosen them for replays on other hardware.
    """

    linf: float = 1e-5
    l2: float = 1e-5
    cosine: float = 1e-6


@dataclass(frozen=True)
class Distance:
    name: str
    linf: float
    l2: float
    cosine: float

    def over(self, limits: Thresholds) -> bool:
        return self.linf > limits.linf or self.l2 > limits.l2 or self.cosine > limits.cosine

    def text(self) -> str:
        return f"{self.name} (L-inf {self.linf:.3g}, L2 {self.l2:.3g}, cosine {self.cosine:.3g})"

    def to_json(self) -> dict[str, Any]:
        """As JSON; ``null`` for a distance that is infinite (a tensor missing on one
        side, or of another shape)."""
        return {
            "tensor": self.name,
            "linf": _finite(self.linf),
            "l2": _finite(self.l2),
            "cosine": _finite(self.cosine),
        }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass
class Segment:
    """One replayed interval: from committed checkpoint ``start`` to ``stop``."""

    index: int
    start: int
    stop: int
    verdict: str = "diverged"  # identical | within tolerance | diverged
    problems: list[str] = field(default_factory=list)
    overall: Distance | None = None
    diverged_tensors: list[Distance] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verdict != "diverged"

    def line(self) -> str:
        head = f"segment {self.index} (checkpoint {self.start} -> {self.stop}): {self.verdict}"
        details = list(self.problems)
        if self.diverged_tensors:
            shown = ", ".join(d.text() for d in self.diverged_tensors[:5])
            more = len(self.diverged_tensors) - 5
            details.append(
                f"tensors over the thresholds: {shown}" + (f" +{more}" if more > 0 else "")
            )
        if self.overall is not None and self.verdict != "identical":
            details.append(f"whole model: {self.overall.text().removeprefix('model ')}")
        return head + "".join(f"; {d}" for d in details)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "from_step": self.start,
            "to_step": self.stop,
            "verdict": self.verdict,
            "problems": self.problems,
            "overall": self.overall.to_json() if self.overall else None,
            "diverged_tensors": [d.to_json() for d in self.diverged_tensors],
        }


@dataclass
class ReplayReport:
    run_id: str
    seed: int
    pick: str
    intervals: int
    thresholds: Thresholds
    segments: list[Segment] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def outcome(self) -> ReplayOutcome:
        ok = self.segments and all(s.ok for s in self.segments)
        return ReplayOutcome.REPRODUCED if ok else ReplayOutcome.DIVERGED

    def lines(self) -> list[str]:
        head = (
            f"run {self.run_id}: {self.outcome.value.upper()} "
            f"({len(self.segments)} of {self.intervals} intervals, pick {self.pick}, "
            f"seed {self.seed})"
        )
        return [
            head,
            *(f"  {s.line()}" for s in self.segments),
            *(f"  note: {n}" for n in self.notes),
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "outcome": self.outcome.value,
            "exit_code": self.outcome.exit_code,
            "seed": self.seed,
            "pick": self.pick,
            "intervals": self.intervals,
            "thresholds": {
                "linf": self.thresholds.linf,
                "l2": self.thresholds.l2,
                "cosine": self.thresholds.cosine,
            },
            "segments": [s.to_json() for s in self.segments],
            "notes": self.notes,
        }


@dataclass(frozen=True)
class _Checkpoint:
    step: int
    weights_digest: bytes
    tensor_root: bytes
    metrics: dict[str, Any]

    @property
    def resume(self) -> dict[str, Any] | None:
        found = self.metrics.get("metrics", {}).get("resume")
        return found if isinstance(found, dict) and "cid" in found else None


# -- the run's records ------------------------------------------------------------


def _load_run(
    reader: RegistryReader, store: ArtifactStore, run_id: bytes
) -> tuple[dict[str, Any], list[_Checkpoint]]:
    started = reader.events("RunStarted", run_id)
    if not started:
        raise InputError(f"no run {to_hex(run_id)} on the registry at {reader.address}")
    manifest = read_document(store, bytes(started[0]["manifestDigest"]), DocumentKind.MANIFEST)
    by_step: dict[int, _Checkpoint] = {}
    for event in reader.events("CheckpointCommitted", run_id):
        step = int(event["step"])
        metrics = read_document(store, bytes(event["metricsDigest"]), DocumentKind.METRICS).body
        by_step[step] = _Checkpoint(
            step, bytes(event["weightsDigest"]), bytes(event["tensorRoot"]), metrics
        )
    return manifest.body, [by_step[s] for s in sorted(by_step)]


def _require_replayable(run_hex: str, checkpoints: Sequence[_Checkpoint]) -> None:
    if len(checkpoints) < 2:
        raise NotReplayableError(
            f"not replayable: run {run_hex} has {len(checkpoints)} checkpoint(s); "
            "replay re-runs the interval between two committed checkpoints",
        )
    missing = [c.step for c in checkpoints[:-1] if c.resume is None]
    if missing:
        which = "any" if len(missing) == len(checkpoints) - 1 else f"step(s) {missing}"
        raise NotReplayableError(
            f"not replayable: run {run_hex} committed no resume state (optimizer, scheduler, "
            f"RNG states, epoch) with {which} of its checkpoints; it was recorded without "
            "LedgerRun(..., optimizer=...)",
            hint="record runs with LedgerRun(model, ..., optimizer=opt, scheduler=sched, "
            "seed=seed) and iterate run.epochs(n)",
        )


def code_drift(manifest: Mapping[str, Any], root: Path | None) -> str | None:
    """How the working tree's code differs from the manifest's, or None."""
    from ledger.record.manifest import code_version

    claimed = manifest.get("code") or {}
    if claimed.get("vcs") != "git":
        return "the run's manifest records no git commit, so its code cannot be checked"
    here = code_version(root)
    if here.get("vcs") != "git":
        return "the working tree is not a git checkout with a commit"
    if here["commit"] != claimed.get("commit"):
        return f"the working tree is at commit {here['commit']}, the run at {claimed.get('commit')}"
    if here.get("uncommitted_sha256") != claimed.get("uncommitted_sha256"):
        return (
            "the working tree's uncommitted changes differ from the run's (sha256 "
            f"{here.get('uncommitted_sha256')} here, {claimed.get('uncommitted_sha256')} recorded)"
        )
    return None


# -- files from the store -----------------------------------------------------------


def _fetch(store: ArtifactStore, cid: Cid, where: Path) -> Path:
    where.write_bytes(store.get_bytes(cid))
    again = file_cid(where, cid_version=cid.version)
    if again.digest != cid.digest:
        raise IntegrityError(f"{where.name}: the store's bytes for {cid} hash to {again}")
    return where


def _fetch_weights(store: ArtifactStore, digest: bytes, folder: Path, step: int) -> Path:
    cid = find_by_digest(store, digest)
    if cid is None:
        raise NotReplayableError(
            f"checkpoint {step}'s weights ({to_hex(digest)}) are not in the store",
            hint="configure the store (or IPFS node) that holds the run's files",
        )
    data = store.get_bytes(cid)
    suffix = ".safetensors" if data[8:9] == b"{" else ".pt"
    return _fetch(store, cid, folder / f"checkpoint-{step}{suffix}")


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    if tarfile.is_tarfile(path):  # a Hugging Face checkpoint folder (training/hf.py)
        return _tar_weights(path)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(loaded, dict) and "model" in loaded and loaded.get("format"):
        loaded = loaded["model"]  # a resume file
    elif isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]  # a Lightning checkpoint
    return {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}


def _tar_weights(path: Path) -> dict[str, torch.Tensor]:
    """The weights (``model.safetensors``) in a tar of a Hugging Face checkpoint folder."""
    from safetensors.torch import load

    with tarfile.open(path) as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith("model.safetensors")), None)
        if member is None or not member.isfile():
            raise InputError(f"{path.name}: the checkpoint archive holds no model.safetensors")
        extracted = tar.extractfile(member)
        assert extracted is not None
        return dict(load(extracted.read()))


def distances(
    replayed: Mapping[str, torch.Tensor], committed: Mapping[str, torch.Tensor]
) -> tuple[Distance, list[Distance]]:
    """The whole model's distance and each tensor's (replayed vs committed)."""
    import torch

    def distance(name: str, a: torch.Tensor, b: torch.Tensor) -> Distance:
        a, b = a.double().reshape(-1), b.double().reshape(-1)
        diff = a - b
        linf = float(diff.abs().max()) if diff.numel() else 0.0
        norm = float(b.norm())
        l2 = float(diff.norm()) / norm if norm else float(diff.norm())
        denominator = float(a.norm()) * norm
        cosine = 1.0 - float(a @ b) / denominator if denominator else float(bool(diff.any()))
        return Distance(name, linf, l2, max(cosine, 0.0))

    per: list[Distance] = []
    flat_a, flat_b = [], []
    for name in sorted(set(replayed) | set(committed)):
        a, b = replayed.get(name), committed.get(name)
        if a is None or b is None or a.shape != b.shape:
            inf = float("inf")
            per.append(Distance(name, inf, inf, inf))
            continue
        if not (a.is_floating_point() or b.is_floating_point()):
            a, b = a.double(), b.double()
        per.append(distance(name, a, b))
        flat_a.append(a.double().reshape(-1))
        flat_b.append(b.double().reshape(-1))
    whole = (
        distance("model", torch.cat(flat_a), torch.cat(flat_b))
        if flat_a
        else Distance("model", 0.0, 0.0, 0.0)
    )
    return whole, per


# -- picking segments ---------------------------------------------------------------


def _pick(
    checkpoints: Sequence[_Checkpoint],
    count: int,
    pick: str,
    seed: int,
    weights: Callable[[int], Path],
) -> list[int]:
    intervals = list(range(len(checkpoints) - 1))
    if count >= len(intervals):
        return intervals
    if pick == "random":
        return sorted(random.Random(seed).sample(intervals, count))
    if pick != "largest":
        raise InputError(f"--pick {pick!r}: use random or largest")
    # Proof-of-Learning's choice: the intervals whose weights moved most
    sizes = []
    previous = _tensors(weights(0))
    for index in intervals:
        current = _tensors(weights(index + 1))
        whole, _ = distances(current, previous)
        sizes.append((whole.l2, index))
        previous = current
    return sorted(index for _, index in sorted(sizes, reverse=True)[:count])


# -- replaying ----------------------------------------------------------------------


def replay_run(
    reader: RegistryReader,
    store: ArtifactStore,
    run: str,
    command: Sequence[str],
    *,
    segments: int = 2,
    pick: str = "random",
    seed: int | None = None,
    allow_code_drift: bool = False,
    thresholds: Thresholds = Thresholds(),
    code_root: Path | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> ReplayReport:
    """Replay ``segments`` intervals of ``run`` with ``command`` (see the module)."""
    if not command:
        raise InputError(
            "no training command to replay", hint="ledger replay RUN -- python train.py ..."
        )
    if segments < 1:
        raise InputError(f"--segments {segments}: replay at least one interval")
    if pick not in ("random", "largest"):
        raise InputError(f"--pick {pick!r}: use random or largest")
    run_id = reader.resolve_run(run, exists=True)
    run_hex = to_hex(run_id)
    manifest, checkpoints = _load_run(reader, store, run_id)
    _require_replayable(run_hex, checkpoints)
    seed = seed if seed is not None else int.from_bytes(os.urandom(4), "big")
    report = ReplayReport(run_hex, seed, pick, len(checkpoints) - 1, thresholds)

    drift = code_drift(manifest, code_root)
    if drift is not None:
        if not allow_code_drift:
            raise CodeDriftError(
                f"refusing to replay run {run_hex}: {drift}",
                hint="check out the run's commit (and its uncommitted changes), or pass "
                "--allow-code-drift to replay anyway (the verdict says so)",
            )
        report.notes.append(f"code drift allowed: {drift}")
    facts = (manifest.get("extra") or {}).get("replay") or {}
    if facts.get("device") == "cuda" and not facts.get("deterministic"):
        report.notes.append(
            "the run's manifest says it trained on CUDA without deterministic algorithms: "
            "bitwise replay is not expected; the thresholds decide"
        )

    doing = "fetching the run's checkpoints"
    try:
        with tempfile.TemporaryDirectory(prefix="ledger-replay-") as tmp:
            folder = Path(tmp)
            fetched: dict[int, Path] = {}

            def weights(index: int) -> Path:
                if index not in fetched:
                    cp = checkpoints[index]
                    fetched[index] = _fetch_weights(store, cp.weights_digest, folder, cp.step)
                return fetched[index]

            planned = [
                _plan(report, checkpoints, index, store, folder)
                for index in _pick(checkpoints, segments, pick, seed, weights)
            ]
            pending = planned
            while pending:
                doing = "replaying " + ", ".join(
                    f"checkpoint {p.segment.start} -> {p.segment.stop}" for p in pending
                )
                say(doing)
                ReplayOrder(run_hex, tuple(p.order for p in pending)).write(folder / "order.json")
                # while the command starts and trains, check what it resumes from and
                # fetch what it must reach (ledger's own torch import overlaps the command's)
                _run_command(
                    command,
                    folder / "order.json",
                    code_root,
                    meanwhile=functools.partial(_prepare, pending, checkpoints, weights),
                )
                done = [p for p in pending if p.order.out.is_file()]
                if not done:
                    raise ReplayError(
                        f"`{' '.join(command)}` ended without writing the replayed weights of "
                        f"checkpoint {pending[0].segment.stop}",
                        hint="its loop must iterate run.epochs(n) and call run.epoch_end() "
                        "each epoch, with the checkpoint_every the run was recorded with",
                    )
                for p in done:
                    _judge(p, checkpoints, weights, manifest, thresholds)
                pending = [p for p in pending if p not in done]
    except KeyboardInterrupt as exc:
        raise ReplayInterruptedError(
            f"replay of run {run_hex} interrupted while {doing}: no verdict; the training "
            "command was stopped, the replay's temporary files removed, nothing recorded",
            hint="run ledger replay again (with the same --seed to pick the same intervals)",
        ) from exc
    return report


@dataclass
class _Planned:
    segment: Segment
    order: ReplaySegment


def _plan(
    report: ReplayReport,
    checkpoints: Sequence[_Checkpoint],
    index: int,
    store: ArtifactStore,
    folder: Path,
) -> _Planned:
    """Fetch (and re-hash) interval ``index``'s committed resume file; its order."""

    start, stop = checkpoints[index], checkpoints[index + 1]
    segment = Segment(index, start.step, stop.step)
    report.segments.append(segment)
    resume_info = start.resume
    assert resume_info is not None  # _require_replayable
    resume = _fetch(store, Cid.parse(resume_info["cid"]), folder / f"resume-{index}.pt")
    out = folder / f"replayed-{index}.pt"
    return _Planned(segment, ReplaySegment(resume, start.step + 1, stop.step, out))


def _prepare(
    pending: Sequence[_Planned],
    checkpoints: Sequence[_Checkpoint],
    weights: Callable[[int], Path],
) -> None:
    """Check that each resume file holds its checkpoint's weights; fetch the
    weights each segment must reach."""
    from ledger.hashing.tensors import state_dict_digest

    for p in pending:
        start = checkpoints[p.segment.index]
        resumed = _tensors(p.order.resume)
        if state_dict_digest(resumed).root != start.tensor_root and not _same_weights(
            resumed, _tensors(weights(p.segment.index))
        ):
            p.segment.problems.append(
                f"checkpoint {start.step}'s resume file holds other weights than the "
                "checkpoint committed"
            )
        weights(p.segment.index + 1)


def _same_weights(
    resumed: Mapping[str, torch.Tensor], committed: Mapping[str, torch.Tensor]
) -> bool:
    """Whether a resume file's weights are the committed checkpoint's, where the file
    leaves out tied weights (``save_pretrained`` writes a tied tensor once): each of
    its tensors is the committed one of that name, and each committed tensor it
    leaves out equals one it holds."""
    import torch

    def equal(a: torch.Tensor, b: torch.Tensor) -> bool:
        return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a, b))

    if any(name not in committed or not equal(t, committed[name]) for name, t in resumed.items()):
        return False
    held = list(resumed.values())
    return all(
        any(equal(t, h) for h in held) for name, t in committed.items() if name not in resumed
    )


def _run_command(
    command: Sequence[str],
    order: Path,
    cwd: Path | None,
    meanwhile: Callable[[], None] = lambda: None,
) -> None:
    """Run ``command`` in replay mode (``order``); ``meanwhile`` runs while it does."""
    env = {**os.environ, REPLAY_ENV: str(order)}
    # The command runs in a process group of its own, so that an interruption stops it
    # and whatever it started (data loader workers) as one, and a terminal's Ctrl-C
    # reaches ledger alone (which stops it) rather than both with two tracebacks.
    # Its output goes to stderr: stdout carries the verdict (--json).
    try:
        process = subprocess.Popen(
            list(command),
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=sys.stderr,
            process_group=0,
        )
    except OSError as exc:
        raise ReplayError(
            f"cannot run `{' '.join(command)}`: {exc.strerror}",
            hint="give the training command after --: ledger replay RUN -- python train.py",
        ) from exc
    try:
        meanwhile()
        code = process.wait()
    except BaseException:  # Ctrl-C or any other error: the command goes too
        _stop_group(process)
        raise
    if code != 0:
        raise ReplayError(
            f"`{' '.join(command)}` failed in replay mode (exit {code}); no verdict",
            hint="its output is above; the command must train as the run did",
        )


def _stop_group(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the command's process group; SIGKILL what is left of it after
    ``grace`` seconds (or at once when the leader has ended: its children go too)."""
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _judge(
    planned: _Planned,
    checkpoints: Sequence[_Checkpoint],
    weights: Callable[[int], Path],
    manifest: Mapping[str, Any],
    limits: Thresholds,
) -> None:
    """The segment's verdict: its replayed weights and data orders against the
    committed ones (and the resume check :func:`_prepare` made)."""
    from ledger.hashing.tensors import tensor_digest

    segment, replayed = planned.segment, planned.order.out
    committed = checkpoints[segment.index + 1]
    committed_file = weights(segment.index + 1)
    try:
        reported = json.loads(planned.order.result.read_text())
    except (OSError, ValueError):
        reported = {}
    claimed = (committed.resume or committed.metrics.get("metrics", {}).get("resume") or {}).get(
        "data_order"
    ) or {}
    replayed_orders = reported.get("data_order") or {}
    for epoch in sorted(set(claimed) | set(replayed_orders), key=int):
        if claimed.get(epoch) != replayed_orders.get(epoch):
            if epoch not in claimed:
                segment.problems.append(f"epoch {epoch}: the run committed no data order")
            elif epoch not in replayed_orders:
                segment.problems.append(f"epoch {epoch}: the replay reported no data order")
            else:
                segment.problems.append(
                    f"epoch {epoch}: the data order differs from the committed one"
                )
    for key, recorded in (manifest.get("data") or {}).items():
        found = (reported.get("data") or {}).get(key)
        if found is not None and found != recorded:
            segment.problems.append(f"data {key!r} differs from the manifest's fingerprint")
    whole, per = distances(_tensors(replayed), _tensors(committed_file))
    segment.overall = whole
    segment.diverged_tensors = sorted(
        (d for d in per if d.over(limits)), key=lambda d: d.linf, reverse=True
    )
    if segment.problems or segment.diverged_tensors or whole.over(limits):
        segment.verdict = "diverged"
    elif tensor_digest(replayed).root == committed.tensor_root:
        segment.verdict = "identical"
    else:
        segment.verdict = "within tolerance"


# -- attestations: ledger replay --record ------------------------------------------


@dataclass(frozen=True)
class Attestation:
    """One ``ReplayAttested`` event: an account replayed an interval of a run.

    ``reproduced`` is the interval's verdict (identical or within tolerance);
    ``report_digest`` the sha2-256 digest of the replay report's CID (the whole
    report, every segment of that replay, in the store: :func:`read_report`).
    Anyone may attest: whose attestations count is the reader's choice.
    """

    run_id: str
    attester: str
    from_step: int
    to_step: int
    reproduced: bool
    report_digest: str
    block_number: int
    tx_hash: str

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "attester": self.attester,
            "from_step": self.from_step,
            "to_step": self.to_step,
            "reproduced": self.reproduced,
            "report_digest": self.report_digest,
            "block_number": self.block_number,
            "tx_hash": self.tx_hash,
        }

    def line(self) -> str:
        verdict = "reproduced" if self.reproduced else "DIVERGED"
        return (
            f"checkpoint {self.from_step} -> {self.to_step}: {verdict} by {self.attester} "
            f"(block {self.block_number}, report {self.report_digest[:18]}…)"
        )


def check_attester(sender: RegistryAdmin) -> None:
    """Refuse, before anything is replayed, a ``--record`` the registry cannot take
    (registries before 3.0.0 have no ``attestReplay``)."""
    version = sender.version()
    try:
        major = int(version.split(".")[0])
    except ValueError:
        major = 0
    if major < 3:
        raise ConfigError(
            f"the registry at {sender.address} is version {version}: it cannot record replay "
            "attestations (3.0.0 or later can)",
            hint="replay without --record, or deploy a current registry (ledger deploy)",
        )


def report_document(report: ReplayReport, attester: str, command: Sequence[str]) -> bytes:
    """The replay report as stored: canonical JSON (:mod:`ledger.documents`)."""
    from ledger.documents import REPLAY_REPORT_SCHEMA, canonical_json

    body = {
        "schema": REPLAY_REPORT_SCHEMA,
        "attester": attester,
        "command": list(command),
        **report.to_json(),
    }
    return canonical_json(body, what="replay report")


def record_report(
    sender: RegistryAdmin,
    store: ArtifactStore,
    report: ReplayReport,
    command: Sequence[str],
) -> list[Attestation]:
    """Store the report and attest each replayed interval on chain (one transaction
    each, signed by ``sender``'s key, all naming the same report)."""
    cid = store.put_bytes(report_document(report, sender.signer.address, command))
    run_id = bytes.fromhex(report.run_id.removeprefix("0x"))
    done = []
    for segment in report.segments:
        tx = sender.transact(
            "attestReplay", run_id, segment.start, segment.stop, segment.ok, cid.digest
        )
        done.append(
            Attestation(
                report.run_id,
                sender.signer.address,
                segment.start,
                segment.stop,
                segment.ok,
                to_hex(cid.digest),
                tx.block_number,
                tx.tx_hash,
            )
        )
    return done


def attestations(reader: RegistryReader, run_id: bytes) -> list[Attestation]:
    """The run's replay attestations on chain, oldest first (registry 3's lookup: no
    scan of the chain)."""
    return [
        Attestation(
            to_hex(a.run_id),
            a.attester,
            a.from_step,
            a.to_step,
            a.reproduced,
            to_hex(a.report_digest),
            a.block_number,
            a.tx_hash,
        )
        for a in reader.replay_attestations(run_id)
    ]


def read_report(store: ArtifactStore, digest: bytes) -> dict[str, Any]:
    """The replay report an attestation names (``report_digest``), from the store."""
    return read_document(store, digest, DocumentKind.REPLAY_REPORT).body
