"""The FastAPI application of ``ledger serve``.

:func:`create_app` wires the index database (migrated on start), the store, the
optional bearer token and CORS, and, unless told otherwise, runs the indexer on
a background thread for as long as the app runs. Nothing has a default secret:
without a token the API is open, as fits the local default (127.0.0.1).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy.engine import Engine

from ledger.api import problems
from ledger.api.cache import DEFAULT_ENTRIES, IndexGeneration, ResponseCache
from ledger.api.deps import ApiState, require_token
from ledger.api.guard import RequestGuard
from ledger.api.routes import bundle, datasets, documents, health, lookup, runs, verify, web
from ledger.config import Secret, Settings
from ledger.errors import ConfigError
from ledger.index import artifact_store, open_index
from ledger.index.indexer import Indexer
from ledger.index.service import BackgroundIndexer, build_indexer

DEFAULT_MAX_UPLOAD = 4 << 30
DEFAULT_VERIFY_SLOTS = 2


@dataclass(frozen=True)
class ApiConfig:
    """How the API is exposed. ``from_env`` reads ``LEDGER_API_TOKEN``,
    ``LEDGER_API_CORS`` (comma-separated origins), ``LEDGER_API_MAX_UPLOAD`` (bytes) and
    ``LEDGER_API_CACHE`` (answers kept per server process, 0: no cache) and
    ``LEDGER_API_VERIFY_SLOTS`` (uploads verified at a time per server process)."""

    token: Secret | None = field(default=None, repr=False)
    cors_origins: tuple[str, ...] = ()
    max_upload: int = DEFAULT_MAX_UPLOAD
    cache_entries: int = DEFAULT_ENTRIES
    verify_slots: int = DEFAULT_VERIFY_SLOTS
    index_url: str | None = None
    follow: bool = True
    interval: float = 1.0

    @classmethod
    def from_env(cls, **overrides: object) -> ApiConfig:
        env = os.environ
        token = env.get("LEDGER_API_TOKEN") or None
        if token is not None and len(token) < 16:
            raise ConfigError(
                "LEDGER_API_TOKEN is shorter than 16 characters",
                hint="use a long random token, e.g. `python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'`",
            )
        origins = tuple(o.strip() for o in env.get("LEDGER_API_CORS", "").split(",") if o.strip())
        max_upload = _count(env, "LEDGER_API_MAX_UPLOAD", DEFAULT_MAX_UPLOAD, "a byte count")
        cache = _count(env, "LEDGER_API_CACHE", DEFAULT_ENTRIES, "a number of answers")
        slots = _count(env, "LEDGER_API_VERIFY_SLOTS", DEFAULT_VERIFY_SLOTS, "a number of uploads")
        config = cls(Secret(token) if token else None, origins, max_upload, cache, slots)
        return config.with_(**overrides)

    def with_(self, **changes: object) -> ApiConfig:
        from dataclasses import replace

        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]


def _count(env: Mapping[str, str], name: str, default: int, what: str) -> int:
    text = env.get(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(f"{name}={text!r} is not {what} (a whole number >= 0)")
    return value


def create_app(
    settings: Settings,
    config: ApiConfig | None = None,
    *,
    engine: Engine | None = None,
    indexer: Indexer | None = None,
) -> FastAPI:
    """The app; ``engine``/``indexer`` may be given (tests), else built from the settings."""
    config = config or ApiConfig()
    holder: dict[str, BackgroundIndexer] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state: ApiState = app.state.ledger
        if config.follow:
            if state.indexer is None:
                state.indexer = build_indexer(settings, state.engine)
            holder["bg"] = BackgroundIndexer(state.indexer, interval=config.interval)
            holder["bg"].start()
        try:
            yield
        finally:
            if "bg" in holder:
                holder.pop("bg").stop()
            generation.close()

    app = FastAPI(
        title="ledger audit API",
        version="1",
        summary="Runs, lineage and verification of ML training recorded on chain.",
        description=(
            "Answers from an index of the registry's events. Anything reported as verified "
            "(`/api/v1/verify`) is re-checked against the chain itself. Errors are "
            "`application/problem+json`. Runs filters: see `q` on `GET /api/v1/runs`."
        ),
        lifespan=lifespan,
        docs_url=None,  # /docs is served from local files (routes/web.py), never a CDN
        redoc_url=None,
        telemetry={"tracing": False, "metrics": False, "logs": False},
        openapi_tags=[
            {"name": "runs", "description": "Runs, lineage and taint from the index"},
            {"name": "lookup", "description": "Find records by file CID or tensor root"},
            {"name": "verify", "description": "Re-check a file or digest against the chain"},
            {"name": "health", "description": "Liveness and readiness"},
        ],
    )
    app.state.ledger = ApiState(
        settings=settings,
        engine=engine if engine is not None else open_index(settings, config.index_url),
        store=artifact_store(settings),
        token=config.token,
        max_upload=config.max_upload,
        indexer=indexer,
    )
    problems.install(app)
    generation = IndexGeneration(app.state.ledger.engine)
    app.add_middleware(
        ResponseCache,
        generation=generation,
        token=config.token,
        entries=config.cache_entries,
    )
    if config.cors_origins:  # outside the cache: its headers go on cached answers too
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    # Outermost: the token and the body limits act before anything reads the body.
    app.add_middleware(
        RequestGuard,
        token=config.token,
        max_upload=config.max_upload,
        verify_slots=config.verify_slots,
    )
    guarded = [Depends(require_token)]
    app.include_router(runs.router, prefix="/api/v1", dependencies=guarded)
    app.include_router(lookup.router, prefix="/api/v1", dependencies=guarded)
    app.include_router(datasets.router, prefix="/api/v1", dependencies=guarded)
    app.include_router(documents.router, prefix="/api/v1", dependencies=guarded)
    app.include_router(bundle.router, prefix="/api/v1", dependencies=guarded)
    app.include_router(verify.router, prefix="/api/v1", dependencies=guarded)
    app.include_router(health.router)
    app.include_router(web.router)
    web.mount_static(app)
    return app


def app_from_env() -> FastAPI:
    """The app of one ``ledger serve --workers N`` worker process.

    Settings come from the environment the parent process set (``LEDGER_HOME``,
    ``LEDGER_INDEX_URL``, ``LEDGER_API_*``). Workers only serve: the parent
    migrates the database and runs the one indexer.
    """
    from ledger.config import load_settings

    return create_app(load_settings(), ApiConfig.from_env(follow=False))
