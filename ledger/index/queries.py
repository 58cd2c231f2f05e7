"""The index's read side: listing runs with keyset pagination, lineage, taint, lookups,
and datasets (what runs trained on, and which runs a revoked dataset taints).

Pagination is by keyset, not offset: the cursor carries the sort key and run id
of the last row served, so a page costs the same however deep it is, and rows
indexed meanwhile neither repeat nor shift the pages.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from ledger.errors import InputError, NotFoundError
from ledger.ids import RunId, resolve_run_id, run_id_prefix
from ledger.index.models import (
    ArtifactRevocation,
    Metric,
    Parent,
    ReplayAttestation,
    Run,
    RunData,
    Weights,
)

SORTS = ("started_at", "-started_at", "name", "-name", "committer", "-committer")
MAX_LINEAGE = 2000


def _sort_column(sort: str) -> Any:
    key = sort.removeprefix("-")
    if key == "started_at":
        return Run.started_at
    if key == "name":
        return func.coalesce(Run.name, "")
    return Run.committer


def _encode_cursor(sort: str, key: Any, run_id: str) -> str:
    raw = json.dumps([sort, key, run_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


_INT64 = (-(2**63), 2**63 - 1)
_RUN_ID = re.compile(r"0x[0-9a-f]{64}")
MAX_CURSOR_KEY = 400


def _decode_cursor(cursor: str, sort: str) -> tuple[Any, str]:
    """The (sort key, run id) a cursor of :func:`_encode_cursor` carries.

    Anything else is an :class:`InputError`: a key of the wrong type, an integer
    beyond 64 bits or text with a NUL would otherwise reach the database driver.
    """
    bad = InputError(
        "cursor: not a cursor this API handed out", hint="pass next_cursor of a page as is"
    )
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = json.loads(raw)
    except (binascii.Error, ValueError, TypeError, RecursionError) as exc:
        raise bad from exc
    if not isinstance(decoded, list) or len(decoded) != 3:
        raise bad
    cursor_sort, key, run_id = decoded
    if not isinstance(cursor_sort, str) or cursor_sort not in SORTS:
        raise bad
    if cursor_sort != sort:
        raise InputError(
            f"cursor: it belongs to sort={cursor_sort!r}, not sort={sort!r}",
            hint="keep the same sort while paging, or start again without a cursor",
        )
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise bad
    if sort.removeprefix("-") == "started_at":
        if not isinstance(key, int) or isinstance(key, bool) or not _INT64[0] <= key <= _INT64[1]:
            raise bad
    elif not isinstance(key, str) or "\x00" in key or len(key) > MAX_CURSOR_KEY:
        raise bad
    return key, run_id


@dataclass(frozen=True)
class Page:
    runs: list[Run]
    next_cursor: str | None


def list_runs(
    session: Session,
    where: ColumnElement[bool],
    *,
    sort: str = "-started_at",
    cursor: str | None = None,
    limit: int = 50,
) -> Page:
    if sort not in SORTS:
        raise InputError(f"sort: {sort!r} is not one of {', '.join(SORTS)}")
    column = _sort_column(sort)
    descending = sort.startswith("-")
    query = select(Run).where(where)
    if cursor:
        key, last_id = _decode_cursor(cursor, sort)
        if descending:
            query = query.where(or_(column < key, and_(column == key, Run.run_id < last_id)))
        else:
            query = query.where(or_(column > key, and_(column == key, Run.run_id > last_id)))
    order = (column.desc(), Run.run_id.desc()) if descending else (column.asc(), Run.run_id.asc())
    rows = list(session.scalars(query.order_by(*order).limit(limit + 1)))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        key_value = {
            "started_at": last.started_at,
            "name": last.name or "",
            "committer": last.committer,
        }[sort.removeprefix("-")]
        next_cursor = _encode_cursor(sort, key_value, last.run_id)
    return Page(rows, next_cursor)


def resolve_run(session: Session, text: str, *, field: str = "run_id") -> str:
    """The indexed run id ``text`` names: a full id, or a unique prefix (``0x1a2b``...)
    of an indexed run's id. Ambiguous and unknown prefixes are errors naming them."""
    prefix = run_id_prefix(text, field=field)
    if prefix is None:
        return str(RunId.parse(text, field=field))
    query = select(Run.run_id).where(Run.run_id.like(f"0x{prefix}%")).order_by(Run.run_id)
    found = [bytes.fromhex(rid[2:]) for rid in session.scalars(query.limit(11))]
    return str(resolve_run_id(text, found, field=field))


