"""Follows the registry's events into the SQL index.

One pass (:meth:`Indexer.run_once`):

1. **Reorg check.** The hashes stored for the newest indexed block and for the
   blocks holding events among the last :func:`reorg_window` blocks are
   compared with the chain's, in one batch request (one block on a quiet chain). Where one
   differs (a reorg, or a local chain that was reset), everything from the
   lowest changed block up is rolled back: its events are deleted and the runs
   they touched are rebuilt from the events that remain; the next step reads
   those blocks again from the chain as it is now. When even the window's
   lowest block changed, the fork is older: the highest stored block whose hash
   still matches is found by bisection over the older ones (hashes chain, so
   everything below a matching block matches). Every block in the window is
   compared, not only the newest, because the logs of a range and the block
   headers read after them can come from two sides of a reorg that happened in
   between: a stored event's own block hash then tells.
2. **Events.** ``eth_getLogs`` over ``[last + 1, head - confirmations]`` in
   ranges of at most ``chunk_blocks``, narrower where the endpoint refuses them
   (:func:`ledger.chain.logs.scan_logs`: a provider's block or result cap), decoded
   with the project's ABI codec, written in one transaction per range together
   with the hashes of the blocks they came from and of the range's last block.
   A pass that stops half-way resumes from the last committed range.
3. **Documents.** Manifests of new runs and final metrics documents of newly
   finalized runs are read from the store (name, sweep, world size, numeric
   metrics). A document not in the store yet is marked ``missing`` and tried
   again later (:meth:`retry_missing`).

The index holds what the chain said; it never vouches for it. The API's verify
endpoint re-checks against the chain itself.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from sqlalchemy import Table, bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from ledger.chain.abi import Log, LogDecoder
from ledger.chain.logs import scan_logs
from ledger.chain.records import checksum_address
from ledger.chain.rpc import JsonRpc
from ledger.datasets import run_datasets
from ledger.documents import DocumentKind, read_document
from ledger.errors import (
    ArtifactNotFoundError,
    ChainError,
    IndexUnavailableError,
    InvalidDocumentError,
    LedgerError,
    StoreError,
    StoreUnavailableError,
)
from ledger.ids import from_hex
from ledger.index.models import (
    ArtifactRevocation,
    Block,
    Event,
    IndexState,
    Meta,
    Metric,
    Parent,
    ReplayAttestation,
    Run,
    RunData,
    Weights,
)
from ledger.store import ArtifactStore, LocalStore

log = logging.getLogger("ledger.index")

RUNS = cast(Table, Run.__table__)
EVENTS = cast(Table, Event.__table__)
BLOCKS = cast(Table, Block.__table__)
PARENTS = cast(Table, Parent.__table__)
WEIGHTS = cast(Table, Weights.__table__)
METRICS = cast(Table, Metric.__table__)
META = cast(Table, Meta.__table__)
STATE = cast(Table, IndexState.__table__)
RUN_DATA = cast(Table, RunData.__table__)
ARTIFACT_REVOCATIONS = cast(Table, ArtifactRevocation.__table__)
REPLAYS = cast(Table, ReplayAttestation.__table__)
IN_CHUNK = 500
REORG_WINDOW = 64  # blocks below the newest indexed one whose stored hashes each pass checks
DOCUMENT_THREADS = 8
_T = TypeVar("_T")


@dataclass
class PassResult:
    """What one pass did."""

    from_block: int | None = None
    to_block: int | None = None
    events: int = 0
    rolled_back_to: int | None = None
    documents: int = 0
    seconds: float = 0.0
    events_seconds: float = 0.0  # reorg check + reading and writing events


@dataclass
class IndexerStatus:
    """The indexer's progress, for readiness and ``ledger index`` output."""

    last_block: int | None = None
    head: int | None = None
    events_total: int = 0
    passes: int = 0
    last_error: str | None = None
    last_pass_at: float | None = None
    rollbacks: int = 0
    history: list[PassResult] = field(default_factory=list)

    @property
    def lag(self) -> int | None:
        if self.head is None:
            return None
        return self.head - (self.last_block if self.last_block is not None else -1)


