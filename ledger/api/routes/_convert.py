"""Index rows and store documents to response documents."""

from __future__ import annotations

import json
from typing import Any

from ledger.api.schemas import ChainFacts, RunSummary, WeightsOut
from ledger.errors import StoreError
from ledger.index.models import Run, Weights
from ledger.store import ArtifactStore, find_by_digest


def summary(run: Run, metrics: dict[str, float] | None = None) -> RunSummary:
    return RunSummary(
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


def document(store: ArtifactStore, digest_hex: str | None) -> dict[str, Any] | None:
    """A JSON document from the store by its on-chain digest (None when absent or bad)."""
    if not digest_hex:
        return None
    cid = find_by_digest(store, bytes.fromhex(digest_hex[2:]))
    if cid is None:
        return None
    try:
        value = json.loads(store.get_bytes(cid))
    except (StoreError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def weights(store: ArtifactStore, record: Weights) -> WeightsOut:
    doc = document(store, record.metrics_digest)
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