def get_run(session: Session, run_id: str) -> Run:
    run_id = resolve_run(session, run_id)
    run = session.get(Run, run_id)
    if run is None:
        raise NotFoundError(
            f"run {run_id} is not in the index",
            hint="it may not be confirmed yet, or belong to another registry",
        )
    return run


def parents_of(session: Session, run_ids: Sequence[str]) -> list[Parent]:
    if not run_ids:
        return []
    query = select(Parent).where(Parent.child_id.in_(run_ids)).order_by(Parent.position)
    return list(session.scalars(query))


def children_of(session: Session, run_ids: Sequence[str]) -> list[Parent]:
    if not run_ids:
        return []
    query = select(Parent).where(Parent.parent_id.in_(run_ids)).order_by(Parent.child_id)
    return list(session.scalars(query))


def weights_of(session: Session, run_id: str) -> list[Weights]:
    query = (
        select(Weights)
        .where(Weights.run_id == run_id)
        .order_by(Weights.block_number, Weights.log_index)
    )
    return list(session.scalars(query))


def replays_of(
    session: Session, run_id: str, *, attester: str | None = None, limit: int = 100
) -> tuple[list[ReplayAttestation], int]:
    """The run's latest ``limit`` replay attestations (by ``attester`` if given),
    newest first, and how many there are in all (anyone may attest: a run can
    gather many)."""
    where = [ReplayAttestation.run_id == run_id]
    if attester is not None:
        where.append(ReplayAttestation.attester == attester)  # checksummed, as stored
    rows = session.scalars(
        select(ReplayAttestation)
        .where(*where)
        .order_by(ReplayAttestation.block_number.desc(), ReplayAttestation.log_index.desc())
        .limit(limit)
    )
    total = session.scalar(select(func.count()).select_from(ReplayAttestation).where(*where))
    return list(rows), int(total or 0)


def metrics_of(session: Session, run_id: str) -> dict[str, float]:
    rows = session.execute(select(Metric.name, Metric.value).where(Metric.run_id == run_id))
    return {str(name): float(value) for name, value in rows}


@dataclass(frozen=True)
class Edge:
    child: str
    parent: str
    relation: str


@dataclass(frozen=True)
class Lineage:
    root: str
    ancestors: dict[str, int]  # run id -> generations up
    descendants: dict[str, int]  # run id -> generations down
    edges: list[Edge]
    truncated: bool


def lineage(session: Session, run_id: str, *, depth: int = 10) -> Lineage:
    """Ancestors and descendants of a run up to ``depth`` generations, with the edges."""
    root = get_run(session, run_id).run_id
    edges: dict[tuple[str, str], Edge] = {}
    ancestors = _walk(session, root, depth, up=True, edges=edges)
    descendants = _walk(session, root, depth, up=False, edges=edges)
    truncated = len(ancestors) + len(descendants) >= MAX_LINEAGE
    return Lineage(root, ancestors, descendants, list(edges.values()), truncated)


def _walk(
    session: Session, root: str, depth: int, *, up: bool, edges: dict[tuple[str, str], Edge]
) -> dict[str, int]:
    found: dict[str, int] = {}
    frontier = [root]
    for generation in range(1, depth + 1):
        if not frontier or len(found) >= MAX_LINEAGE:
            break
        links = parents_of(session, frontier) if up else children_of(session, frontier)
        frontier = []
        for link in links:
            edges[(link.child_id, link.parent_id)] = Edge(
                link.child_id, link.parent_id, link.relation
            )
            other = link.parent_id if up else link.child_id
            if other != root and other not in found:
                found[other] = generation
                frontier.append(other)
    return found


def revoked_ancestors(session: Session, run_id: str) -> list[str]:
    """The revoked runs among a run and all its ancestors (its taint), nearest first."""
    root = get_run(session, run_id)
    seen = {root.run_id}
    queue = deque([root.run_id])
    order = [root.run_id]
    while queue and len(seen) < MAX_LINEAGE:
        current = queue.popleft()
        for link in parents_of(session, [current]):
            if link.parent_id not in seen:
                seen.add(link.parent_id)
                queue.append(link.parent_id)
                order.append(link.parent_id)
    revoked = set(
        session.scalars(select(Run.run_id).where(Run.run_id.in_(order), Run.revoked.is_(True)))
    )
    return [r for r in order if r in revoked]


