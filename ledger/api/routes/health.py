"""``/healthz`` (the process answers) and ``/readyz`` (database, chain, indexer)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ledger.api.deps import State
from ledger.api.schemas import Health, Readiness
from ledger.errors import LedgerError
from ledger.index.db import current_revision, head_revision
from ledger.index.indexer import Indexer

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Health:  # async: no worker thread for an answer that waits on nothing
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: database at the newest schema, chain answers, indexer keeps up",
    responses={503: {"description": "Not ready; the body says why", "model": Readiness}},
)
def readyz(state: State) -> JSONResponse:
    database, revision = "ok", None
    try:
        with state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        revision = current_revision(state.engine)
        if revision != head_revision():
            database = f"schema at {revision}, not {head_revision()}"
    except SQLAlchemyError as exc:
        database = f"unavailable: {exc.__class__.__name__}"
    chain, head = "ok", None
    try:
        head = int(state.reader().rpc("eth_blockNumber"), 16)
    except LedgerError as exc:
        chain = f"unavailable: {exc.message}"
    indexer: Indexer | None = state.indexer
    indexed = indexer.status.last_block if indexer else None
    if indexer is not None and indexed is None:
        indexed = indexer.last_block()
    lag = None if head is None or indexed is None else max(0, head - indexed)
    error = indexer.status.last_error if indexer else None
    ready = database == "ok" and chain == "ok" and error is None
    body = Readiness(
        ready=ready,
        database=database,
        schema_revision=revision,
        chain=chain,
        chain_head=head,
        indexed_block=indexed,
        lag_blocks=lag,
        indexer_error=error,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