class Indexer:
    """Indexes one registry on one chain into one database."""

    def __init__(
        self,
        engine: Engine,
        rpc: JsonRpc,
        address: str,
        store: ArtifactStore,
        *,
        deploy_block: int = 0,
        confirmations: int = 0,
        chunk_blocks: int = 5000,
    ) -> None:
        self.engine = engine
        self.rpc = rpc
        self.address = checksum_address(address)
        self.store = store
        self.deploy_block = deploy_block
        self.confirmations = confirmations
        self.chunk_blocks = chunk_blocks
        self.decoder = LogDecoder()
        self.status = IndexerStatus()
        self._lock = threading.Lock()

    # -- passes -------------------------------------------------------------------

    def run_once(self, *, max_blocks: int | None = None) -> PassResult:
        """One pass: reorg check, new events up to the confirmed head, documents."""
        with self._lock:
            started = time.perf_counter()
            result = PassResult()
            try:
                self._check_meta()
                result.rolled_back_to = self._check_reorg()
                head = int(self.rpc("eth_blockNumber"), 16)
                self.status.head = head
                target = head - self.confirmations
                if max_blocks is not None:
                    target = min(target, self._next_block() + max_blocks - 1)
                start = self._next_block()
                if target >= start:
                    result.from_block, result.to_block = start, target
                    result.events = self._index_range(start, target)
                result.events_seconds = time.perf_counter() - started
                result.documents = self.load_documents()
            except SQLAlchemyError as exc:
                self.status.last_error = f"index database: {exc.__class__.__name__}"
                raise IndexUnavailableError(
                    f"the index database failed: {exc.__class__.__name__}: "
                    f"{str(exc).splitlines()[0]}"
                ) from exc
            except LedgerError as exc:
                self.status.last_error = exc.message
                raise
            self.status.last_error = None
            self.status.last_block = self.last_block()
            self.status.passes += 1
            self.status.events_total += result.events
            self.status.last_pass_at = time.time()
            result.seconds = time.perf_counter() - started
            self.status.history = [*self.status.history[-9:], result]
            return result

    def follow(
        self, stop: threading.Event, *, interval: float = 1.0, retry_every: float = 30.0
    ) -> None:
        """Pass after pass until ``stop`` is set; errors are kept in :attr:`status`."""
        last_retry = time.monotonic()
        while not stop.is_set():
            try:
                self.run_once()
                if time.monotonic() - last_retry > retry_every:
                    self.retry_missing()
                    last_retry = time.monotonic()
            except LedgerError as exc:  # the chain or database is away: try again later
                log.warning("index pass failed: %s", exc.message)
            except SQLAlchemyError as exc:  # e.g. while retrying missing documents
                self.status.last_error = f"index database: {exc.__class__.__name__}"
                log.warning("index pass failed: %s", exc.__class__.__name__)
            stop.wait(interval)

    def last_block(self) -> int | None:
        with self.engine.connect() as connection:
            value = connection.scalar(select(func.max(BLOCKS.c.number)))
        return None if value is None else int(value)

    def _next_block(self) -> int:
        last = self.last_block()
        return self.deploy_block if last is None else max(last + 1, self.deploy_block)

    # -- identity of what is indexed ------------------------------------------------

    def _check_meta(self) -> None:
        """A different chain or registry than the index holds: start from scratch."""
        chain_id = str(int(self.rpc("eth_chainId"), 16))
        wanted = {"chain_id": chain_id, "registry": self.address}
        with self.engine.begin() as connection:
            stored = {r.key: r.value for r in connection.execute(select(META))}
            if stored == wanted:
                return
            if stored:
                log.warning("index held %s, now %s: rebuilding", stored, wanted)
                self._rollback(connection, -1)
            connection.execute(delete(META))
            connection.execute(insert(META), [{"key": k, "value": v} for k, v in wanted.items()])
            _bump(connection)

    # -- reorgs -------------------------------------------------------------------

    def reorg_window(self) -> int:
        """How many blocks below the newest indexed one each pass re-checks: at
        least :data:`REORG_WINDOW`, and four times the confirmation depth."""
        return max(REORG_WINDOW, 4 * self.confirmations)

    def _check_reorg(self) -> int | None:
        """Rolls back past a fork; returns the block kept (-1: none), or None if no fork."""
        with self.engine.connect() as connection:
            top = connection.scalar(select(func.max(BLOCKS.c.number)))
            if top is None:
                return None
            low = int(top) - self.reorg_window()
            # the newest block, and those holding events (their stored hash came with
            # the logs): other blocks are range ends, which match when the newest does
            with_events = select(EVENTS.c.block_number).where(EVENTS.c.block_number >= low)
            recent = [
                (int(r.number), str(r.hash))
                for r in connection.execute(
                    select(BLOCKS.c.number, BLOCKS.c.hash)
                    .where(
                        (BLOCKS.c.number == top)
                        | ((BLOCKS.c.number >= low) & BLOCKS.c.number.in_(with_events))
                    )
                    .order_by(BLOCKS.c.number)
                )
            ]
        now = self._chain_hashes([n for n, _ in recent])
        changed = [n for n, h in recent if now.get(n) != h]
        if not changed:
            return None
        below = [n for n, _ in recent if n < changed[0]]  # in the window, all unchanged
        if below:
            keep = below[-1]
        else:  # the window's lowest block changed too: the fork may be older
            with self.engine.connect() as connection:
                older = [
                    (int(r.number), str(r.hash))
                    for r in connection.execute(
                        select(BLOCKS.c.number, BLOCKS.c.hash)
                        .where(BLOCKS.c.number < changed[0])
                        .order_by(BLOCKS.c.number)
                    )
                ]
            keep = self._fork_point(older)
        log.warning("block %s changed on chain: rolling back to block %s", changed[0], keep)
        with self.engine.begin() as connection:
            self._rollback(connection, keep)
            _bump(connection)
        self.status.rollbacks += 1
        return keep

    def _fork_point(self, stored: list[tuple[int, str]]) -> int:
        """The highest stored block whose hash the chain still has (-1 if none)."""
        low, high, keep = 0, len(stored) - 1, -1
        while low <= high:
            middle = (low + high) // 2
            number, stored_hash = stored[middle]
            if self._chain_hash(number) == stored_hash:
                keep = number
                low = middle + 1
            else:
                high = middle - 1
        return keep

    def _chain_hash(self, number: int) -> str | None:
        block = self.rpc("eth_getBlockByNumber", hex(number), False)
        return None if block is None else str(block["hash"])

    def _chain_hashes(self, numbers: Sequence[int]) -> dict[int, str | None]:
        """The chain's hashes of blocks ``numbers`` (None beyond its head), in one
        batch request per 256 blocks."""
        found: dict[int, str | None] = {}
        for start in range(0, len(numbers), 256):
            chunk = list(numbers[start : start + 256])
            answers = self.rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in chunk])
            for number, block in zip(chunk, answers, strict=True):
                found[number] = None if block is None else str(block["hash"])
        return found

    def _rollback(self, connection: Connection, keep: int) -> None:
        """Forget everything above block ``keep`` and rebuild the runs it touched."""
        touched = list(
            connection.scalars(
                select(EVENTS.c.run_id).where(EVENTS.c.block_number > keep).distinct()
            )
        )
        connection.execute(delete(EVENTS).where(EVENTS.c.block_number > keep))
        connection.execute(
            delete(ARTIFACT_REVOCATIONS).where(ARTIFACT_REVOCATIONS.c.block_number > keep)
        )
        connection.execute(delete(BLOCKS).where(BLOCKS.c.number > keep))
        for chunk in _chunks(touched, IN_CHUNK):
            for table, column in (
                (RUN_DATA, RUN_DATA.c.run_id),
                (REPLAYS, REPLAYS.c.run_id),
                (METRICS, METRICS.c.run_id),
                (WEIGHTS, WEIGHTS.c.run_id),
                (PARENTS, PARENTS.c.child_id),
                (RUNS, RUNS.c.run_id),
            ):
                connection.execute(delete(table).where(column.in_(chunk)))
        for chunk in _chunks(touched, IN_CHUNK):
            rows = connection.execute(
                select(EVENTS)
                .where(EVENTS.c.run_id.in_(chunk))
                .order_by(EVENTS.c.block_number, EVENTS.c.log_index)
            )
            logs = [
                Log(
                    r.block_number,
                    "",
                    r.log_index,
                    r.tx_hash,
                    r.name,
                    r.run_id,
                    json.loads(r.payload),
                )
                for r in rows
            ]
            timestamps = {
                int(b.number): b.timestamp
                for b in connection.execute(
                    select(BLOCKS.c.number, BLOCKS.c.timestamp).where(
                        BLOCKS.c.number.in_({log.block_number for log in logs})
                    )
                )
            }
            _apply(connection, logs, timestamps)

    # -- events ---------------------------------------------------------------------

    def _index_range(self, start: int, end: int) -> int:
        count = 0
        query = {"address": self.address, "topics": [self.decoder.topics]}
        # chunk_blocks at most per call; narrower where the endpoint refuses it
        for stop, raw in scan_logs(self.rpc, query, start, end, span=self.chunk_blocks):
            logs = [d for entry in raw if (d := self.decoder.decode(entry)) is not None]
            self._write_range(logs, end if stop is None else stop)
            count += len(logs)
        return count

    def _write_range(self, logs: list[Log], end: int) -> None:
        # block times: a run's start (filters sort by it) and end (the page's duration)
        timed = ("RunStarted", "RunFinalized", "RunFailed")
        wanted = sorted({log.block_number for log in logs if log.name in timed} | {end})
        headers = self.rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in wanted])
        blocks: dict[int, tuple[str, int | None]] = {}
        for log_ in logs:
            blocks[log_.block_number] = (log_.block_hash, None)
        for number, header in zip(wanted, headers, strict=True):
            if header is None:
                raise ChainError(f"block {number} vanished while it was being indexed")
            known = blocks.get(number)
            if known is not None and known[0] != str(header["hash"]):
                # the logs and the header are from two sides of a reorg: write neither
                raise ChainError(
                    f"block {number} changed while it was being indexed (a reorg); "
                    "the next pass reads it again"
                )
            blocks[number] = (str(header["hash"]), int(header["timestamp"], 16))
        timestamps = {n: ts for n, (_, ts) in blocks.items() if ts is not None}
        with self.engine.begin() as connection:
            if logs:
                _insert(
                    connection,
                    EVENTS,
                    [
                        {
                            "block_number": e.block_number,
                            "log_index": e.log_index,
                            "tx_hash": e.tx_hash,
                            "name": e.name,
                            "run_id": e.run_id,
                            "payload": json.dumps(e.args, separators=(",", ":")),
                        }
                        for e in logs
                    ],
                )
            _insert(
                connection,
                BLOCKS,
                [{"number": n, "hash": h, "timestamp": ts} for n, (h, ts) in blocks.items()],
            )
            _apply(connection, logs, timestamps)
            if logs:  # a range without events changes no answer (only the blocks read)
                _bump(connection)

    # -- documents ------------------------------------------------------------------

    def load_documents(self, batch: int = 2000) -> int:
        """Reads pending manifests and final metrics from the store; returns how many."""
        done = 0
        while True:
            with self.engine.connect() as connection:
                manifests = connection.execute(
                    select(RUNS.c.run_id, RUNS.c.manifest_digest)
                    .where(RUNS.c.manifest_state == "pending")
                    .limit(batch)
                ).all()
                metrics = connection.execute(
                    select(RUNS.c.run_id, RUNS.c.final_metrics_digest)
                    .where(RUNS.c.metrics_state == "pending")
                    .limit(batch)
                ).all()
            if not manifests and not metrics:
                return done
            # An IPFS node's reads wait on the network: several at a time. The embedded
            # store's are Python work (CIDs, re-hashing): threads would only queue.
            threads = 1 if isinstance(self.store, LocalStore) else DOCUMENT_THREADS
            manifest_fields = _on_threads(
                self._manifest_fields, [r.manifest_digest for r in manifests], threads
            )
            metric_values = _on_threads(
                self._metrics, [r.final_metrics_digest for r in metrics], threads
            )
            manifest_rows = [
                {**fields, "run_id": r.run_id}
                for r, fields in zip(manifests, manifest_fields, strict=True)
            ]
            data_rows = [
                {**row, "run_id": fields["run_id"]}
                for fields in manifest_rows
                for row in fields.pop("data")
            ]
            metric_states: list[dict[str, Any]] = []
            metric_rows: list[dict[str, Any]] = []
            for r, (state, values) in zip(metrics, metric_values, strict=True):
                metric_states.append({"metrics_state": state, "run_id": r.run_id})
                metric_rows += [{"run_id": r.run_id, "name": k, "value": v} for k, v in values]
            with self.engine.begin() as connection:
                _update(connection, RUNS, "run_id", manifest_rows)
                for chunk in _chunks([m["run_id"] for m in manifest_rows], IN_CHUNK):
                    connection.execute(delete(RUN_DATA).where(RUN_DATA.c.run_id.in_(chunk)))
                _insert(connection, RUN_DATA, data_rows)
                if metric_states:
                    runs = [m["run_id"] for m in metric_states]
                    for chunk in _chunks(runs, IN_CHUNK):
                        connection.execute(delete(METRICS).where(METRICS.c.run_id.in_(chunk)))
                    _insert(connection, METRICS, metric_rows)
                    _update(connection, RUNS, "run_id", metric_states)
                _bump(connection)
            done += len(manifest_rows) + len(metric_states)

    def retry_missing(self) -> None:
        """Documents that were not in the store are looked for again on the next pass."""
        with self.engine.begin() as connection:
            changed = connection.execute(
                update(RUNS)
                .where(RUNS.c.manifest_state == "missing")
                .values(manifest_state="pending")
            ).rowcount
            changed += connection.execute(
                update(RUNS)
                .where(RUNS.c.metrics_state == "missing")
                .values(metrics_state="pending")
            ).rowcount
            if changed:
                _bump(connection)

    def _document(
        self, digest_hex: str | None, kind: DocumentKind
    ) -> tuple[str, str | None, dict[str, Any] | None]:
        """(state, cid, document) of a stored JSON document named by its digest:
        ``missing`` (tried again later), ``invalid`` (never loads) or ``loaded``.
        While the store is away this raises: the run stays pending for a later pass."""
        if not digest_hex:
            return "missing", None, None
        try:
            document = read_document(
                self.store, from_hex(digest_hex, field=f"{kind.name} digest"), kind
            )
        except StoreUnavailableError:
            raise
        except ArtifactNotFoundError:
            return "missing", None, None
        except InvalidDocumentError as exc:
            return "invalid", exc.cid, None
        except StoreError:  # the store refused the read: as before, not retried
            return "invalid", None, None
        return "loaded", str(document.cid), document.body

    def _manifest_fields(self, digest_hex: str) -> dict[str, Any]:
        state, cid, manifest = self._document(digest_hex, DocumentKind.MANIFEST)
        fields: dict[str, Any] = dict.fromkeys(_MANIFEST_FIELDS)
        fields.update(manifest_state=state, manifest_cid=cid, data=[])
        if manifest is None:
            return fields
        fields["data"] = _data_rows(manifest)
        name = manifest.get("name")
        fields["name"] = _text(name, 200) if isinstance(name, str) else None
        sweep = manifest.get("sweep")
        if isinstance(sweep, dict) and isinstance(sweep.get("id"), str):
            fields["sweep_id"] = _text(sweep["id"], 200)
            trial = sweep.get("trial")
            fields["sweep_trial"] = trial if _is_int(trial) else None
        distributed = manifest.get("distributed")
        if isinstance(distributed, dict) and _is_int(distributed.get("world_size")):
            fields["world_size"] = distributed["world_size"]
        return fields

    def _metrics(self, digest_hex: str | None) -> tuple[str, list[tuple[str, float]]]:
        state, _, document = self._document(digest_hex, DocumentKind.METRICS)
        if document is None:
            return state, []
        values = document.get("metrics")
        if not isinstance(values, dict):
            return "invalid", []
        kept: dict[str, float] = {}
        for k, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) != float("inf"):
                # two keys may read the same once cut or cleaned: the first one is kept
                kept.setdefault(_text(str(k), 100), float(v))
        return "loaded", list(kept.items())


