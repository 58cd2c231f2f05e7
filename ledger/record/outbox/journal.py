"""The outbox journal: every record the hook hands over, on disk before it returns.

One SQLite file per data directory (``<data dir>/outbox.sqlite``) in WAL mode.
An entry moves through these states, each change one SQLite transaction:

``pending``   appended by the hook: a manifest, or a weights file path with its
              metrics (the training loop's only cost is this insert);
``stored``    its artifacts are in the store and its chain record is computed;
``sent``      a signed transaction carrying it is saved (``txs``) and broadcast;
              once it is mined, the block's number and hash are noted while it
              waits for the confirmation depth (``LEDGER_CONFIRMATIONS``);
``confirmed`` the receipt's block is that deep and still on the chain: block
              number and block hash are kept;
``failed``    refused for good (the reason is kept; ``ledger sync --retry-failed``
              puts it back).

Kinds are the run's records (``start``, ``checkpoint``, ``finalize``, ``fail``)
and ``revoke``, which ``ledger revoke`` appends already confirmed once its
transaction is mined: every change of a run's state on chain is in the journal,
so a reset chain gets all of them back, in order. Confirmed entries keep their
block number and hash, and ``meta`` keeps the identity of the chain they were
confirmed on (chain id, genesis block hash): the worker compares both with the
chain it talks to and recommits what the chain no longer holds.

The signed transaction is written before it is broadcast, so a process killed
while a transaction is in flight leaves the exact bytes behind: the next worker
rebroadcasts them (same nonce, same hash) instead of signing the records again,
and a record can be mined at most once. ``synchronous=NORMAL`` in WAL mode
survives a killed process (the case the outbox is for) without an fsync per
append; an operating-system crash may lose the last appends, as it may lose the
weights files written beside them.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ledger.errors import JournalFullError, RecordError

Kind = Literal["start", "checkpoint", "finalize", "fail", "revoke"]
STATES = ("pending", "stored", "sent", "confirmed", "failed")
SCHEMA_VERSION = 2  # 2: the ``revoke`` kind (a version 1 file is upgraded in place)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id       TEXT NOT NULL,
    kind         TEXT NOT NULL
                 CHECK (kind IN ('start', 'checkpoint', 'finalize', 'fail', 'revoke')),
    step         INTEGER,
    state        TEXT NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'stored', 'sent', 'confirmed', 'failed')),
    payload      TEXT NOT NULL,
    record       TEXT,
    tx_hash      TEXT,
    block_number INTEGER,
    block_hash   TEXT,
    chain_id     INTEGER,
    registry     TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    recommits    INTEGER NOT NULL DEFAULT 0,
    note         TEXT,
    error        TEXT,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_by_state ON entries (state, id);
CREATE INDEX IF NOT EXISTS entries_by_run ON entries (run_id, id);
CREATE INDEX IF NOT EXISTS entries_by_block ON entries (state, registry, block_number);
CREATE TABLE IF NOT EXISTS txs (
    tx_hash    TEXT PRIMARY KEY,
    raw        BLOB NOT NULL,
    sender     TEXT NOT NULL,
    nonce      INTEGER NOT NULL,
    chain_id   INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tx_replacements (
    tx_hash  TEXT PRIMARY KEY,
    original TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tx_replacements_by_original ON tx_replacements (original);
"""
# tx_replacements: a transaction that replaced a stuck one (same sender and nonce, higher
# fees) -> the first of its family; added beside schema 2 (an older ledger ignores it
# and follows the newest transaction, which its entries name)


class _Damaged(RecordError):
    """The journal file is not a database any more, or fails SQLite's check
    (opening a journal sets such a file aside and starts a fresh one)."""


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB
    return "malformed" in str(exc) or "not a database" in str(exc)


