"""``/api/v1/lookup``: which runs recorded a file (by CID) or weights (by tensor root)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from ledger.api.deps import State, read_index
from ledger.api.problems import responses
from ledger.api.routes._convert import answer
from ledger.api.schemas import LookupOut, LookupRecord
from ledger.errors import InputError
from ledger.hashing.cid import Cid
from ledger.ids import Digest32, to_hex
from ledger.index import queries

router = APIRouter(tags=["lookup"])


@router.get(
    "/lookup",
    response_model=LookupOut,
    summary="Records of a file CID, a CID digest or a tensor root",
    responses=responses(401, 422, 503),
)
def lookup(
    state: State,
    cid: Annotated[
        str | None,
        Query(
            max_length=200,
            description="a file CID, v0 or v1",
            examples=["bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"],
        ),
    ] = None,
    digest: Annotated[
        str | None, Query(max_length=66, description="0x sha2-256 digest of a CID, as on chain")
    ] = None,
    tensor_root: Annotated[str | None, Query(max_length=66, description="0x tensor root")] = None,
) -> Response:
    """Exactly one of `cid`, `digest`, `tensor_root`. Answers from the index; use
    `/api/v1/verify` for a check against the chain."""
    given = [
        (k, v) for k, v in (("cid", cid), ("digest", digest), ("tensor_root", tensor_root)) if v
    ]
    if len(given) != 1:
        raise InputError(
            "query: give exactly one of cid, digest, tensor_root",
            hint="e.g. /api/v1/lookup?cid=bafkrei...",
        )
    key, value = given[0]
    digest = tensor_root = None
    if key == "cid":
        digest = to_hex(Cid.parse(value).digest)
    elif key == "digest":
        digest = str(Digest32.parse(value, field="query.digest"))
    else:
        tensor_root = str(Digest32.parse(value, field="query.tensor_root"))
    with read_index(state) as session:
        found = queries.find_weights(session, digest=digest, tensor_root=tensor_root)
        runs = queries.runs_by_id(session, [w.run_id for w in found])
    out = LookupOut(
        query=f"{key}={value}",
        records=[
            LookupRecord(
                run_id=w.run_id,
                name=runs[w.run_id].name if w.run_id in runs else None,
                status=runs[w.run_id].status if w.run_id in runs else None,
                revoked=runs[w.run_id].revoked if w.run_id in runs else None,
                is_final=w.is_final,
                step=w.step,
                weights_digest=w.weights_digest,
                tensor_root=w.tensor_root,
                block=w.block_number,
                tx=w.tx_hash,
            )
            for w in found
        ],
    )
    return answer(out)