def tainted_runs(session: Session, *, limit: int = 1000) -> tuple[dict[str, set[str]], bool]:
    """Every run descending from a revoked run, with the revoked runs it descends from."""
    revoked = list(session.scalars(select(Run.run_id).where(Run.revoked.is_(True))))
    tainted: dict[str, set[str]] = {}
    for source in revoked:
        frontier = [source]
        seen = {source}
        while frontier:
            links = children_of(session, frontier)
            frontier = []
            for link in links:
                if link.child_id in seen:
                    continue
                seen.add(link.child_id)
                frontier.append(link.child_id)
                tainted.setdefault(link.child_id, set()).add(source)
                if len(tainted) > limit:
                    return tainted, True
    return tainted, False


def runs_by_id(session: Session, run_ids: Iterable[str]) -> dict[str, Run]:
    ids = list(set(run_ids))
    found: dict[str, Run] = {}
    for i in range(0, len(ids), 500):
        for run in session.scalars(select(Run).where(Run.run_id.in_(ids[i : i + 500]))):
            found[run.run_id] = run
    return found


def find_weights(session: Session, *, digest: str | None, tensor_root: str | None) -> list[Weights]:
    """Weights records of a file CID digest or of a tensor root, oldest first."""
    query = select(Weights)
    if digest is not None:
        query = query.where(Weights.weights_digest == digest)
    if tensor_root is not None:
        query = query.where(Weights.tensor_root == tensor_root)
    return list(session.scalars(query.order_by(Weights.block_number, Weights.log_index).limit(500)))


# -- datasets -----------------------------------------------------------------------

MAX_DATASETS = 500


@dataclass(frozen=True)
class DatasetRow:
    """A dataset as the index knows it: from the manifests that name it."""

    digest: str
    cid: str
    kind: str
    name: str | None
    bytes: int | None
    runs: int
    revocation: ArtifactRevocation | None