_MANIFEST_FIELDS = (
    "manifest_state",
    "manifest_cid",
    "name",
    "sweep_id",
    "sweep_trial",
    "world_size",
)


def _data_rows(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """``run_data`` rows of the datasets a manifest names (one per key and digest)."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for ref in run_datasets(manifest):
        key = _text(ref.key, 200)
        rows.setdefault(
            (key, ref.digest),
            {
                "key": key,
                "digest": ref.digest,
                "cid": ref.cid,
                "kind": _text(ref.kind, 40),
                "name": None if ref.name is None else _text(ref.name, 200),
                "bytes": ref.bytes if ref.bytes is not None and 0 <= ref.bytes < 2**63 else None,
                "part_of": ref.part_of,
            },
        )
    return list(rows.values())


def _text(value: str, limit: int | None = None) -> str:
    """``value`` as every index database can store it: NUL (PostgreSQL refuses it in
    text) and lone surrogates (not UTF-8) become U+FFFD. The store's documents and
    the chain keep the original; the index only names and filters by it."""
    cut = value[:limit] if limit is not None else value
    return _UNSTORABLE.sub("\ufffd", cut)


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**31


def _bump(connection: Connection) -> None:
    """The index changed: a new generation (in the same transaction as the change)."""
    connection.execute(
        update(STATE).where(STATE.c.id == 1).values(generation=STATE.c.generation + 1)
    )


def _b(name: str) -> Any:
    return bindparam(name)


def _insert(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """``INSERT`` of many rows straight through the driver's ``executemany``.

    SQLAlchemy's own executemany processes each row's parameters in Python
    (about 50 µs a row here), which alone would cap catch-up near 5,000
    events/s; the rows are plain values already, so they go to the driver as
    tuples.
    """
    if not rows:
        return
    columns = list(rows[0])
    quote = connection.dialect.identifier_preparer.quote
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    statement = (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) "
        f"VALUES ({', '.join([mark] * len(columns))})"
    )
    connection.exec_driver_sql(statement, [tuple(row[c] for c in columns) for row in rows])


def _on_threads(read: Callable[[str], _T], digests: list[str], threads: int) -> list[_T]:
    """``read`` of every digest, in order, on ``threads`` threads each taking a slice."""
    if threads == 1 or len(digests) < 2 * threads:
        return [read(d) for d in digests]
    size = -(-len(digests) // threads)
    slices = [digests[i : i + size] for i in range(0, len(digests), size)]
    with ThreadPoolExecutor(threads, thread_name_prefix="ledger-doc") as pool:
        return [r for part in pool.map(lambda ds: [read(d) for d in ds], slices) for r in part]


def _update(connection: Connection, table: Table, key: str, rows: list[dict[str, Any]]) -> None:
    """``UPDATE ... WHERE key = ?`` of many rows through the driver (see :func:`_insert`);
    every row has the same columns, ``key`` among them."""
    if not rows:
        return
    columns = [c for c in rows[0] if c != key]
    quote = connection.dialect.identifier_preparer.quote
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    statement = (
        f"UPDATE {quote(table.name)} SET {', '.join(f'{quote(c)} = {mark}' for c in columns)} "
        f"WHERE {quote(key)} = {mark}"
    )
    connection.exec_driver_sql(statement, [(*(row[c] for c in columns), row[key]) for row in rows])


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _apply(connection: Connection, logs: list[Log], timestamps: Mapping[int, int | None]) -> None:
    """Derives runs, parents, weights from ``logs`` (in chain order) and writes them."""
    new_runs: dict[str, dict[str, Any]] = {}
    parents: list[dict[str, Any]] = []
    weights: list[dict[str, Any]] = []
    checkpoint_counts: dict[str, int] = defaultdict(int)
    endings: dict[str, dict[str, Any]] = {}
    revocations: dict[str, dict[str, Any]] = {}
    artifacts: dict[str, dict[str, Any]] = {}
    replays: list[dict[str, Any]] = []
    for e in logs:
        a = e.args
        if e.name == "RunStarted":
            new_runs[e.run_id] = {
                "run_id": e.run_id,
                "committer": a["committer"],
                "manifest_digest": a["manifestDigest"],
                "status": "running",
                "revoked": False,
                "started_block": e.block_number,
                "started_log": e.log_index,
                "started_tx": e.tx_hash,
                "started_at": timestamps.get(e.block_number) or 0,
                "ended_block": None,
                "ended_tx": None,
                "failed_reason": None,
                "revoked_block": None,
                "revoked_tx": None,
                "revoked_by": None,
                "revoked_reason": None,
                "checkpoint_count": 0,
                "checkpoint_root": None,
                "final_weights_digest": None,
                "final_tensor_root": None,
                "final_metrics_digest": None,
                "manifest_state": "pending",
                "manifest_cid": None,
                "name": None,
                "sweep_id": None,
                "sweep_trial": None,
                "world_size": None,
                "metrics_state": "none",
            }
            seen: set[str] = set()
            for position, parent in enumerate(a["parents"]):
                if parent["runId"] in seen:
                    continue
                seen.add(parent["runId"])
                parents.append(
                    {
                        "child_id": e.run_id,
                        "parent_id": parent["runId"],
                        "relation": _text(str(parent["relation"]), 16),
                        "position": position,
                    }
                )
        elif e.name in ("CheckpointCommitted", "RunFinalized"):
            final = e.name == "RunFinalized"
            weights.append(
                {
                    "block_number": e.block_number,
                    "log_index": e.log_index,
                    "run_id": e.run_id,
                    "is_final": final,
                    "step": None if final else int(a["step"]),
                    "weights_digest": a["weightsDigest"],
                    "tensor_root": a["tensorRoot"],
                    "metrics_digest": a["metricsDigest"],
                    "tx_hash": e.tx_hash,
                }
            )
            if final:
                endings[e.run_id] = {
                    "status": "finalized",
                    "ended_block": e.block_number,
                    "ended_tx": e.tx_hash,
                    "failed_reason": None,
                    "checkpoint_count": int(a["checkpointCount"]),
                    "checkpoint_root": a["checkpointRoot"],
                    "final_weights_digest": a["weightsDigest"],
                    "final_tensor_root": a["tensorRoot"],
                    "final_metrics_digest": a["metricsDigest"],
                    "metrics_state": "pending",
                }
            else:
                checkpoint_counts[e.run_id] += 1
        elif e.name == "RunFailed":
            endings[e.run_id] = {
                "status": "failed",
                "ended_block": e.block_number,
                "ended_tx": e.tx_hash,
                "failed_reason": _text(a["reason"]),
            }
        elif e.name == "ArtifactRevoked":
            digest = str(a.get("digest", e.run_id)).lower()
            artifacts.setdefault(
                digest,
                {
                    "digest": digest,
                    "block_number": e.block_number,
                    "log_index": e.log_index,
                    "tx_hash": e.tx_hash,
                    "revoker": a["revoker"],
                    "reason": _text(str(a["reason"])),
                },
            )
        elif e.name == "ReplayAttested":
            replays.append(
                {
                    "block_number": e.block_number,
                    "log_index": e.log_index,
                    "run_id": e.run_id,
                    "attester": a["attester"],
                    "from_step": int(a["fromStep"]),
                    "to_step": int(a["toStep"]),
                    "reproduced": bool(a["reproduced"]),
                    "report_digest": a["reportDigest"],
                    "tx_hash": e.tx_hash,
                }
            )
        elif e.name == "RunRevoked":
            revocations[e.run_id] = {
                "revoked": True,
                "revoked_block": e.block_number,
                "revoked_tx": e.tx_hash,
                "revoked_by": a["revoker"],
                "revoked_reason": _text(a["reason"]),
            }
    # Runs first seen here are written whole; older runs are updated.
    for run_id, count in list(checkpoint_counts.items()):
        if run_id in new_runs:
            new_runs[run_id]["checkpoint_count"] += count
            del checkpoint_counts[run_id]
    for changes in (endings, revocations):
        for run_id in [r for r in changes if r in new_runs]:
            new_runs[run_id].update(changes.pop(run_id))
    _insert(connection, RUNS, list(new_runs.values()))
    _insert(connection, PARENTS, parents)
    _insert(connection, WEIGHTS, weights)
    if artifacts:  # the registry revokes an artifact once; a replayed range may repeat it
        for chunk in _chunks(list(artifacts), IN_CHUNK):
            connection.execute(
                delete(ARTIFACT_REVOCATIONS).where(ARTIFACT_REVOCATIONS.c.digest.in_(chunk))
            )
        _insert(connection, ARTIFACT_REVOCATIONS, list(artifacts.values()))
    _insert(connection, REPLAYS, replays)
    if checkpoint_counts:
        connection.execute(
            update(RUNS)
            .where(RUNS.c.run_id == _b("b_run_id"))
            .values(checkpoint_count=RUNS.c.checkpoint_count + _b("b_count")),
            [{"b_run_id": r, "b_count": n} for r, n in checkpoint_counts.items()],
        )
    for changes in (endings, revocations):
        by_shape: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        for run_id, values in changes.items():
            by_shape[tuple(sorted(values))].append({**values, "run_id": run_id})
        for rows in by_shape.values():
            _update(connection, RUNS, "run_id", rows)
