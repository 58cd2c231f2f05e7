"""The durable outbox between training and the chain.

The training hook hands each record to :class:`Outbox` — a manifest at start,
a weights file path and its metrics per checkpoint and at the end — which
appends it to the journal and returns: that insert is all the training loop
waits for. A background worker stores the artifacts, sends batched transactions
and confirms them. A run's id is derived locally (committer + manifest CID), so
the hook knows it before the chain does. One module per job:

- :mod:`~ledger.record.outbox.journal`: the journal, SQLite in WAL mode, and
  its entries' states;
- :mod:`~ledger.record.outbox.worker`: the worker's passes (store, reconcile,
  recover, send);
- :mod:`~ledger.record.outbox.lock`: one sending worker per data directory (a
  file lock), so one key's nonces never race;
- :mod:`~ledger.record.outbox.serve`: the loop that runs the passes, its
  wake-ups and back-off, and the worker on a thread
  (``LEDGER_OUTBOX_WORKER=thread``);
- :mod:`~ledger.record.outbox.process`: the worker in a child process (the
  default), and the socket the next run attaches to while it stays resident.

At exit the hook flushes with a bounded wait and says what remains; `ledger
sync` finishes whatever a previous process left, and the next run's worker does
the same on its own. `ledger status` shows the journal.
"""

from __future__ import annotations

import atexit
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger.chain.records import run_id_for
from ledger.config import Secret, Settings, resolve_private_key
from ledger.documents import canonical_json
from ledger.errors import (
    ChainUnavailableError,
    ConfigError,
    InputError,
    JournalFullError,
    MissingRoleError,
    RecordError,
    RegistryNotDeployedError,
)
from ledger.hashing.cid import bytes_cid
from ledger.ids import Relation, to_hex
from ledger.record.outbox.journal import Entry, Journal
from ledger.record.outbox.lock import WorkerLock
from ledger.record.outbox.owner import gone, this_process
from ledger.record.outbox.serve import WorkerThread
from ledger.record.outbox.worker import NO_REGISTRY, PassResult, Worker, one_line, path_status

if TYPE_CHECKING:
    from ledger.hashing.tensors import TensorDigest
    from ledger.record.outbox.process import AttachedWorker, WorkerProcess
from ledger.store import ArtifactStore

__all__ = [
    "Entry",
    "Journal",
    "Outbox",
    "PassResult",
    "abandoned_runs",
    "flush_timeout",
    "journal_path",
    "run_report",
]

_OPEN: dict[Path, Outbox] = {}
_OPEN_LOCK = threading.Lock()


def journal_path(settings: Settings) -> Path:
    return settings.data_dir / "outbox.sqlite"


CHECK_TIMEOUT = 5.0  # seconds the start's chain check waits for an answer
_HAS_ROLE = bytes.fromhex("91d14854")  # hasRole(bytes32,address)

# seconds between looks at the journal while a run waits for its records: every
# millisecond for the first 0.2 s (a run's last records usually land within 10-20
# ms; a look is one indexed COUNT), then less and less often, up to every 50 ms
FLUSH_POLL = (0.001, 0.2, 0.05)


def worker_kind() -> str:
    """Where the background worker runs (``LEDGER_OUTBOX_WORKER``): ``process``
    (the default; its CPU and the GIL stay off the training loop) or ``thread``."""
    kind = os.environ.get("LEDGER_OUTBOX_WORKER", "process")
    if kind not in ("process", "thread"):
        raise ConfigError(
            f"LEDGER_OUTBOX_WORKER={kind!r} is not a worker kind", hint="use process or thread"
        )
    return kind


def flush_timeout() -> float:
    """Seconds a finishing run waits for its records (``LEDGER_FLUSH_TIMEOUT``, default 60)."""
    text = os.environ.get("LEDGER_FLUSH_TIMEOUT", "60")
    try:
        return max(0.0, float(text))
    except ValueError as exc:
        raise ConfigError(f"LEDGER_FLUSH_TIMEOUT={text!r} is not a number of seconds") from exc