def _say(line: str) -> None:
    with contextlib.suppress(OSError, AttributeError, ValueError):
        print(f"ledger: {line}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Entry:
    """One journal row, decoded."""

    id: int
    run_id: str
    kind: Kind
    step: int | None
    state: str
    payload: dict[str, Any]
    record: dict[str, Any] | None
    tx_hash: str | None
    block_number: int | None
    block_hash: str | None
    chain_id: int | None
    registry: str | None
    attempts: int
    recommits: int
    note: str | None
    error: str | None
    created_at: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Entry:
        return cls(
            id=row["id"],
            run_id=row["run_id"],
            kind=row["kind"],
            step=row["step"],
            state=row["state"],
            payload=json.loads(row["payload"]),
            record=json.loads(row["record"]) if row["record"] else None,
            tx_hash=row["tx_hash"],
            block_number=row["block_number"],
            block_hash=row["block_hash"],
            chain_id=row["chain_id"],
            registry=row["registry"],
            attempts=row["attempts"],
            recommits=row["recommits"],
            note=row["note"],
            error=row["error"],
            created_at=row["created_at"],
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "run_id": self.run_id,
            "kind": self.kind,
            "step": self.step,
            "state": self.state,
            "record": self.record,
            "tx_hash": self.tx_hash,
            "block_number": self.block_number,
            "attempts": self.attempts,
            "recommits": self.recommits,
            "note": self.note,
            "error": self.error,
        }


@dataclass(frozen=True)
class SavedTx:
    """A signed transaction as saved before broadcast."""

    tx_hash: str
    raw: bytes
    sender: str
    nonce: int
    chain_id: int
    created_at: float = 0.0
    """When it was saved (seconds since the epoch): how long it has been pending."""


class Journal:
    """The outbox file. Thread-safe: one connection per thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._wal_size_at_checkpoint = 0
        self.damaged: Path | None = None  # where a damaged journal was set aside, if it was
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._open()
        except _Damaged as exc:
            self.close()
            detail = exc.__cause__ or exc.message
            self.damaged = self._set_aside()
            self._open()
            with self._tx() as db:
                db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('damaged', ?)", (self.damaged.name,)
                )
            _say(
                f"the outbox journal {path} is damaged ({detail}); it is kept as "
                f"{self.damaged.name} beside it and a fresh journal is used. Run `ledger sync`: "
                "it rebuilds from the chain the runs this key recorded (so none is sent twice). "
                "Records that were in it and not yet on chain are not sent; salvage them with "
                f"`sqlite3 {self.damaged} .recover`"
            )

    def _open(self) -> None:
        try:
            db = self._db()
            db.executescript(_SCHEMA)  # idempotent; executescript commits itself
            check = db.execute("PRAGMA quick_check(1)").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            if _is_damage(exc):
                raise _Damaged(str(exc)) from exc
            raise RecordError(
                f"cannot open the outbox journal {self.path}: {exc}",
                hint="check that the data directory is writable",
            ) from exc
        if check != "ok":
            raise _Damaged(str(check))
        self._check_schema()

    def _set_aside(self) -> Path:
        """Rename the damaged journal (with its WAL and shared-memory files) to
        ``outbox.sqlite.damaged-<UTC time>``; returns the new name."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{n}")
        for suffix in ("", "-wal", "-shm"):
            try:
                os.rename(f"{self.path}{suffix}", f"{aside}{suffix}")
            except FileNotFoundError:
                continue  # no such file (or another process set it aside first)
        return aside

    def meta(self, key: str) -> str | None:
        row = self._db().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str | None) -> None:
        with self._tx() as db:
            if value is None:
                db.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def insert_confirmed(self, rows: Sequence[dict[str, Any]]) -> None:
        """Entries known confirmed from the chain (a rebuilt journal), in one transaction."""
        now = time.time()
        with self._tx() as db:
            db.executemany(
                "INSERT INTO entries (run_id, kind, step, state, payload, record, tx_hash,"
                " block_number, block_hash, chain_id, registry, note, created_at, updated_at)"
                " VALUES (?, ?, ?, 'confirmed', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r["run_id"],
                        r["kind"],
                        r.get("step"),
                        json.dumps(r["payload"]),
                        json.dumps(r["record"]),
                        r["tx_hash"],
                        r["block_number"],
                        r["block_hash"],
                        r["chain_id"],
                        r["registry"],
                        r.get("note"),
                        now,
                        now,
                    )
                    for r in rows
                ],
            )

    def _check_schema(self) -> None:
        with self._tx() as db:
            found = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if found is None:
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(found[0]) == 1:
                _upgrade_from_1(db)
            elif int(found[0]) != SCHEMA_VERSION:
                raise RecordError(
                    f"{self.path} has outbox schema {found[0]}; this ledger reads {SCHEMA_VERSION}",
                    hint="finish it with the ledger version that wrote it (`ledger sync`)",
                )

    # -- connections ----------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            try:
                db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                db.row_factory = sqlite3.Row
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("PRAGMA busy_timeout=30000")
                # no connection copies the WAL back on commit (a copy and an fsync
                # inside some unlucky append); the worker does it between passes
                db.execute("PRAGMA wal_autocheckpoint=0")
            except sqlite3.Error as exc:
                if db is not None:
                    db.close()
                if isinstance(exc, sqlite3.DatabaseError) and _is_damage(exc):
                    raise _Damaged(
                        f"the outbox journal {self.path} is damaged: {exc}",
                        hint="open it again (any ledger command does) to set it aside",
                    ) from exc
                raise RecordError(
                    f"cannot open the outbox journal {self.path}: {exc}",
                    hint="check that the data directory is writable",
                ) from exc
            self._local.db = db
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: writers queue, readers go on)."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    WAL_LIMIT = 4 << 20  # bytes of WAL before the worker copies it back (SQLite's default)

    def checkpoint_wal(self) -> None:
        """Copy the WAL's pages into the database file once it has grown past
        WAL_LIMIT, without waiting on anyone (its fsyncs stay off the appends).

        A checkpoint does not shrink the WAL file: the next write starts it over
        from its first page. So the file is checkpointed again only once it has
        grown past its size at the last checkpoint; a size test alone would
        checkpoint on every pass from then on (an fsync of the database each
        time, and appends slowed by the restarts: 0.18 -> 0.5 ms).
        """
        try:
            size = self.path.with_name(self.path.name + "-wal").stat().st_size
        except FileNotFoundError:
            return
        if size > max(self.WAL_LIMIT, self._wal_size_at_checkpoint):
            self._db().execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._wal_size_at_checkpoint = size

    # -- the hook's side ------------------------------------------------------

    def append(
        self, run_id: str, kind: Kind, payload: dict[str, Any], step: int | None = None
    ) -> int:
        """Append one entry; returns its id. The training loop's whole cost."""
        now = time.time()
        text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
        # one statement in autocommit mode: its own transaction, one trip into SQLite
        try:
            cursor = self._db().execute(
                "INSERT INTO entries (run_id, kind, step, payload, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, kind, step, text, now, now),
            )
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_FULL:
                raise
            raise JournalFullError(
                f"the disk under the outbox journal {self.path} is full",
                hint="free space there; records are kept in memory until it can be written",
            ) from exc
        return int(cursor.lastrowid or 0)

    # -- the worker's side ----------------------------------------------------

    def run_committers(self, run_ids: set[str]) -> dict[str, str]:
        """The committer each run's start entry names (runs without one are left out)."""
        if not run_ids:
            return {}
        marks = ",".join("?" * len(run_ids))
        rows = self._db().execute(
            f"SELECT run_id, payload FROM entries WHERE kind = 'start' AND run_id IN ({marks})",
            sorted(run_ids),
        )
        found = {}
        for run_id, payload in rows:
            committer = json.loads(payload).get("committer")
            if isinstance(committer, str):
                found[str(run_id)] = committer
        return found

    def entries(
        self,
        *,
        states: Sequence[str] = (),
        run_id: str | None = None,
        ids: Sequence[int] = (),
        tx_hash: str | None = None,
    ) -> list[Entry]:
        """Entries in append order, filtered by any of the given fields."""
        clauses, args = [], []  # type: tuple[list[str], list[Any]]
        if states:
            clauses.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(states)
        if run_id is not None:
            clauses.append("run_id = ?")
            args.append(run_id)
        if ids:
            clauses.append(f"id IN ({','.join('?' * len(ids))})")
            args.extend(ids)
        if tx_hash is not None:
            clauses.append("tx_hash = ?")
            args.append(tx_hash)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db().execute(f"SELECT * FROM entries {where} ORDER BY id", args)
        return [Entry.from_row(row) for row in rows]

    # -- the chain the confirmed entries are on ---------------------------------

    def chain_identity(self) -> tuple[int, str] | None:
        """(chain id, genesis block hash) of the chain the confirmed entries were last
        checked against, or None before the first check."""
        rows = dict(
            self._db()
            .execute("SELECT key, value FROM meta WHERE key IN ('chain_id', 'genesis_hash')")
            .fetchall()
        )
        if "chain_id" not in rows or "genesis_hash" not in rows:
            return None
        return int(rows["chain_id"]), str(rows["genesis_hash"])

    def set_chain_identity(self, chain_id: int, genesis_hash: str) -> None:
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [("chain_id", str(chain_id)), ("genesis_hash", genesis_hash)],
            )

    def newest_confirmed_block(self, registry: str) -> tuple[int, set[str]] | None:
        """The newest block holding confirmed entries of ``registry``, with the hashes
        they recorded (one index lookup: the worker asks it every pass)."""
        row = (
            self._db()
            .execute(
                "SELECT MAX(block_number) FROM entries WHERE state = 'confirmed' AND registry = ?",
                (registry,),
            )
            .fetchone()
        )
        if row is None or row[0] is None:
            return None
        hashes = self._db().execute(
            "SELECT DISTINCT block_hash FROM entries WHERE state = 'confirmed'"
            " AND registry = ? AND block_number = ?",
            (registry, row[0]),
        )
        return int(row[0]), {str(h) for (h,) in hashes}

    def confirmed_block_hashes(self, registry: str) -> list[tuple[int, str]]:
        """Every (block number, block hash) that confirmed entries of ``registry`` recorded."""
        rows = self._db().execute(
            "SELECT DISTINCT block_number, block_hash FROM entries WHERE state = 'confirmed'"
            " AND registry = ? ORDER BY block_number",
            (registry,),
        )
        return [(int(n) if n is not None else -1, str(h or "")) for n, h in rows]

    def append_confirmed(
        self,
        run_id: str,
        kind: Kind,
        payload: dict[str, Any],
        record: dict[str, Any],
        *,
        block_number: int,
        block_hash: str,
        registry: str,
        tx_hash: str,
        chain_id: int,
    ) -> int:
        """Journal a record sent by other means (``ledger revoke``) as confirmed, so a
        chain that loses it gets it back from the outbox."""
        now = time.time()
        cursor = self._db().execute(
            "INSERT INTO entries (run_id, kind, state, payload, record, tx_hash, block_number,"
            " block_hash, chain_id, registry, created_at, updated_at)"
            " VALUES (?, ?, 'confirmed', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                kind,
                json.dumps(payload, separators=(",", ":")),
                json.dumps(record),
                tx_hash,
                block_number,
                block_hash,
                chain_id,
                registry,
                now,
                now,
            ),
        )
        return int(cursor.lastrowid or 0)

    def confirmed_elsewhere(
        self, registry: str, blocks: Sequence[tuple[int, str]], *, everything: bool = False
    ) -> list[Entry]:
        """Confirmed entries of another registry, or of ``registry`` recorded in one of
        the (block number, block hash) ``blocks``; all confirmed entries if ``everything``."""
        if everything:
            return self.entries(states=["confirmed"])
        stale = set(blocks)
        where = "" if stale else " AND registry IS NOT ?"
        rows = self._db().execute(
            f"SELECT * FROM entries WHERE state = 'confirmed'{where} ORDER BY id",
            () if stale else (registry,),
        )
        found = []
        for row in rows:
            number = row["block_number"]
            key = (int(number) if number is not None else -1, str(row["block_hash"] or ""))
            if row["registry"] != registry or key in stale:
                found.append(Entry.from_row(row))
        return found

    def entry(self, entry_id: int) -> Entry:
        found = self.entries(ids=[entry_id])
        if not found:
            raise RecordError(f"no outbox entry {entry_id} in {self.path}")
        return found[0]

    def mark_stored_many(self, records: Sequence[tuple[int, dict[str, Any]]]) -> None:
        """Several entries stored, in one transaction."""
        if not records:
            return
        now = time.time()
        with self._tx() as db:
            db.executemany(
                "UPDATE entries SET state = 'stored', record = ?, error = NULL, updated_at = ?"
                " WHERE id = ?",
                [(json.dumps(record), now, i) for i, record in records],
            )

    def mark_failed(self, entry_id: int, error: str) -> None:
        self._update([entry_id], state="failed", error=error[:2000])

    def note_attempt(self, entry_ids: Sequence[int], error: str) -> None:
        """A retryable failure: count it and keep the message for ``ledger status``."""
        with self._tx() as db:
            db.executemany(
                "UPDATE entries SET attempts = attempts + 1, error = ?, updated_at = ?"
                " WHERE id = ?",
                [(error[:2000], time.time(), i) for i in entry_ids],
            )

    def save_sent(self, entry_ids: Sequence[int], tx: SavedTx) -> None:
        """Save a signed transaction and mark its entries sent, in one transaction."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO txs VALUES (?, ?, ?, ?, ?, ?)",
                (tx.tx_hash, tx.raw, tx.sender, tx.nonce, tx.chain_id, now),
            )
            db.executemany(
                "UPDATE entries SET state = 'sent', tx_hash = ?, chain_id = ?, updated_at = ?"
                " WHERE id = ?",
                [(tx.tx_hash, tx.chain_id, now, i) for i in entry_ids],
            )

    def saved_tx(self, tx_hash: str) -> SavedTx | None:
        row = self._db().execute("SELECT * FROM txs WHERE tx_hash = ?", (tx_hash,)).fetchone()
        if row is None:
            return None
        return _saved(row)

    def save_replacement(self, entry_ids: Sequence[int], tx: SavedTx, replaces: str) -> None:
        """Save ``tx``, which replaces ``replaces`` (same sender and nonce, higher fees),
        as the transaction of its entries, in one transaction; the family keeps every
        hash (:meth:`tx_family`), since whichever of them is mined records the entries."""
        now = time.time()
        with self._tx() as db:
            found = db.execute(
                "SELECT original FROM tx_replacements WHERE tx_hash = ?", (replaces,)
            ).fetchone()
            original = str(found[0]) if found else replaces
            db.execute(
                "INSERT OR REPLACE INTO txs VALUES (?, ?, ?, ?, ?, ?)",
                (tx.tx_hash, tx.raw, tx.sender, tx.nonce, tx.chain_id, now),
            )
            db.execute(
                "INSERT OR REPLACE INTO tx_replacements VALUES (?, ?)", (tx.tx_hash, original)
            )
            db.executemany(
                "UPDATE entries SET tx_hash = ?, updated_at = ? WHERE id = ? AND state = 'sent'",
                [(tx.tx_hash, now, i) for i in entry_ids],
            )

    def tx_family(self, tx_hash: str) -> list[SavedTx]:
        """``tx_hash``'s saved transaction with those it replaced or that replaced it
        (one nonce of one sender), oldest first."""
        db = self._db()
        found = db.execute(
            "SELECT original FROM tx_replacements WHERE tx_hash = ?", (tx_hash,)
        ).fetchone()
        original = str(found[0]) if found else tx_hash
        rows = db.execute(
            "SELECT * FROM txs WHERE tx_hash = ? OR tx_hash IN"
            " (SELECT tx_hash FROM tx_replacements WHERE original = ?)"
            " ORDER BY created_at, rowid",
            (original, original),
        ).fetchall()
        return [_saved(row) for row in rows]

    def mark_confirmed(
        self,
        entry_ids: Sequence[int],
        *,
        block_number: int,
        block_hash: str,
        registry: str,
        tx_hash: str | None = None,
        note: str | None = None,
    ) -> None:
        now = time.time()
        with self._tx() as db:
            db.executemany(
                "UPDATE entries SET state = 'confirmed', block_number = ?, block_hash = ?,"
                " registry = ?, tx_hash = COALESCE(?, tx_hash), note = COALESCE(?, note),"
                " error = NULL, updated_at = ? WHERE id = ?",
                [(block_number, block_hash, registry, tx_hash, note, now, i) for i in entry_ids],
            )

    def mark_mined(
        self,
        entry_ids: Sequence[int],
        *,
        block_number: int | None,
        block_hash: str | None,
        tx_hash: str | None = None,
        note: str | None = None,
    ) -> None:
        """Entries whose transaction (``tx_hash``, else the one they have) is in block
        ``block_number`` but not yet deep enough to count: ``sent``, with the block
        noted and ``note`` saying what they wait for. ``block_number`` None: not (or
        no longer) mined."""
        now = time.time()
        with self._tx() as db:
            db.executemany(
                "UPDATE entries SET state = 'sent', tx_hash = COALESCE(?, tx_hash),"
                " block_number = ?, block_hash = ?, error = ?, updated_at = ? WHERE id = ?",
                [(tx_hash, block_number, block_hash, note, now, i) for i in entry_ids],
            )

    def resend(self, entry_ids: Sequence[int]) -> None:
        """Confirmed entries whose block left the chain, back to ``sent`` with their
        saved transaction: the worker rebroadcasts the same bytes (same nonce, same
        hash) if that nonce is still free, else looks for them and signs anew."""
        now = time.time()
        with self._tx() as db:
            db.executemany(
                "UPDATE entries SET state = 'sent', block_number = NULL, block_hash = NULL,"
                " recommits = recommits + 1, updated_at = ? WHERE id = ?",
                [(now, i) for i in entry_ids],
            )

    def requeue(
        self, entry_ids: Sequence[int], *, recommit: bool, error: str | None = None
    ) -> None:
        """Back to ``stored``: the record is known, its transaction must be sent (again)."""
        now = time.time()
        with self._tx() as db:
            db.executemany(
                "UPDATE entries SET state = 'stored', tx_hash = NULL, block_number = NULL,"
                " block_hash = NULL, recommits = recommits + ?, error = ?, updated_at = ?"
                " WHERE id = ?",
                [(1 if recommit else 0, error, now, i) for i in entry_ids],
            )

    def retry_failed(self) -> int:
        """Failed entries back to where they can be tried again; returns how many."""
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE entries SET state = CASE WHEN record IS NULL THEN 'pending'"
                " ELSE 'stored' END, error = NULL, updated_at = ? WHERE state = 'failed'",
                (time.time(),),
            )
        return cursor.rowcount

    def _update(self, entry_ids: Sequence[int], **fields: Any) -> None:
        names = ", ".join(f"{name} = ?" for name in fields)
        now = time.time()
        with self._tx() as db:
            db.executemany(
                f"UPDATE entries SET {names}, updated_at = ? WHERE id = ?",
                [(*fields.values(), now, i) for i in entry_ids],
            )

    # -- reports --------------------------------------------------------------

    def stored_by_kind(self) -> dict[str, tuple[int, float]]:
        """Per kind, how many entries are ``stored`` and when the oldest was
        appended: one aggregate, no entry read (the worker asks it every pass)."""
        rows = self._db().execute(
            "SELECT kind, COUNT(*), MIN(created_at) FROM entries WHERE state = 'stored'"
            " GROUP BY kind"
        )
        return {str(kind): (int(count), float(oldest)) for kind, count, oldest in rows}

    def has_sent(self) -> bool:
        """Whether a transaction is out for some entry (one index probe)."""
        row = self._db().execute("SELECT 1 FROM entries WHERE state = 'sent' LIMIT 1").fetchone()
        return row is not None

    def open_by_committer(self) -> dict[str, int]:
        """Open entries (pending, stored, sent) per the committer their run's start
        names, lower-case (``""`` for runs whose start is not in this journal)."""
        rows = (
            self._db()
            .execute(
                "SELECT run_id, COUNT(*) FROM entries WHERE state IN ('pending', 'stored', 'sent')"
                " GROUP BY run_id"
            )
            .fetchall()
        )
        committers = self.run_committers({str(run_id) for run_id, _ in rows})
        found: dict[str, int] = {}
        for run_id, count in rows:
            key = committers.get(str(run_id), "").lower()
            found[key] = found.get(key, 0) + int(count)
        return found

    def counts(self, run_id: str | None = None) -> dict[str, int]:
        """Entries per state (every state present, zero or not)."""
        sql = "SELECT state, COUNT(*) FROM entries"
        args: tuple[Any, ...] = ()
        if run_id is not None:
            sql, args = sql + " WHERE run_id = ?", (run_id,)
        found = dict(self._db().execute(sql + " GROUP BY state", args).fetchall())
        return {state: int(found.get(state, 0)) for state in STATES}

    def open_count(self, run_id: str | Sequence[str] | None = None, upto: int | None = None) -> int:
        """Entries not yet confirmed nor failed (optionally of one run or of some
        runs, up to an id)."""
        sql = "SELECT COUNT(*) FROM entries WHERE state IN ('pending', 'stored', 'sent')"
        args: list[Any] = []
        if isinstance(run_id, str):
            sql += " AND run_id = ?"
            args.append(run_id)
        elif run_id is not None:
            sql += f" AND run_id IN ({','.join('?' * len(run_id))})"
            args.extend(run_id)
        if upto is not None:
            sql += " AND id <= ?"
            args.append(upto)
        return int(self._db().execute(sql, args).fetchone()[0])


def _saved(row: sqlite3.Row) -> SavedTx:
    return SavedTx(
        row["tx_hash"],
        bytes(row["raw"]),
        row["sender"],
        row["nonce"],
        row["chain_id"],
        float(row["created_at"]),
    )


def _upgrade_from_1(db: sqlite3.Connection) -> None:
    """Schema 1 to 2 inside the caller's transaction: the entries table again with the
    ``revoke`` kind allowed (SQLite cannot change a CHECK in place); rows, ids and the
    AUTOINCREMENT sequence are kept."""
    (old_sql,) = db.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'entries'"
    ).fetchone()
    new_sql = str(old_sql).replace("'fail')", "'fail', 'revoke')", 1)
    db.execute("ALTER TABLE entries RENAME TO entries_v1")
    db.execute(new_sql)
    db.execute("INSERT INTO entries SELECT * FROM entries_v1")
    db.execute("DROP TABLE entries_v1")
    for statement in _SCHEMA.split(";"):
        if "CREATE INDEX" in statement:
            db.execute(statement)
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))
