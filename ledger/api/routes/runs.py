"""``/api/v1/runs``: list with filters, one run, lineage, taint."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from sqlalchemy import select

from ledger.api.deps import State, read_index
from ledger.api.problems import responses
from ledger.api.routes._convert import (
    Documents,
    answer,
    chain_facts,
    end_times,
    replay,
    summary,
    weights,
)
from ledger.api.schemas import (
    RUN_ID,
    CheckpointProofOut,
    DataTaintOut,
    LineageEdge,
    LineageNode,
    LineageOut,
    ParentLink,
    ReplayList,
    RunDataOut,
    RunDetail,
    RunPage,
    TaintedRun,
    TaintList,
    TaintOut,
)
from ledger.documents import DocumentKind
from ledger.errors import InputError
from ledger.index import filters, queries
from ledger.index.models import Metric

router = APIRouter(tags=["runs"])

RunIdParam = Annotated[
    str,
    Path(
        max_length=80,
        description="0x-prefixed 32-byte run id, or a unique prefix of 4+ hex digits",
        examples=[RUN_ID],
    ),
]

Q_HELP = (
    "Filter expression: key:value terms (committer, status, revoked, name, sweep, parent, "
    "started_after, started_before, metric, data) combined with AND (or juxtaposition), OR, "
    'NOT and parentheses; quote values with spaces: name:"my model".'
)


@router.get(
    "/runs",
    response_model=RunPage,
    summary="List runs",
    responses=responses(401, 422, 503),
)
def list_runs(
    state: State,
    q: Annotated[
        str | None,
        Query(
            max_length=filters.MAX_QUERY,
            description=Q_HELP,
            openapi_examples={
                "and-or-not": {
                    "summary": "finalized, good loss or in a sweep, not revoked",
                    "value": "status:finalized (metric:val_loss<0.1 OR sweep:lr-sweep) "
                    "NOT revoked:true",
                },
                "children": {
                    "summary": "fine-tunes of one run",
                    "value": "parent:" + RUN_ID,
                },
            },
        ),
    ] = None,
    committer: Annotated[
        str | None, Query(max_length=64, examples=["0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"])
    ] = None,
    status: Annotated[str | None, Query(max_length=16, examples=["finalized"])] = None,
    revoked: Annotated[bool | None, Query()] = None,
    name: Annotated[
        str | None, Query(max_length=200, description="exact, or with * wildcards")
    ] = None,
    sweep: Annotated[str | None, Query(max_length=200)] = None,
    parent: Annotated[
        str | None, Query(max_length=66, description="a direct parent's run id")
    ] = None,
    started_after: Annotated[
        str | None, Query(max_length=40, description="ISO 8601 or Unix seconds (inclusive)")
    ] = None,
    started_before: Annotated[
        str | None, Query(max_length=40, description="ISO 8601 or Unix seconds (exclusive)")
    ] = None,
    metric: Annotated[
        list[str] | None,
        Query(
            max_length=120,
            description="final metric threshold, repeatable (ANDed)",
            examples=[["val_loss<0.1"]],
        ),
    ] = None,
    sort: Annotated[
        str, Query(max_length=20, description="one of " + ", ".join(queries.SORTS))
    ] = "-started_at",
    cursor: Annotated[str | None, Query(max_length=600)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    with_metrics: Annotated[
        bool, Query(alias="metrics", description="include each run's final metrics")
    ] = False,
    with_params: Annotated[
        bool,
        Query(
            alias="params",
            description="include each run's config, flattened (read from the store)",
        ),
    ] = False,
    with_sources: Annotated[
        bool,
        Query(
            alias="data",
            description="include each run's data sources as its manifest names them "
            "(read from the store)",
        ),
    ] = False,
) -> Response:
    """Runs matching every given filter (and the `q` expression), newest first by default.

    Each plain parameter is the same filter as its `key:value` term in `q`; all
    are ANDed. Pages are keyset-paginated: pass `next_cursor` back as `cursor`.
    """
    conditions = [filters.parse(q)] if q else []
    for key, value in (
        ("committer", committer),
        ("status", status),
        ("name", name),
        ("sweep", sweep),
        ("parent", parent),
        ("started_after", started_after),
        ("started_before", started_before),
    ):
        if value is not None:
            conditions.append(filters.term(key, value, field=f"query.{key}"))
    if revoked is not None:
        conditions.append(filters.term("revoked", str(revoked).lower()))
    for threshold in metric or []:
        conditions.append(filters.term("metric", threshold, field="query.metric"))
    with read_index(state) as session:
        page = queries.list_runs(
            session, filters.combine(conditions), sort=sort, cursor=cursor, limit=limit
        )
        metrics: dict[str, dict[str, float]] = {}
        if with_metrics and page.runs:
            rows = session.execute(
                select(Metric.run_id, Metric.name, Metric.value).where(
                    Metric.run_id.in_([r.run_id for r in page.runs])
                )
            )
            for owner, metric_name, metric_value in rows:
                metrics.setdefault(owner, {})[metric_name] = float(metric_value)
        ended = end_times(session, page.runs)
        tainted = queries.data_tainted_runs(session) if page.runs else {}
    documents = Documents(state.store)
    manifests = {
        r.run_id: documents.get(r.manifest_digest, DocumentKind.MANIFEST)
        for r in page.runs
        if with_params or with_sources
    }
    out = RunPage(
        runs=[
            summary(
                r,
                metrics.get(r.run_id, {}) if with_metrics else None,
                ended=ended,
                manifest=manifests.get(r.run_id),
                params=with_params,
                sources=with_sources,
                revoked_data=sorted(tainted.get(r.run_id, ())),
            )
            for r in page.runs
        ],
        next_cursor=page.next_cursor,
    )
    return answer(out, documents.headers())


@router.get(
    "/runs/{run_id}",
    response_model=RunDetail,
    summary="One run: manifest, checkpoints, metrics, chain facts",
    responses=responses(401, 404, 422, 503),
)
def get_run(run_id: RunIdParam, state: State) -> Response:
    """The run from the index, with its manifest and every checkpoint's metrics read
    from the store (documents not in the store are null)."""
    with read_index(state) as session:
        run = queries.get_run(session, run_id)
        records = queries.weights_of(session, run.run_id)[:5000]
        metrics = queries.metrics_of(session, run.run_id)
        parents = queries.parents_of(session, [run.run_id])
        ended = end_times(session, [run])
        data = queries.run_data(session, run.run_id)
        revoked = queries.revocations_of(session, [d.digest for d in data])
        taint = queries.data_taint(session, run.run_id)
        replays, _ = queries.replays_of(session, run.run_id)
    documents = Documents(state.store)
    converted = [weights(documents, r) for r in records]
    manifest = documents.get(run.manifest_digest, DocumentKind.MANIFEST)
    return answer(
        RunDetail(
            **summary(
                run,
                metrics,
                ended=ended,
                manifest=manifest,
                params=True,
                sources=True,
                revoked_data=sorted({t.dataset for t in taint}),
            ).model_dump(),
            datasets=[
                RunDataOut(
                    key=d.key,
                    cid=d.cid,
                    digest=d.digest,
                    kind=d.kind,
                    name=d.name,
                    bytes=d.bytes,
                    part_of=d.part_of,
                    revoked=d.digest in revoked,
                )
                for d in data
            ],
            data_taint=[DataTaintOut(**t.__dict__) for t in taint],
            manifest_cid=run.manifest_cid,
            manifest=manifest,
            document_state=run.manifest_state,
            parents=[ParentLink(run_id=p.parent_id, relation=p.relation) for p in parents],
            chain=chain_facts(run),
            checkpoints=[w for w in converted if not w.is_final],
            final=next((w for w in converted if w.is_final), None),
            replays=[replay(documents, r) for r in replays],
        ),
        documents.headers(),
    )


@router.get(
    "/runs/{run_id}/replays",
    response_model=ReplayList,
    summary="Replay attestations of a run (ledger replay --record), newest first",
    responses=responses(401, 404, 422, 503),
)
def get_replays(
    run_id: RunIdParam,
    state: State,
    attester: Annotated[
        str | None,
        Query(max_length=42, description="only this account's attestations (0x address)"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    """Who replayed which checkpoints of the run and whether they reproduced; each
    names its report (``report_cid``: GET /api/v1/documents/{cid})."""
    from ledger.chain.records import checksum_address

    account = None
    if attester is not None:
        try:
            account = checksum_address(attester)
        except ValueError as exc:
            raise InputError(f"attester {attester!r} is not a 0x address of 40 hex digits") from exc
    with read_index(state) as session:
        parsed = queries.get_run(session, run_id).run_id
        rows, total = queries.replays_of(session, parsed, attester=account, limit=limit)
    documents = Documents(state.store)
    out = ReplayList(
        run_id=parsed,
        total=total,
        reproduced=sum(1 for r in rows if r.reproduced),
        replays=[replay(documents, r) for r in rows],
    )
    return answer(out, documents.headers())


@router.get(
    "/runs/{run_id}/lineage",
    response_model=LineageOut,
    summary="Ancestors and descendants with relations",
    responses=responses(401, 404, 422, 503),
)
def get_lineage(
    run_id: RunIdParam,
    state: State,
    depth: Annotated[int, Query(ge=1, le=50, description="generations each way")] = 10,
) -> Response:
    with read_index(state) as session:
        graph = queries.lineage(session, run_id, depth=depth)
        generations = {
            graph.root: 0,
            **{k: -v for k, v in graph.ancestors.items()},
            **graph.descendants,
        }
        known = queries.runs_by_id(session, generations)
    root = graph.root
    out = LineageOut(
        run_id=root,
        nodes=[
            LineageNode(
                run_id=rid,
                name=known[rid].name if rid in known else None,
                status=known[rid].status if rid in known else None,
                revoked=known[rid].revoked if rid in known else None,
                generation=generation,
            )
            for rid, generation in sorted(generations.items(), key=lambda kv: (kv[1], kv[0]))
        ],
        edges=[
            LineageEdge(child=e.child, parent=e.parent, relation=e.relation) for e in graph.edges
        ],
        truncated=graph.truncated,
    )
    return answer(out)


@router.get(
    "/runs/{run_id}/taint",
    response_model=TaintOut,
    summary="Whether a run or one of its ancestors is revoked",
    responses=responses(401, 404, 422, 503),
)
def get_taint(run_id: RunIdParam, state: State) -> Response:
    with read_index(state) as session:
        parsed = queries.get_run(session, run_id).run_id
        sources = queries.revoked_ancestors(session, parsed)
        data = queries.data_taint(session, parsed)
    out = TaintOut(
        run_id=parsed,
        tainted=bool(sources or data),
        revoked_sources=sources,
        revoked_data=[DataTaintOut(**t.__dict__) for t in data],
    )
    return answer(out)


@router.get(
    "/taint",
    response_model=TaintList,
    summary="Every run descending from a revoked run",
    responses=responses(401, 503),
)
def list_tainted(state: State, limit: Annotated[int, Query(ge=1, le=10000)] = 1000) -> Response:
    with read_index(state) as session:
        tainted, truncated = queries.tainted_runs(session, limit=limit)
        known = queries.runs_by_id(session, tainted)
    out = TaintList(
        runs=[
            TaintedRun(
                run_id=rid,
                name=known[rid].name if rid in known else None,
                revoked_ancestors=sorted(sources),
            )
            for rid, sources in sorted(tainted.items())
        ][:limit],
        truncated=truncated,
    )
    return answer(out)


@router.get(
    "/runs/{run_id}/checkpoints/{step}/proof",
    response_model=CheckpointProofOut,
    summary="A checkpoint's Merkle proof under the run's checkpoint root, from the chain",
    responses=responses(401, 404, 422, 502, 503),
)
def get_checkpoint_proof(
    run_id: RunIdParam,
    step: Annotated[int, Path(ge=0, le=2**64 - 1, description="the checkpoint's step")],
    state: State,
) -> Response:
    """As `ledger proof RUN STEP`: the leaf and sibling path of the checkpoint at `step`,
    and whether the registry itself accepts them. Read from the chain for each
    request (never cached): 422 before the run is finalized, 404 for a step it has
    no checkpoint at."""
    from ledger.chain.proofs import checkpoint_proof

    registry = state.reader()
    parsed = registry.resolve_run(run_id, field="path.run_id", exists=True)
    out = CheckpointProofOut(**checkpoint_proof(registry, parsed, step, shown=run_id))
    return answer(out, {"cache-control": "no-store"})
