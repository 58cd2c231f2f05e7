"""A run as an in-toto Statement v1 with a SLSA provenance v1 predicate.

:func:`build_statement` maps what the chain and the run's documents say into
the Statement: the exporter writes it, and the verifier builds it again from the
bundle's proven logs and re-hashed documents and compares (only the subject's
name and ``sha256``, which no record holds, come from outside: the verifier
checks the ``sha256`` against the model file).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ledger.documents import MANIFEST_SCHEMA
from ledger.hashing.cid import Cid
from ledger.ids import label, to_hex

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = f"ledger:{MANIFEST_SCHEMA}"
"""The build type: a ledger URI naming the manifest schema the run was described in."""


@dataclass
class RunEvents:
    """One run's registry events, decoded from proven receipts (oldest first)."""

    run_id: bytes
    started: dict[str, Any] | None = None
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    finalized: dict[str, Any] | None = None
    revoked: list[dict[str, Any]] = field(default_factory=list)
    failed: dict[str, Any] | None = None


def dedupe_checkpoints(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Checkpoint events in order, re-sent duplicates (same step and digests) dropped."""
    seen: set[tuple[Any, ...]] = set()
    kept = []
    for event in events:
        key = tuple(
            bytes(event[k]) if k != "step" else int(event[k])
            for k in ("step", "weightsDigest", "tensorRoot", "metricsDigest")
        )
        if key not in seen:
            seen.add(key)
            kept.append(event)
    return kept


def builder_id(chain_id: int, registry: str) -> str:
    return f"eip155:{chain_id}:{registry}"


def rfc3339(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def weights_digest(weights_digest: bytes, tensor_root: bytes) -> dict[str, str]:
    """The ledger digests of weights: the CID's sha2-256 digest (as on chain), the tensor root."""
    return {"ledgerCid": weights_digest.hex(), "ledgerTensorRoot": tensor_root.hex()}


def build_statement(
    *,
    run: RunEvents,
    manifest: Mapping[str, Any],
    metrics: Mapping[str, Any],
    manifest_cid: str,
    metrics_cid: str,
    parents: Sequence[RunEvents],
    timestamps: Mapping[int, int],
    chain_id: int,
    registry: str,
    subject_name: str,
    subject_sha256: str | None,
) -> dict[str, Any]:
    """The Statement of ``run``'s final weights; ``timestamps`` maps block numbers to times."""
    started, final = run.started, run.finalized
    if started is None or final is None:
        raise ValueError("a Statement needs the run's RunStarted and RunFinalized events")
    weights = metrics.get("weights") or {}
    digest: dict[str, str] = {}
    if subject_sha256 is not None:
        digest["sha256"] = subject_sha256
    digest |= weights_digest(bytes(final["weightsDigest"]), bytes(final["tensorRoot"]))
    subject = {"name": subject_name, "digest": digest}
    if weights.get("cid"):
        subject["annotations"] = {"cid": str(weights["cid"])}
    external = {
        key: manifest[key] for key in ("name", "config", "seed", "sweep") if key in manifest
    }
    internal = {
        key: manifest[key] for key in ("environment", "distributed", "digests") if key in manifest
    }
    dependencies = _code(manifest.get("code")) + _data(manifest.get("data"))
    by_id = {p.run_id: p for p in parents}
    for parent in started["parents"]:
        pid = bytes(parent["runId"])
        entry: dict[str, Any] = {
            "name": f"parent:{to_hex(pid)}",
            "uri": f"ledger:{builder_id(chain_id, registry)}/runs/{to_hex(pid)}",
            "annotations": {"runId": to_hex(pid), "relation": label(int(parent["relation"]))},
        }
        known = by_id.get(pid)
        if known is not None and known.finalized is not None:
            f = known.finalized
            entry["digest"] = weights_digest(bytes(f["weightsDigest"]), bytes(f["tensorRoot"]))
        dependencies.append(entry)
    byproducts: list[dict[str, Any]] = [
        {"name": "manifest", "digest": _cid_digest(manifest_cid), "mediaType": "application/json"},
        {"name": "metrics", "digest": _cid_digest(metrics_cid), "mediaType": "application/json"},
    ]
    if weights.get("tensor_index"):
        byproducts.append(
            {
                "name": "tensor index",
                "digest": _cid_digest(str(weights["tensor_index"])),
                "mediaType": "application/json",
            }
        )
    for checkpoint in run.checkpoints:
        byproducts.append(
            {
                "name": f"checkpoint:{int(checkpoint['step'])}",
                "digest": weights_digest(
                    bytes(checkpoint["weightsDigest"]), bytes(checkpoint["tensorRoot"])
                ),
                "annotations": {
                    "step": int(checkpoint["step"]),
                    "metricsDigest": to_hex(bytes(checkpoint["metricsDigest"])),
                    "block": int(checkpoint["blockNumber"]),
                },
            }
        )
    byproducts.append(
        {
            "name": "checkpoint root",
            "digest": {"ledgerMerkleRoot": bytes(final["checkpointRoot"]).hex()},
            "annotations": {"count": int(final["checkpointCount"])},
        }
    )
    return {
        "_type": STATEMENT_TYPE,
        "subject": [subject],
        "predicateType": SLSA_PROVENANCE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
                "internalParameters": internal,
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {"id": builder_id(chain_id, registry)},
                "metadata": {
                    "invocationId": to_hex(run.run_id),
                    "startedOn": rfc3339(timestamps[int(started["blockNumber"])]),
                    "finishedOn": rfc3339(timestamps[int(final["blockNumber"])]),
                },
                "byproducts": byproducts,
            },
        },
    }


def _cid_digest(text: str) -> dict[str, str]:
    return {"ledgerCid": Cid.parse(text).digest.hex()}


def _code(code: object) -> list[dict[str, Any]]:
    if not isinstance(code, dict) or not code.get("commit"):
        return []
    entry: dict[str, Any] = {
        "name": "code",
        "digest": {"gitCommit": str(code["commit"])},
        "annotations": {"vcs": code.get("vcs"), "dirty": bool(code.get("dirty"))},
    }
    out = [entry]
    if code.get("uncommitted_sha256"):
        out.append(
            {"name": "code:uncommitted", "digest": {"sha256": str(code["uncommitted_sha256"])}}
        )
    return out


def _data(data: object) -> list[dict[str, Any]]:
    if not isinstance(data, dict):
        return []
    out = []
    for key, fingerprint in data.items():
        if not isinstance(fingerprint, dict):
            continue
        digest = {
            algorithm: str(fingerprint[name])
            for name, algorithm in (("sha256", "sha256"), ("cid", "cid"))
            if fingerprint.get(name)
        }
        entry: dict[str, Any] = {"name": f"data:{key}", "annotations": dict(fingerprint)}
        if digest:
            entry["digest"] = digest
        else:  # a resource descriptor needs a digest or a URI
            entry["uri"] = f"ledger:data/{key}"
        out.append(entry)
    return out
