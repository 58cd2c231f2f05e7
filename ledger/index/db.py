"""Where the index lives and how its schema gets there.

The index is a SQLite file in the data directory (``<data dir>/index.sqlite``)
unless ``LEDGER_INDEX_URL`` (or ``index_url`` in ``config.json``) names another
database, e.g. ``postgresql+psycopg://user@host/db``. A PostgreSQL schema other
than ``public`` is chosen with libpq's ``options``:
``...?options=-csearch_path%3Dledger``.

The schema is only ever created or changed by the Alembic migrations shipped in
:mod:`ledger.index.migrations`, run by :func:`migrate` when the indexer or the
API opens the database.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from ledger.config import Settings, read_config_file
from ledger.errors import ConfigError, IndexUnavailableError

INDEX_FILE = "index.sqlite"
MIGRATIONS = Path(__file__).parent / "migrations"


def index_url(settings: Settings) -> str:
    """The index database URL: ``LEDGER_INDEX_URL`` > ``index_url`` in config.json > SQLite."""
    configured = os.environ.get("LEDGER_INDEX_URL") or read_config_file(settings.data_dir).get(
        "index_url"
    )
    if configured:
        return str(configured)
    return f"sqlite:///{settings.data_dir / INDEX_FILE}"


def open_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL (readers never wait for the indexer)."""
    kwargs: dict[str, Any] = {}
    is_sqlite = url.startswith("sqlite")
    if is_sqlite:
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        if url in ("sqlite://", "sqlite:///:memory:"):
            kwargs["poolclass"] = StaticPool
        else:
            # as for PostgreSQL: connections kept (and their page caches warm) under load
            kwargs.update(pool_size=20, max_overflow=20)
            path = Path(url.split("///", 1)[1]) if "///" in url else None
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
    else:
        kwargs.update(pool_size=20, max_overflow=20, pool_pre_ping=True)
    try:
        engine = create_engine(url, **kwargs)
    except (ArgumentError, ImportError, ValueError) as exc:
        raise ConfigError(
            f"the index URL {_safe(url)} cannot be used: {exc}",
            hint="set LEDGER_INDEX_URL to sqlite:///FILE or postgresql+psycopg://USER@HOST/DB",
        ) from exc
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
    return url


def _config(connection: Any) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config(None)).get_current_head()
    assert head is not None
    return head


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (a no-op when it is there)."""
    try:
        with engine.begin() as connection:
            command.upgrade(_config(connection), "head")
    except SQLAlchemyError as exc:
        raise IndexUnavailableError(
            f"cannot migrate the index at {_safe(str(engine.url))}: {exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0]}",
            hint="check LEDGER_INDEX_URL and that the database accepts connections",
        ) from exc


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at (None before the first migration)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
