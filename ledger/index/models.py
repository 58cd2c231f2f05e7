"""The index's tables (SQLAlchemy 2 declarative models).

Two layers. ``events`` and ``blocks`` are what was read from the chain, as read:
every registry log in order, and the hash of every block the indexer relied on.
``runs``, ``parents``, ``weights``, ``metrics``, ``run_data``,
``artifact_revocations`` and ``replay_attestations`` are derived from the events
(and from the store's documents) and can always be rebuilt from them, which is
how a reorg is undone: events above the fork are deleted and the affected runs
are replayed from the events that remain.

Digests and ids are lower-case ``0x`` hex text, so the same query works on
SQLite and PostgreSQL and the API can return them as they are. The schema is
created and changed only by the Alembic migrations in ``migrations/``; a test
checks that they produce exactly these tables.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

HEX32 = String(66)
ADDRESS = String(42)


class Base(DeclarativeBase):
    pass


class Meta(Base):
    """Which chain and registry the index holds (a change wipes the derived state)."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class IndexState(Base):
    """One row: ``generation`` goes up in every transaction that changes what the index
    says (events, a rollback, documents), so a reader can tell a cached answer is stale."""

    __tablename__ = "index_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    generation: Mapped[int] = mapped_column(BigInteger)


class Block(Base):
    """A block the indexer read up to or found events in, with the hash it had then."""

    __tablename__ = "blocks"

    number: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(HEX32)
    timestamp: Mapped[int | None] = mapped_column(BigInteger)


class Event(Base):
    """One registry log, decoded; ``payload`` is its arguments as JSON (bytes as hex)."""

    __tablename__ = "events"

    block_number: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    log_index: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    tx_hash: Mapped[str] = mapped_column(HEX32)
    name: Mapped[str] = mapped_column(String(40))
    run_id: Mapped[str] = mapped_column(HEX32, index=True)
    payload: Mapped[str] = mapped_column(Text)


class Run(Base):
    """A run as its events (and its manifest, once read from the store) describe it."""

    __tablename__ = "runs"

    run_id: Mapped[str] = mapped_column(HEX32, primary_key=True)
    committer: Mapped[str] = mapped_column(ADDRESS)
    manifest_digest: Mapped[str] = mapped_column(HEX32)
    status: Mapped[str] = mapped_column(String(16))
    revoked: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    started_block: Mapped[int] = mapped_column(BigInteger)
    started_log: Mapped[int] = mapped_column(Integer)
    started_tx: Mapped[str] = mapped_column(HEX32)
    started_at: Mapped[int] = mapped_column(BigInteger)  # indexed with run_id below
    ended_block: Mapped[int | None] = mapped_column(BigInteger)
    ended_tx: Mapped[str | None] = mapped_column(HEX32)
    failed_reason: Mapped[str | None] = mapped_column(Text)
    revoked_block: Mapped[int | None] = mapped_column(BigInteger)
    revoked_tx: Mapped[str | None] = mapped_column(HEX32)
    revoked_by: Mapped[str | None] = mapped_column(ADDRESS)
    revoked_reason: Mapped[str | None] = mapped_column(Text)
    checkpoint_count: Mapped[int] = mapped_column(Integer, default=0)
    checkpoint_root: Mapped[str | None] = mapped_column(HEX32)
    final_weights_digest: Mapped[str | None] = mapped_column(HEX32)
    final_tensor_root: Mapped[str | None] = mapped_column(HEX32)
    final_metrics_digest: Mapped[str | None] = mapped_column(HEX32)
    # from the manifest (store); state: pending, loaded, missing
    manifest_state: Mapped[str] = mapped_column(String(8), default="pending", index=True)
    manifest_cid: Mapped[str | None] = mapped_column(String(120))
    name: Mapped[str | None] = mapped_column(String(200), index=True)
    sweep_id: Mapped[str | None] = mapped_column(String(200))
    sweep_trial: Mapped[int | None] = mapped_column(Integer)
    world_size: Mapped[int | None] = mapped_column(Integer)
    # from the final metrics document: pending (finalized, unread), loaded, missing, none
    metrics_state: Mapped[str] = mapped_column(String(8), default="none", index=True)


