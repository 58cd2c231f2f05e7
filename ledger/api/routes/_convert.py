"""Index rows and store documents to response documents."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.api.schemas import (
    ChainFacts,
    DataSourceRef,
    ReplayAttestationOut,
    RunSummary,
    WeightsOut,
)
from ledger.documents import DocumentKind, read_document
from ledger.errors import StoreError, StoreUnavailableError
from ledger.ids import from_hex
from ledger.index.models import Block, ReplayAttestation, Run, Weights
from ledger.store import ArtifactStore, find_by_digest

# Characters that change how text around them displays without showing themselves:
# bidirectional controls, zero-width characters, the soft hyphen, BOM, and the line
# separators JavaScript strings once refused.
INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f"
    "\u202a-\u202e\u2028\u2029\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0]"
)


def escape_invisible(text: str) -> str:
    """JSON ``text`` with every :data:`INVISIBLE` character written as a ``\\uXXXX``
    escape: the same JSON value, but a raw view, a log or a terminal shows it."""
    return INVISIBLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def answer(model: BaseModel, headers: dict[str, str] | None = None) -> Response:
    """``model`` as JSON. Routes return this rather than the model: FastAPI would
    validate the model a second time, on another worker thread, to serialise it."""
    body = escape_invisible(model.model_dump_json())
    return Response(body, media_type="application/json", headers=headers)


MAX_PARAMS = 64
MAX_TEXT = 200
MAX_DATASETS = 32
_DEPTH = 8


def flat_params(config: object) -> dict[str, str | float | bool | None]:
    """A manifest's ``config`` as dotted keys to scalars, bounded for a table's columns:
    at most :data:`MAX_PARAMS` keys, 8 levels, texts (and lists, as JSON) cut at
    :data:`MAX_TEXT` characters. Anything else than a mapping flattens to nothing."""
    out: dict[str, str | float | bool | None] = {}

    def walk(prefix: str, value: object, depth: int) -> None:
        if len(out) >= MAX_PARAMS:
            return
        if isinstance(value, dict) and depth < _DEPTH:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner, depth + 1)
                if len(out) >= MAX_PARAMS:
                    return
            return
        key = prefix[:MAX_TEXT]
        if value is None or isinstance(value, bool):
            out[key] = value
        elif isinstance(value, (int, float)):
            out[key] = float(value) if abs(value) < 2**53 else str(value)
        elif isinstance(value, str):
            out[key] = value[:MAX_TEXT]
        else:
            out[key] = json.dumps(value, default=str)[:MAX_TEXT]

    if isinstance(config, dict):
        walk("", config, 0)
    return out


def data_sources(data: object) -> list[DataSourceRef]:
    """The data sources a manifest's ``data`` names: key, kind, name and identity, bounded."""
    refs: list[DataSourceRef] = []
    if not isinstance(data, dict):
        return refs

    def text(value: object) -> str | None:
        return value[:MAX_TEXT] if isinstance(value, str) else None

    for key, fingerprint in list(data.items())[:MAX_DATASETS]:
        found = fingerprint if isinstance(fingerprint, dict) else {}
        ident = next(
            (
                text(found[f])
                for f in ("cid", "fingerprint", "sha256", "digest")
                if text(found.get(f))
            ),
            None,
        )
        refs.append(
            DataSourceRef(
                key=str(key)[:MAX_TEXT],
                kind=text(found.get("kind")),
                name=text(found.get("name")),
                id=ident,
            )
        )
    return refs


def end_times(session: Session, runs: Iterable[Run]) -> dict[int, int]:
    """Block times of the runs' end blocks, as far as the index keeps them."""
    blocks = {r.ended_block for r in runs if r.ended_block is not None}
    if not blocks:
        return {}
    rows = session.execute(select(Block.number, Block.timestamp).where(Block.number.in_(blocks)))
    return {int(n): int(t) for n, t in rows if t is not None}


