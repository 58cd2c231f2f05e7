"""``/api/v1/runs/{id}/bundle``: a run's provenance bundle, as ``ledger export RUN`` writes it.

The bundle is built from the chain (events, receipts, Merkle proofs, a state
proof at the latest block) and the server's store (the documents), so anyone can
check it offline with ``ledger verify MODEL --bundle FILE``; it trusts this API
for nothing. A chain or store that fails while the bundle is built is a 503
problem: the answer is never half a bundle.
"""

from __future__ import annotations

import json

from fastapi import APIRouter
from fastapi.responses import Response

from ledger.api.deps import State, read_index
from ledger.api.problems import responses
from ledger.api.routes.runs import RunIdParam
from ledger.errors import (
    ChainError,
    ChainUnavailableError,
    StoreError,
    StoreUnavailableError,
)
from ledger.index import queries

router = APIRouter(tags=["runs"])

MEDIA_TYPE = "application/json"


@router.get(
    "/runs/{run_id}/bundle",
    summary="A run's provenance bundle (in-toto Statement, documents, chain proofs)",
    responses=responses(401, 404, 422, 503),
    response_class=Response,
)
def get_bundle(run_id: RunIdParam, state: State) -> Response:
    """The JSON `ledger export RUN` writes; check it with `ledger verify MODEL --bundle FILE`."""
    from ledger.bundle.export import Exporter

    with read_index(state) as session:
        run = queries.get_run(session, run_id)  # 404 for a run the index does not know
        full = run.run_id
    try:
        exporter = Exporter(state.reader(), state.store)
        bundle = exporter.export(bytes.fromhex(full[2:]))
    except (ChainUnavailableError, StoreUnavailableError):
        raise
    except ChainError as exc:
        raise ChainUnavailableError(
            f"the bundle of run {full} cannot be built now: the chain answered wrongly: "
            f"{exc.message}",
            hint="retry later; /readyz says whether the chain is reachable",
        ) from exc
    except StoreError as exc:
        raise StoreUnavailableError(
            f"the bundle of run {full} cannot be built now: the store lacks or damaged a "
            f"document: {exc.message}",
            hint="the documents of a run must be in the server's store",
        ) from exc
    name = f"run-{full[2:14]}.provenance.json"
    body = json.dumps(bundle, indent=1, sort_keys=True).encode() + b"\n"
    return Response(
        body,
        media_type=MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


__all__ = ["router"]
