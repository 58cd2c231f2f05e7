"""schemathesis against the app's own OpenAPI: no 5xx, every response as documented.

Bounded (``MAX_EXAMPLES`` per operation) so the suite stays fast; the app runs
over the real chain, store and a SQLite index holding a small family of runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from ledger.config import Settings
from ledger.ids import Relation
from ledger.index.indexer import Indexer
from ledger.store import LocalStore
from tests.conftest import Chain
from tests.runs import record_run

MAX_EXAMPLES = 30
CHECKS: list[Callable[..., Any]] = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]


@pytest.fixture
def index_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'index.sqlite'}"


@pytest.fixture
def api_schema(chain: Chain, settings: Settings, data_store: LocalStore, indexer: Indexer) -> Any:
    from ledger.api.app import ApiConfig, create_app

    base = record_run(chain.registry, data_store, "base", curve=[{"val_loss": 0.3}])
    record_run(chain.registry, data_store, "child", parents=[(base.run_id, Relation.PRUNING)])
    chain.registry.revoke_run(base.run_id, "schema test")
    indexer.run_once()
    app = create_app(settings, ApiConfig(follow=False), engine=indexer.engine, indexer=indexer)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_api_conforms_to_its_schema(api_schema: Any) -> None:
    # schemathesis' own strategies and checks, driven through its Python API over every
    # operation: its pytest plugin (schema.parametrize) fails under pytest 9.2 with
    # AttributeError: 'Function' object has no attribute '_nodeid', so it is switched off
    # (-p no:schemathesis). Each operation gets MAX_EXAMPLES requests, derandomized.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 8
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: Any) -> None:
            case.call_and_validate(checks=CHECKS)

        check()