class Outbox:
    """The journal of one data directory, and this process's handle on the worker
    that sends its records (a child process, a resident worker it attached to,
    or a thread: see :meth:`start_worker`)."""

    def __init__(
        self,
        settings: Settings,
        store: ArtifactStore | None = None,
        *,
        background: bool = True,
        worker: str | None = None,
    ) -> None:
        self.settings = settings
        self.background = background  # False: appends wait for `sync` or another process
        self.journal = Journal(journal_path(settings))
        self.worker = Worker(self.journal, settings, store=store)
        # a store object cannot cross to another process: its worker runs on a thread
        self.worker_kind = worker or ("thread" if store is not None else worker_kind())
        self._runner: WorkerThread | WorkerProcess | AttachedWorker | None = None
        self._committer: str | None = None
        self._secret: Secret | None = None
        self._runs: list[str] = []  # the runs this process appended to (what exit waits for)
        # appends the journal's full disk refused, in order, under temporary negative
        # ids; written before any later append once there is room (see _append)
        self._held: list[tuple[int, str, Any, dict[str, Any], int | None]] = []
        self._written: dict[int, int] = {}  # temporary id -> journal id, once written

    @classmethod
    def for_settings(cls, settings: Settings, store: ArtifactStore | None = None) -> Outbox:
        """The process's outbox for this data directory (one worker per journal)."""
        key = journal_path(settings).resolve()
        with _OPEN_LOCK:
            found = _OPEN.get(key)
            if found is None or found.settings != settings:
                found = _OPEN[key] = cls(settings, store)
            return found

    # -- appending (the training loop's side) ------------------------------------

    def committer(self) -> str:
        """The address that signs this data directory's records (known offline).

        Derived with libsecp256k1 alone: importing web3 or eth_account costs the
        training process 1-2 s of CPU.
        """
        if self._committer is None:
            from ledger.chain.sender import address_of

            chain_id = self.settings.chain_id
            if chain_id is None:
                from ledger.chain.rpc import JsonRpc

                chain_id = int(JsonRpc(self.settings.rpc_url)("eth_chainId"), 16)
            self._secret = resolve_private_key(self.settings, chain_id)
            self._committer = address_of(self._secret)
        return self._committer

    def check_chain(self, timeout: float = CHECK_TIMEOUT) -> str | None:
        """Before a run starts: that the registry is on the chain and this key may
        record on it (one JSON-RPC batch: chain id, the registry's code, and
        ``hasRole(COMMITTER_ROLE, key)``).

        Raises when records could never land (no registry configured or at the
        address, another chain, the key without the committer role); returns why
        when the chain does not answer (the run goes on: its records wait in the
        outbox), else None.
        """
        from ledger.chain.records import COMMITTER_ROLE, check_chain_id, configured_registry
        from ledger.chain.rpc import JsonRpc, as_bytes

        settings = self.settings
        address = configured_registry(settings, why="nothing this run hands over could be recorded")
        committer = self.committer()
        call = _HAS_ROLE + COMMITTER_ROLE + bytes.fromhex(committer[2:]).rjust(32, b"\0")
        try:
            answers = JsonRpc(settings.rpc_url, timeout).batch(
                [
                    ("eth_chainId", []),
                    ("eth_getCode", [address, "latest"]),
                    ("eth_call", [{"to": address, "data": to_hex(call)}, "latest"]),
                ]
            )
            chain_id, code = int(answers[0], 16), answers[1]
        except ChainUnavailableError as exc:
            return one_line(exc)
        where = f"chain {chain_id} ({settings.rpc_url})"
        check_chain_id(settings, chain_id)
        if code in (None, "0x", ""):
            raise RegistryNotDeployedError(
                f"no registry at {address} on {where}: nothing this run hands over "
                "could be recorded",
                hint="the chain may have been reset; run `ledger deploy` again",
            )
        if not any(as_bytes(answers[2])):
            raise MissingRoleError(
                f"key {committer} lacks the committer role on the registry {address} "
                f"({where}): the registry would refuse every record of this run",
                hint=f"an admin of the registry runs `ledger grant committer {committer}`",
            )
        return None

    def start_run(
        self, manifest: Mapping[str, Any], parents: Sequence[tuple[bytes, Relation]] = ()
    ) -> str:
        """Append a run's start; returns its run id (``0x`` hex), derived locally."""
        text = canonical_json(manifest, what="manifest")
        committer = self.committer()
        run_id = to_hex(run_id_for(committer, bytes_cid(text).digest))
        payload = {
            "manifest": text.decode(),
            "committer": committer,
            "parents": [[to_hex(p), int(r)] for p, r in parents],
            "process": this_process(),  # `ledger status` tells a killed run (owner.py)
        }
        self._append(run_id, "start", payload)
        return run_id

    def checkpoint(
        self,
        run_id: str,
        step: int,
        weights: Path,
        metrics: Mapping[str, Any],
        resume: Path | None = None,
    ) -> int:
        """Append a checkpoint's weights file and metrics; returns the entry id.

        ``resume`` is the checkpoint's resume file (training/replay.py): the
        worker stores it too and writes its CID and size into the metrics
        document's ``resume`` object, which the chain record binds.
        A NaN or infinite metric is recorded as a string (see :func:`finite_metrics`)."""
        metrics = finite_metrics(metrics, self.worker.say)
        payload = _weights_payload(weights, metrics)
        if resume is not None:
            if not isinstance(metrics.get("resume", {}), Mapping):
                raise InputError("metric 'resume' is the resume state's; rename that metric")
            payload["resume"] = _file_payload(resume, "resume file")
        return self._append(run_id, "checkpoint", payload, step)

    def finalize(
        self,
        run_id: str,
        weights: Path,
        metrics: Mapping[str, Any],
        tensors: TensorDigest | None = None,
    ) -> int:
        """Append the final weights file and metrics; returns the entry id.

        ``tensors``: the file's tensor digests, when the caller hashed the very
        tensors it wrote while writing them (the hook does, so the run's end
        waits for one hash of the file, its CID, not two); the worker then reads
        the file for its CID (and copy) only."""
        metrics = finite_metrics(metrics, self.worker.say)
        payload = _weights_payload(weights, metrics)
        if tensors is not None:
            payload["tensors"] = tensors.index()
        return self._append(run_id, "finalize", payload)

    def fail(self, run_id: str, reason: str) -> int:
        return self._append(run_id, "fail", {"reason": reason[:500]})

    def _append(
        self, run_id: str, kind: Any, payload: dict[str, Any], step: int | None = None
    ) -> int:
        """Journal one record. A full disk under the journal does not stop training:
        the record is kept in memory (with every later one, so order holds) and
        written at the next append or flush once there is room; it is lost only if
        the process ends first, which the run's exit line then says."""
        if run_id not in self._runs:
            self._runs.append(run_id)
        if self._write_held():
            try:
                entry_id = self.journal.append(run_id, kind, payload, step)
            except JournalFullError as exc:
                entry_id = self._hold(run_id, kind, payload, step, exc)
        else:
            entry_id = self._hold(run_id, kind, payload, step, None)
        if self.background and entry_id > 0:
            self.start_worker().wake()
        return entry_id

    def _hold(
        self,
        run_id: str,
        kind: Any,
        payload: dict[str, Any],
        step: int | None,
        exc: JournalFullError | None,
    ) -> int:
        if exc is not None and not self._held:
            self.worker.say(f"{one_line(exc)}; training goes on")
        temporary = -(len(self._written) + len(self._held) + 1)
        self._held.append((temporary, run_id, kind, payload, step))
        return temporary

    def _write_held(self) -> bool:
        """Write the records a full disk held back, in order; whether all are written."""
        while self._held:
            temporary, run_id, kind, payload, step = self._held[0]
            try:
                self._written[temporary] = self.journal.append(run_id, kind, payload, step)
            except JournalFullError:
                return False
            self._held.pop(0)
            if self.background:
                self.start_worker().wake()
        return True

    def journal_ids(self, ids: Sequence[int]) -> list[int]:
        """The journal ids of entries appended here (a held record's temporary id
        maps to its journal id once written; one still held is left out)."""
        return [self._written.get(i, i) for i in ids if i > 0 or i in self._written]

    def held(self, run_id: str) -> int:
        """How many of ``run_id``'s records wait in memory for room on the journal's disk."""
        return sum(1 for _, held_run, *_ in self._held if held_run == run_id)

    # -- the worker ------------------------------------------------------------------

    def start_worker(self) -> WorkerThread | WorkerProcess | AttachedWorker:
        """This process's background worker (started on first use, and again after
        it ended idle): a resident worker of the same settings if one runs, else
        a child process, or a thread (see :func:`worker_kind`)."""
        if self._runner is None or not self._runner.alive:
            if self._runner is None:
                atexit.register(self._at_exit)
            if self.worker_kind == "process":
                from ledger.record.outbox.process import (
                    AttachedWorker,
                    WorkerProcess,
                    keep_seconds,
                    socket_name,
                )

                name = socket_name(self.settings, self.committer())
                self._runner = AttachedWorker.attach(name)
                if self._runner is None:
                    assert self._secret is not None  # resolved by committer()
                    self._runner = WorkerProcess(
                        self.settings, self._secret, name=name, keep=keep_seconds()
                    )
            else:
                self._runner = WorkerThread(self.worker, WorkerLock(self.journal.path))
            self._runner.start()
        return self._runner

    def flush(self, timeout: float, run_id: str | Sequence[str] | None = None) -> int:
        """Wait up to ``timeout`` s until no entry (of ``run_id``, or of those runs)
        is open; returns how many still are. It stops early when waiting cannot
        help (the registry is gone) or is not needed (every open entry is mined and
        only waits for the confirmation depth: the worker confirms it)."""
        deadline = time.monotonic() + timeout
        self._write_held()
        runner: WorkerThread | WorkerProcess | AttachedWorker | None = None
        pause, brisk, longest = FLUSH_POLL
        brisk_until = time.monotonic() + brisk
        tried = {e.id: e.attempts for e in self._open(run_id)}
        try:
            while True:
                remaining = self.journal.open_count(run_id)
                left = deadline - time.monotonic()
                if remaining == 0 or left <= 0:
                    return remaining
                if self._registry_gone(run_id, tried):
                    return remaining  # only a deploy helps: the report says so
                if self._all_mined(run_id):
                    # only blocks on top help (LEDGER_CONFIRMATIONS): the worker stays
                    # to confirm them, the report says so; training need not wait
                    return remaining
                if runner is None or not runner.alive:
                    runner = self.start_worker()  # (re)started if it ended meanwhile
                    runner.set_urgent(True)  # someone waits: no lingering for fuller batches
                time.sleep(min(left, pause))
                if time.monotonic() > brisk_until:
                    pause = min(pause * 1.5, longest)
        finally:
            if runner is not None:
                runner.set_urgent(False)

    def _open(self, run_id: str | Sequence[str] | None) -> list[Entry]:
        entries = self.journal.entries(states=["pending", "stored", "sent"])
        if run_id is None:
            return entries
        runs = {run_id} if isinstance(run_id, str) else set(run_id)
        return [e for e in entries if e.run_id in runs]

    def _all_mined(self, run_id: str | Sequence[str] | None) -> bool:
        """Whether every open entry is mined and waits only for the confirmation depth."""
        entries = self._open(run_id)
        return bool(entries) and all(
            e.state == "sent" and e.block_number is not None for e in entries
        )

    def _registry_gone(self, run_id: str | Sequence[str] | None, tried: dict[int, int]) -> bool:
        """Whether every open entry is waiting only for a registry that is not at its
        address, as a worker pass made after the wait began found (``tried``: the
        entries' attempts when it began): no wait fixes that, `ledger deploy` does."""
        entries = self._open(run_id)
        return bool(entries) and all(
            e.state != "pending"
            and (e.error or "").startswith(NO_REGISTRY)
            and e.attempts > tried.get(e.id, -1)
            for e in entries
        )

    def settled(self, run_id: str) -> None:
        """The run's records were waited for and reported (by the hook): the exit
        handler neither waits for them again nor repeats the report."""
        if run_id in self._runs:
            self._runs.remove(run_id)

    def report(self, run_id: str, waited: float | None = None) -> str:
        """One line on what the journal holds of ``run_id`` (see :func:`run_report`),
        and the records a full disk kept out of it."""
        self._write_held()
        line = run_report(self.journal, run_id, waited)
        held = self.held(run_id)
        if held:
            line += (
                f"; {held} record(s) not journaled: the disk under {self.journal.path} is "
                "full, and they are lost when this process ends (free space there)"
            )
        return line

    def _at_exit(self) -> None:
        # this process's runs not reported yet (the hook reports its own, once); only
        # these: another key's records wait for a worker of that key
        runs, self._runs = self._runs, []
        if runs:
            timeout = flush_timeout()
            if self.journal.open_count(runs):
                self.flush(timeout, runs)
            for run_id in runs:
                self.worker.say(self.report(run_id, timeout))
        if self._runner is not None:
            self._runner.stop()

    # -- `ledger sync` -----------------------------------------------------------------

    def rebuild_from_chain(self) -> int:
        """After a damaged journal was set aside: put back, as confirmed entries,
        every record the chain holds of the runs this key started (start,
        checkpoints, final weights, failure) that the journal does not know;
        returns how many. The worker then never sends them again, and a chain
        reset or reorg recommits them as it would the originals. Manifests are
        taken from the store when it has them (for `ledger status` and a
        recommit); a run whose records were only in the damaged journal is not
        on chain and cannot be rebuilt from it.
        """
        from ledger.chain.sender import RegistrySender
        from ledger.hashing.cid import DAG_PB, RAW, Cid

        committer = self.committer()
        registry = RegistrySender.connect(self.settings, self._secret)
        known = {(e.run_id, e.kind, e.step) for e in self.journal.entries(states=["confirmed"])}
        store = self.worker._store() if self.settings.ipfs_api is None else None
        hashes: dict[int, str] = {}

        def cid_of(digest: bytes) -> str:
            candidates = [Cid.from_digest(digest, RAW), Cid.from_digest(digest, DAG_PB)]
            candidates.append(Cid.from_digest(digest, DAG_PB, 0))
            for cid in candidates:
                if store is not None and store.has(cid):
                    return str(cid)
            return str(candidates[0])

        def row(event: dict[str, Any], kind: str, record: dict[str, Any], **extra: Any) -> None:
            run_id = to_hex(bytes(event["runId"]))
            step = record.get("step") if kind == "checkpoint" else None
            if (run_id, kind, step) in known:
                return
            number = int(event["blockNumber"])
            if number not in hashes:
                hashes[number] = registry.block_hash(number) or ""
            rows.append(
                {
                    "run_id": run_id,
                    "kind": kind,
                    "step": step,
                    "payload": extra.get("payload", {"rebuilt": True}),
                    "record": record,
                    "tx_hash": str(event["transactionHash"]),
                    "block_number": number,
                    "block_hash": hashes[number],
                    "chain_id": registry.chain_id,
                    "registry": registry.address,
                    "note": "rebuilt from the chain",
                }
            )

        rows: list[dict[str, Any]] = []
        mine = committer.lower()
        for start in registry.all_events("RunStarted"):
            if str(start["committer"]).lower() != mine:
                continue
            run_id = bytes(start["runId"])
            digest = bytes(start["manifestDigest"])
            manifest_cid = cid_of(digest)
            payload: dict[str, Any] = {"rebuilt": True, "committer": committer, "parents": []}
            if store is not None and store.has(Cid.parse(manifest_cid)):
                payload["manifest"] = store.get_bytes(Cid.parse(manifest_cid)).decode()
            payload["parents"] = [
                [to_hex(bytes(p["runId"])), int(Relation.parse(p["relation"]))]
                for p in start.get("parents", [])
            ]
            record: dict[str, Any] = {"manifest_cid": manifest_cid, "manifest_digest": digest.hex()}
            row(start, "start", record, payload=payload)
            for cp in registry.events("CheckpointCommitted", run_id):
                record = {
                    "step": int(cp["step"]),
                    "file_cid": cid_of(bytes(cp["weightsDigest"])),
                    "tensor_root": bytes(cp["tensorRoot"]).hex(),
                    "metrics_cid": cid_of(bytes(cp["metricsDigest"])),
                }
                row(cp, "checkpoint", record)
            for fin in registry.events("RunFinalized", run_id):
                record = {
                    "step": None,
                    "file_cid": cid_of(bytes(fin["weightsDigest"])),
                    "tensor_root": bytes(fin["tensorRoot"]).hex(),
                    "metrics_cid": cid_of(bytes(fin["metricsDigest"])),
                    "checkpoint_root": bytes(fin["checkpointRoot"]).hex(),
                    "checkpoint_count": int(fin["checkpointCount"]),
                }
                row(fin, "finalize", record)
            for failed in registry.events("RunFailed", run_id):
                row(failed, "fail", {"reason": str(failed.get("reason", ""))})
        self.journal.insert_confirmed(rows)
        self.journal.set_meta("damaged", None)
        return len(rows)

    def record_abandoned(self) -> dict[str, int]:
        """Append a failure (``abandoned: process N gone``) for every run whose
        training process is gone before it ended the run; returns them (run id ->
        pid). `ledger sync --abandoned` sends them."""
        found = abandoned_runs(self.journal)
        for run_id, pid in found.items():
            self.journal.append(run_id, "fail", {"reason": f"abandoned: process {pid} gone"})
        return found

    def sync(self, timeout: float, *, retry_failed: bool = False) -> PassResult:
        """Run the worker in the foreground until nothing moves or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        if self._runner is not None:
            self._runner.stop(timeout)  # this process's own background worker hands over
        lock = WorkerLock(self.journal.path)
        # a resident worker idling for the next run steps aside
        if not lock.acquire(wait=False) and lock.retire_holder():
            settle = time.monotonic() + 5.0
            while not lock.acquire(wait=False) and time.monotonic() < settle:
                time.sleep(0.02)
        if not lock.acquire(wait=False):
            self.worker.say(
                f"another process's outbox worker (pid {lock.holder()}) is sending; "
                "waiting for it to finish"
            )
            while not lock.acquire(wait=False):
                if time.monotonic() > deadline:
                    raise RecordError(
                        f"another process (pid {lock.holder()}) is still sending this "
                        f"outbox's records after {timeout:g} s",
                        hint="run `ledger status` to watch it, or `ledger sync` again later",
                    )
                time.sleep(0.1)
        try:
            if retry_failed:
                self.journal.retry_failed()
            self.worker.recheck()  # `ledger sync` always checks what the journal holds as done
            self.worker.urgent = True
            total = PassResult()
            while True:
                result = self.worker.run_once()
                for name in ("stored", "confirmed", "recommitted", "failed"):
                    setattr(total, name, getattr(total, name) + getattr(result, name))
                total.waiting_on = result.waiting_on
                total.deepening = result.deepening
                if not self.journal.open_count() or time.monotonic() > deadline:
                    return total
                if not result.moved:
                    if result.waiting_on is None and not result.deepening:
                        return total
                    time.sleep(0.5)  # a chain back, or blocks on top of the mined records
        finally:
            lock.release()


def run_report(journal: Journal, run_id: str, waited: float | None = None) -> str:
    """One line naming the run and what was recorded of it, what is still open
    (and why) and what was refused, e.g. ``run 0x1a2b… recorded: start, 5
    checkpoints, final weights (block 123)``."""
    entries = journal.entries(run_id=run_id)
    done = [e for e in entries if e.state == "confirmed"]
    kinds = [e.kind for e in done]
    parts = ["start"] if "start" in kinds else []
    checkpoints = kinds.count("checkpoint")
    if checkpoints:
        parts.append(f"{checkpoints} checkpoint{'s' if checkpoints != 1 else ''}")
    if "finalize" in kinds:
        parts.append("final weights")
    if "fail" in kinds:
        parts.append("failed")
    line = f"run {run_id} recorded: " + (", ".join(parts) or "nothing yet")
    blocks = [e.block_number for e in done if e.block_number is not None]
    if blocks:
        line += f" (block {max(blocks)})"
    still = [e for e in entries if e.state in ("pending", "stored", "sent")]
    gone = [e for e in still if (e.error or "").startswith(NO_REGISTRY)]
    if still and len(gone) == len(still):
        reason = gone[-1].error or NO_REGISTRY
        line += (
            f"; {len(still)} record(s) not sent, not waited for: {reason} -- they are kept "
            "in the outbox; run `ledger deploy`, then `ledger sync` to send them"
        )
    elif still:
        after = f" after {waited:g} s" if waited is not None else ""
        why = next((e.error for e in reversed(still) if e.error), None)
        mined = all(e.state == "sent" and e.block_number is not None for e in still)
        where = "mined, not yet confirmed" if mined else "not yet on chain"
        line += f"; {len(still)} record(s) {where}{after}" + (f" ({why})" if why else "")
        line += "; they are safe in the outbox: `ledger sync` (or the next run) sends them"
    refused = [e for e in entries if e.state == "failed"]
    if refused:
        line += (
            f"; {len(refused)} record(s) refused for good: {refused[0].error}"
            " (see `ledger status`; `ledger sync --retry-failed` once the cause is fixed)"
        )
    return line


def abandoned_runs(journal: Journal, entries: Sequence[Entry] | None = None) -> dict[str, int]:
    """Runs whose training process is gone (killed) before it finished or failed
    them: run id -> that process's pid (see :mod:`ledger.record.outbox.owner`)."""
    if entries is None:
        entries = journal.entries()
    ended = {e.run_id for e in entries if e.kind in ("finalize", "fail")}
    found: dict[str, int] = {}
    for entry in entries:
        if entry.kind != "start" or entry.state == "failed" or entry.run_id in ended:
            continue
        owner = entry.payload.get("process")
        if isinstance(owner, dict) and gone(owner):
            found[entry.run_id] = int(owner["pid"])
    return found


