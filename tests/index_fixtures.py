"""Audit fixtures: an index database per test on SQLite *and* on the real PostgreSQL
(a schema of its own, dropped afterwards), and an indexer over the session chain."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from ledger.config import Settings
from ledger.index.db import migrate, open_engine
from ledger.index.indexer import Indexer
from ledger.index.service import build_indexer
from ledger.store import LocalStore
from tests.conftest import Chain

POSTGRES = os.environ.get(
    "LEDGER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SESSION = uuid.uuid4().hex[:8]


@pytest.fixture(params=["sqlite", "postgres"])
def index_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'index.sqlite'}"
        return
    schema = f"ledger_test_{SESSION}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def settings(chain: Chain, tmp_path: Path) -> Settings:
    return chain.settings(tmp_path / "data")


@pytest.fixture
def data_store(settings: Settings) -> LocalStore:
    return LocalStore(settings.store_dir)


@pytest.fixture
def engine(index_url: str) -> Iterator[Engine]:
    engine = open_engine(index_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def indexer(settings: Settings, engine: Engine) -> Indexer:
    return build_indexer(settings, engine, confirmations=0)


@pytest.fixture
def make_client(settings: Settings, engine: Engine, indexer: Indexer) -> Iterator[object]:
    """A TestClient factory over the app wired to the real chain, store and database."""
    from fastapi.testclient import TestClient

    from ledger.api.app import ApiConfig, create_app

    clients: list[TestClient] = []

    def make(**config: object) -> TestClient:
        app = create_app(
            settings, ApiConfig(follow=False).with_(**config), engine=engine, indexer=indexer
        )
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)
