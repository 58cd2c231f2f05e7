"""The audit index: the registry's events in SQL, for answers in milliseconds.

- :mod:`ledger.index.models` — the tables (SQLAlchemy 2);
- :mod:`ledger.index.migrations` — their Alembic migrations, run on open;
- :mod:`ledger.index.db` — where the index lives (SQLite file or a URL) and migrating it;
- :mod:`ledger.index.indexer` — follows the chain with a confirmation depth, resumes
  from its last block and rolls back past reorgs and chain resets;
- :mod:`ledger.index.queries` — the read side the API uses.

The index is a cache of what the chain says, never an authority: anything
reported as verified is re-checked against the chain (:mod:`ledger.verify`).
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from ledger.config import Settings, confirmation_depth
from ledger.store import ArtifactStore, open_store


def artifact_store(settings: Settings) -> ArtifactStore:
    """The store the index and the API read documents from: the configured IPFS node,
    else the embedded store (:func:`ledger.store.open_store`)."""
    return open_store(settings)


def open_index(settings: Settings, url: str | None = None) -> Engine:
    """The index database named by the settings (or ``url``), migrated to the newest schema."""
    from ledger.index.db import index_url, migrate, open_engine

    engine = open_engine(url or index_url(settings))
    migrate(engine)
    return engine


def confirmations_for(settings: Settings, chain_id: int, configured: int | None = None) -> int:
    """Blocks to wait before indexing: ``configured`` (``--confirmations``), else the
    depth the outbox honours too (:func:`ledger.config.confirmation_depth`:
    ``LEDGER_CONFIRMATIONS``, else 0 on a local dev chain and 12 elsewhere)."""
    if configured is not None:
        return configured
    return confirmation_depth(settings, chain_id)