# how a non-finite metric is recorded (RFC 8785 has no NaN nor infinity): as a string
NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_warned_non_finite = False


def finite_metrics(metrics: Mapping[str, Any], say: Any = None) -> dict[str, Any]:
    """``metrics`` with NaN and infinities as the strings ``"NaN"``, ``"Infinity"``
    and ``"-Infinity"`` (canonical JSON has no such numbers), and 0-d tensors or
    NumPy scalars as plain numbers; the first such metric of the process is
    named in one warning (through ``say``)."""
    global _warned_non_finite
    found: list[str] = []

    def plain(value: Any, where: str) -> Any:
        if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
            value = value.item()  # a 0-d tensor or NumPy scalar
        if isinstance(value, float) and not math.isfinite(value):
            found.append(where)
            return NON_FINITE[repr(float(value))]
        if isinstance(value, Mapping):
            return {k: plain(v, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value

    out = {k: plain(v, str(k)) for k, v in metrics.items()}
    if found and not _warned_non_finite:
        _warned_non_finite = True
        if say is not None:
            say(
                f"metric {found[0]} is not a finite number; recorded as the string "
                f"{_lookup(out, found[0])!r} (canonical JSON has no NaN or infinity); "
                "further non-finite metrics are recorded the same way without a warning"
            )
    return out


def _lookup(metrics: dict[str, Any], where: str) -> Any:
    value: Any = metrics
    for part in where.replace("[", ".").replace("]", "").split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def _weights_payload(weights: Path, metrics: Mapping[str, Any]) -> dict[str, Any]:
    canonical_json({"metrics": dict(metrics)}, what="metrics")  # refuse bad metrics now
    return {**_file_payload(weights, "weights file"), "metrics": dict(metrics)}


def _file_payload(file: Path, what: str) -> dict[str, Any]:
    path = Path(file).resolve()
    try:
        size, mtime_ns = path_status(path)  # a checkpoint folder: its files' bytes
    except FileNotFoundError as exc:
        raise InputError(f"{what} {path} does not exist") from exc
    return {"path": str(path), "size": size, "mtime_ns": mtime_ns}