class Parent(Base):
    """A lineage edge as ``RunStarted`` records it: ``child`` derives from ``parent``."""

    __tablename__ = "parents"

    child_id: Mapped[str] = mapped_column(
        HEX32, ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True
    )
    parent_id: Mapped[str] = mapped_column(HEX32, primary_key=True, index=True)
    relation: Mapped[str] = mapped_column(String(16))
    position: Mapped[int] = mapped_column(Integer)


class Weights(Base):
    """A weights record: a checkpoint (``step`` set) or a run's final weights."""

    __tablename__ = "weights"

    block_number: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    log_index: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    run_id: Mapped[str] = mapped_column(
        HEX32, ForeignKey("runs.run_id", ondelete="CASCADE"), index=True
    )
    is_final: Mapped[bool] = mapped_column(Boolean)
    step: Mapped[int | None] = mapped_column(BigInteger)
    weights_digest: Mapped[str] = mapped_column(HEX32, index=True)
    tensor_root: Mapped[str] = mapped_column(HEX32, index=True)
    metrics_digest: Mapped[str] = mapped_column(HEX32)
    tx_hash: Mapped[str] = mapped_column(HEX32)


class Metric(Base):
    """One numeric metric of a run's final metrics document (what thresholds filter on)."""

    __tablename__ = "metrics"

    run_id: Mapped[str] = mapped_column(
        HEX32, ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[float] = mapped_column(Float)


class RunData(Base):
    """A dataset (or a part of one) a run's manifest names (:mod:`ledger.datasets`)."""

    __tablename__ = "run_data"

    run_id: Mapped[str] = mapped_column(
        HEX32, ForeignKey("runs.run_id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    digest: Mapped[str] = mapped_column(HEX32, primary_key=True, index=True)
    cid: Mapped[str] = mapped_column(String(120))
    kind: Mapped[str] = mapped_column(String(40))
    name: Mapped[str | None] = mapped_column(String(200))
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    part_of: Mapped[str | None] = mapped_column(String(120))


class ArtifactRevocation(Base):
    """An ``ArtifactRevoked`` event: a dataset (any artifact digest) revoked on chain."""

    __tablename__ = "artifact_revocations"

    digest: Mapped[str] = mapped_column(HEX32, primary_key=True)
    block_number: Mapped[int] = mapped_column(BigInteger, index=True)
    log_index: Mapped[int] = mapped_column(Integer)
    tx_hash: Mapped[str] = mapped_column(HEX32)
    revoker: Mapped[str] = mapped_column(ADDRESS)
    reason: Mapped[str] = mapped_column(Text)


class ReplayAttestation(Base):
    """A ``ReplayAttested`` event: an account replayed checkpoints ``from_step`` to
    ``to_step`` of a run (``ledger replay --record``) and says whether they reproduced;
    ``report_digest`` names the replay report in the store."""

    __tablename__ = "replay_attestations"

    block_number: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    log_index: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    run_id: Mapped[str] = mapped_column(
        HEX32, ForeignKey("runs.run_id", ondelete="CASCADE"), index=True
    )
    attester: Mapped[str] = mapped_column(ADDRESS, index=True)
    from_step: Mapped[int] = mapped_column(BigInteger)
    to_step: Mapped[int] = mapped_column(BigInteger)
    reproduced: Mapped[bool] = mapped_column(Boolean)
    report_digest: Mapped[str] = mapped_column(HEX32)
    tx_hash: Mapped[str] = mapped_column(HEX32)


Index("ix_metrics_name_value", Metric.name, Metric.value)
Index("ix_runs_started", Run.started_at, Run.run_id)
# Equality filters that also serve the default order (newest first) without a sort.
Index("ix_runs_status_started", Run.status, Run.started_at, Run.run_id)
Index("ix_runs_committer_started", Run.committer, Run.started_at, Run.run_id)
Index("ix_runs_sweep_started", Run.sweep_id, Run.started_at, Run.run_id)