def list_datasets(
    session: Session, *, cursor: str | None = None, limit: int = 100
) -> tuple[list[DatasetRow], str | None]:
    """Datasets named by indexed manifests (not their parts), by digest; keyset pages
    (``cursor`` is the last digest served)."""
    query = (
        select(
            RunData.digest,
            func.min(RunData.cid),
            func.min(RunData.kind),
            func.min(RunData.name),
            func.max(RunData.bytes),
            func.count(func.distinct(RunData.run_id)),
        )
        .where(RunData.part_of.is_(None))
        .group_by(RunData.digest)
        .order_by(RunData.digest)
    )
    if cursor is not None:
        query = query.where(RunData.digest > dataset_digest(cursor, field="cursor"))
    rows = session.execute(query.limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    revoked = revocations_of(session, [r[0] for r in rows])
    found = [
        DatasetRow(str(d), str(c), str(k), n, b, int(count), revoked.get(str(d)))
        for d, c, k, n, b, count in rows
    ]
    return found, (found[-1].digest if more else None)


def dataset_digest(text: str, *, field: str = "cid") -> str:
    """The ``0x`` digest a dataset CID or digest names (an InputError otherwise)."""
    from ledger.datasets import parse_dataset

    return "0x" + parse_dataset(text, field=field).digest.hex()


def revocations_of(session: Session, digests: Sequence[str]) -> dict[str, ArtifactRevocation]:
    found: dict[str, ArtifactRevocation] = {}
    for i in range(0, len(digests), 500):
        query = select(ArtifactRevocation).where(
            ArtifactRevocation.digest.in_(digests[i : i + 500])
        )
        for row in session.scalars(query):
            found[row.digest] = row
    return found


@dataclass(frozen=True)
class DatasetDetail:
    digest: str
    refs: list[RunData]  # every manifest entry naming it (as a dataset or as a part)
    revocation: ArtifactRevocation | None
    direct: list[str]  # runs whose manifest names it
    descendants: dict[str, tuple[str, int]]  # run -> (the direct run it descends from, depth)
    parts: list[RunData]  # parts of it (distinct digests)
    truncated: bool


def dataset(session: Session, text: str, *, depth: int = 50) -> DatasetDetail:
    """A dataset: the runs that trained on it, their descendants, its revocation."""
    digest = dataset_digest(text)
    refs = list(
        session.scalars(
            select(RunData).where(RunData.digest == digest).order_by(RunData.run_id).limit(5000)
        )
    )
    revocation = session.get(ArtifactRevocation, digest)
    if not refs and revocation is None:
        raise NotFoundError(
            f"dataset {text.strip()} is not named by any indexed run",
            hint="list known datasets with GET /api/v1/datasets (or `ledger data ls`)",
        )
    direct = sorted({r.run_id for r in refs})
    descendants: dict[str, tuple[str, int]] = {}
    truncated = len(refs) >= 5000
    for source in direct:
        for child, generation in _walk(session, source, depth, up=False, edges={}).items():
            if child not in direct and child not in descendants:
                descendants[child] = (source, generation)
        if len(descendants) >= MAX_LINEAGE:
            truncated = True
            break
    cids = {r.cid for r in refs}
    parts: dict[str, RunData] = {}
    if cids:
        query = select(RunData).where(RunData.part_of.in_(cids)).limit(MAX_DATASETS)
        for part in session.scalars(query):
            parts.setdefault(part.digest, part)
    return DatasetDetail(
        digest, refs, revocation, direct, descendants, list(parts.values()), truncated
    )


@dataclass(frozen=True)
class DataTaint:
    """A run trained, itself or through an ancestor, on a revoked dataset."""

    dataset: str  # the revoked dataset's (or part's) CID
    digest: str
    part_of: str | None  # the dataset holding it, when the revoked CID is a part
    run_id: str  # the run whose manifest names it (the run itself or an ancestor)
    key: str
    reason: str


def run_data(session: Session, run_id: str) -> list[RunData]:
    """The datasets (and parts) a run's manifest names, by key."""
    query = select(RunData).where(RunData.run_id == run_id).order_by(RunData.key, RunData.digest)
    return list(session.scalars(query.limit(MAX_DATASETS)))


def data_taint(session: Session, run_id: str) -> list[DataTaint]:
    """The revoked datasets a run or any of its ancestors trained on, nearest first."""
    if session.scalar(select(func.count()).select_from(ArtifactRevocation)) == 0:
        return []
    root = get_run(session, run_id).run_id
    seen = {root}
    queue = deque([root])
    order = [root]
    while queue and len(seen) < MAX_LINEAGE:
        current = queue.popleft()
        for link in parents_of(session, [current]):
            if link.parent_id not in seen:
                seen.add(link.parent_id)
                queue.append(link.parent_id)
                order.append(link.parent_id)
    rank = {rid: i for i, rid in enumerate(order)}
    found: list[DataTaint] = []
    for i in range(0, len(order), 500):
        rows = session.execute(
            select(RunData, ArtifactRevocation.reason)
            .join(ArtifactRevocation, ArtifactRevocation.digest == RunData.digest)
            .where(RunData.run_id.in_(order[i : i + 500]))
        ).all()
        found += [
            DataTaint(d.cid, d.digest, d.part_of, d.run_id, d.key, str(reason))
            for d, reason in rows
        ]
    return sorted(found, key=lambda t: (rank[t.run_id], t.key, t.digest))


def data_tainted_runs(session: Session, *, limit: int = 10000) -> dict[str, set[str]]:
    """Every run that trained on a revoked dataset or descends from one, with the
    revoked datasets' CIDs."""
    rows = session.execute(
        select(RunData.run_id, RunData.cid).join(
            ArtifactRevocation, ArtifactRevocation.digest == RunData.digest
        )
    ).all()
    tainted: dict[str, set[str]] = {}
    for run, cid in rows:
        tainted.setdefault(run, set()).add(cid)
    frontier = list(tainted)
    while frontier and len(tainted) < limit:
        links = children_of(session, frontier)
        frontier = []
        for link in links:
            sources = tainted.setdefault(link.child_id, set())
            before = len(sources)
            sources |= tainted[link.parent_id]
            if len(sources) != before:
                frontier.append(link.child_id)
    return tainted
