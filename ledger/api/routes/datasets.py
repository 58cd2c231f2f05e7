"""``/api/v1/datasets``: datasets runs trained on, the runs and models that used one,
and its revocation (``ArtifactRevoked`` on chain)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from ledger.api.deps import State, read_index
from ledger.api.problems import responses
from ledger.api.routes._convert import answer, summary
from ledger.api.schemas import (
    DATASET_CID,
    DatasetDetailOut,
    DatasetPage,
    DatasetRun,
    DatasetSummary,
    DescendantRun,
    RevocationOut,
    RunDataOut,
    RunPage,
)
from ledger.datasets import parse_dataset
from ledger.index import queries
from ledger.index.models import ArtifactRevocation

router = APIRouter(tags=["datasets"])

DatasetParam = Annotated[
    str,
    Path(
        max_length=200,
        description="the dataset's CID (v0 or v1) or its 0x sha2-256 digest",
        examples=[DATASET_CID],
    ),
]


def revocation(row: ArtifactRevocation | None) -> RevocationOut | None:
    if row is None:
        return None
    return RevocationOut(
        block=row.block_number, tx=row.tx_hash, revoker=row.revoker, reason=row.reason
    )


@router.get(
    "/datasets",
    response_model=DatasetPage,
    summary="Datasets runs trained on",
    responses=responses(401, 422, 503),
)
def list_datasets(
    state: State,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_DATASETS)] = 100,
) -> Response:
    """Every dataset a run's manifest names, by digest, with how many runs used it and
    whether it is revoked. Pages: pass `next_cursor` back as `cursor`."""
    with read_index(state) as session:
        rows, next_cursor = queries.list_datasets(session, cursor=cursor, limit=limit)
    out = DatasetPage(
        datasets=[
            DatasetSummary(
                cid=r.cid,
                digest=r.digest,
                kind=r.kind,
                name=r.name,
                bytes=r.bytes,
                runs=r.runs,
                revoked=r.revocation is not None,
                revocation=revocation(r.revocation),
            )
            for r in rows
        ],
        next_cursor=next_cursor,
    )
    return answer(out)


@router.get(
    "/datasets/{cid}",
    response_model=DatasetDetailOut,
    summary="One dataset: the runs and models trained on it, their descendants, revocation",
    responses=responses(401, 404, 422, 503),
)
def get_dataset(
    cid: DatasetParam,
    state: State,
    depth: Annotated[int, Query(ge=1, le=50, description="generations of descendants")] = 50,
) -> Response:
    """Runs whose manifest names the dataset (or a dataset holding it as a part), the
    runs derived from them, and its revocation. From the index: `ledger verify` and
    `/api/v1/verify` check a model against the chain itself."""
    with read_index(state) as session:
        found = queries.dataset(session, cid, depth=depth)
        runs = queries.runs_by_id(session, [*found.direct, *found.descendants])
        revoked_parts = queries.revocations_of(session, [p.digest for p in found.parts])
    first = found.refs[0] if found.refs else None
    keys: dict[str, list[str]] = {}
    for ref in found.refs:
        keys.setdefault(ref.run_id, [])
        if ref.key not in keys[ref.run_id]:
            keys[ref.run_id].append(ref.key)

    def final(run_id: str) -> str | None:
        return runs[run_id].final_weights_digest if run_id in runs else None

    out = DatasetDetailOut(
        cid=first.cid if first else str(parse_dataset(cid)),
        digest=found.digest,
        kind=first.kind if first else "unknown",
        name=first.name if first else None,
        bytes=first.bytes if first else None,
        runs=len(found.direct),
        revoked=found.revocation is not None,
        revocation=revocation(found.revocation),
        part_of=sorted({r.part_of for r in found.refs if r.part_of is not None}),
        parts=[
            RunDataOut(
                key=p.key,
                cid=p.cid,
                digest=p.digest,
                kind=p.kind,
                name=p.name,
                bytes=p.bytes,
                part_of=p.part_of,
                revoked=p.digest in revoked_parts,
            )
            for p in found.parts
        ],
        used_by=[
            DatasetRun(
                run_id=rid,
                name=runs[rid].name if rid in runs else None,
                status=runs[rid].status if rid in runs else None,
                revoked=runs[rid].revoked if rid in runs else None,
                keys=keys.get(rid, []),
                final_weights_digest=final(rid),
            )
            for rid in found.direct
        ],
        descendants=[
            DescendantRun(
                run_id=rid,
                name=runs[rid].name if rid in runs else None,
                status=runs[rid].status if rid in runs else None,
                revoked=runs[rid].revoked if rid in runs else None,
                via=via,
                generation=generation,
                final_weights_digest=final(rid),
            )
            for rid, (via, generation) in sorted(
                found.descendants.items(), key=lambda kv: (kv[1][1], kv[0])
            )
        ],
        truncated=found.truncated,
    )
    return answer(out)


@router.get(
    "/datasets/{cid}/runs",
    response_model=RunPage,
    summary="Runs trained on a dataset (with transitive=true, and the runs derived from them)",
    responses=responses(401, 404, 422, 503),
)
def dataset_runs(
    cid: DatasetParam,
    state: State,
    transitive: Annotated[
        bool, Query(description="also the runs derived from them (fine-tunes, distillations...)")
    ] = False,
) -> Response:
    """ "Which models were trained on D?": the runs whose manifest names the dataset,
    and with `transitive=true` every run descending from one of them, newest first.
    Each run's `revoked_data` says whether a revoked dataset taints it."""
    with read_index(state) as session:
        found = queries.dataset(session, cid)
        wanted = [*found.direct, *(found.descendants if transitive else {})]
        runs = queries.runs_by_id(session, wanted)
        tainted = queries.data_tainted_runs(session) if runs else {}
    ordered = sorted(runs.values(), key=lambda r: (-r.started_at, r.run_id))
    out = RunPage(
        runs=[summary(r, revoked_data=sorted(tainted.get(r.run_id, ()))) for r in ordered],
        next_cursor=None,
    )
    return answer(out)