def summary(
    run: Run,
    metrics: dict[str, float] | None = None,
    *,
    ended: dict[int, int] | None = None,
    manifest: dict[str, Any] | None = None,
    params: bool = False,
    sources: bool = False,
    revoked_data: list[str] | None = None,
) -> RunSummary:
    body = manifest or {}
    return RunSummary(
        ended_at=(ended or {}).get(run.ended_block) if run.ended_block is not None else None,
        params=flat_params(body.get("config")) if params else None,
        data_sources=data_sources(body.get("data")) if sources else None,
        run_id=run.run_id,
        name=run.name,
        committer=run.committer,
        status=run.status,
        revoked=run.revoked,
        started_at=run.started_at,
        started_block=run.started_block,
        sweep_id=run.sweep_id,
        sweep_trial=run.sweep_trial,
        world_size=run.world_size,
        checkpoint_count=run.checkpoint_count,
        metrics=metrics,
        revoked_data=revoked_data or [],
    )


def chain_facts(run: Run) -> ChainFacts:
    return ChainFacts(
        committer=run.committer,
        manifest_digest=run.manifest_digest,
        started_block=run.started_block,
        started_tx=run.started_tx,
        ended_block=run.ended_block,
        ended_tx=run.ended_tx,
        failed_reason=run.failed_reason,
        revoked_block=run.revoked_block,
        revoked_tx=run.revoked_tx,
        revoked_by=run.revoked_by,
        revoked_reason=run.revoked_reason,
        checkpoint_root=run.checkpoint_root,
    )


class Documents:
    """Reads a route's JSON documents from the store by their on-chain digests, and
    notes when the store was away (that answer is then not cached: ``no-store``)."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self.store_away = False
        self._cids: dict[str, str | None] = {}

    def get(self, digest_hex: str | None, kind: DocumentKind) -> dict[str, Any] | None:
        """The ``kind`` document (None when missing, invalid or the store is away)."""
        if not digest_hex:
            return None
        try:
            return read_document(self.store, from_hex(digest_hex, field="digest"), kind).body
        except StoreUnavailableError:
            self.store_away = True
            return None
        except StoreError:  # missing or invalid: the answer says what the index says
            return None

    def cid_of(self, digest_hex: str) -> str | None:
        """The CID of what the store holds under ``digest_hex`` (None when it holds
        nothing so named, or is away)."""
        if digest_hex not in self._cids:
            try:
                cid = find_by_digest(self.store, from_hex(digest_hex, field="digest"))
            except StoreUnavailableError:
                self.store_away = True
                cid = None
            except StoreError:
                cid = None
            self._cids[digest_hex] = None if cid is None else str(cid)
        return self._cids[digest_hex]

    def headers(self) -> dict[str, str] | None:
        return {"cache-control": "no-store"} if self.store_away else None


def replay(documents: Documents, row: ReplayAttestation) -> ReplayAttestationOut:
    return ReplayAttestationOut(
        attester=row.attester,
        from_step=row.from_step,
        to_step=row.to_step,
        reproduced=row.reproduced,
        report_digest=row.report_digest,
        report_cid=documents.cid_of(row.report_digest),
        block=row.block_number,
        tx=row.tx_hash,
    )


def weights(documents: Documents, record: Weights) -> WeightsOut:
    doc = documents.get(record.metrics_digest, DocumentKind.METRICS)
    metrics = doc.get("metrics") if doc else None
    named = (doc or {}).get("weights") or {}
    cid = named.get("cid") if isinstance(named, dict) else None
    return WeightsOut(
        step=record.step,
        is_final=record.is_final,
        weights_digest=record.weights_digest,
        weights_cid=cid if isinstance(cid, str) else None,
        tensor_root=record.tensor_root,
        metrics_digest=record.metrics_digest,
        metrics=metrics if isinstance(metrics, dict) else None,
        block=record.block_number,
        tx=record.tx_hash,
    )
