"""Every run on the registry, read from its events and the store: for ``ledger runs``
(sweeps, sorted by a metric) and ``ledger lineage`` (ancestors and descendants).

No index database: one ``eth_getLogs`` per event kind (``RunStarted``,
``CheckpointCommitted``, ``RunFinalized``, ``RunFailed``, ``RunRevoked``) gives
each run's status, parents, revocation and metrics digests; manifests and
metrics documents come from the store (re-hashed on read). A run whose
documents are missing from the store is still listed, with what the chain says.
This reads the whole registry, fine for a lab's chain; the audit indexer
answers the same questions from SQL for large ones. These lists describe; only
``ledger verify`` proves.

:func:`chain_lineage` answers ``ledger lineage`` without reading the whole
registry: from the run, its parents (named by its ``RunStarted`` event) and its
children (the registry's child lookup), each run's state from ``getRun``, so its
cost follows the size of the family, not of the chain.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ledger.chain.records import RunRecord, RunStatus, checksum_address
from ledger.documents import DocumentKind, read_document
from ledger.errors import InputError, StoreError
from ledger.ids import RunId, label, to_hex
from ledger.store import ArtifactStore


class LineageSource(Protocol):
    """What :func:`chain_lineage` reads (``RegistryReader`` on any registry version)."""

    def get_run(self, run_id: bytes) -> RunRecord:
        """The run's stored record."""
        ...

    def events(self, name: str, run_id: bytes) -> list[dict[str, Any]]:
        """Decoded events ``name`` of one run, oldest first."""
        ...

    def children(self, run_id: bytes) -> list[dict[str, Any]]:
        """``RunStarted`` events of the runs started with ``run_id`` as a parent."""
        ...


class EventSource(Protocol):
    """What the catalogue reads: every event of a kind (``RegistryReader.all_events``)."""

    def all_events(self, name: str) -> list[dict[str, Any]]:
        """Every event ``name`` of the registry, oldest first."""
        ...


@dataclass
class RunInfo:
    """What the chain and the store say about one run."""

    run_id: RunId
    committer: str
    block_number: int
    parents: list[tuple[RunId, str]]
    status: RunStatus = RunStatus.RUNNING
    revoked: bool = False
    revoke_reason: str | None = None
    fail_reason: str | None = None
    manifest: dict[str, Any] | None = None
    final_metrics: dict[str, Any] | None = None
    last_metrics: dict[str, Any] | None = None  # the latest checkpoint's
    checkpoints: int = 0
    children: list[tuple[RunId, str]] = field(default_factory=list)

    @property
    def hex(self) -> str:
        return to_hex(self.run_id)

    @property
    def name(self) -> str | None:
        return None if self.manifest is None else _str_or_none(self.manifest.get("name"))

    @property
    def sweep(self) -> dict[str, Any] | None:
        sweep = None if self.manifest is None else self.manifest.get("sweep")
        return sweep if isinstance(sweep, dict) else None

    @property
    def metrics(self) -> dict[str, Any]:
        """The final metrics, else the latest checkpoint's."""
        return dict(self.final_metrics or self.last_metrics or {})

    def metric(self, key: str) -> float | None:
        value = self.metrics.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.hex,
            "name": self.name,
            "committer": self.committer,
            "block": self.block_number,
            "status": self.status.name.lower(),
            "revoked": self.revoked,
            "revoke_reason": self.revoke_reason,
            "fail_reason": self.fail_reason,
            "manifest_in_store": self.manifest is not None,
            "parents": [{"run_id": to_hex(p), "relation": r} for p, r in self.parents],
            "sweep": self.sweep,
            "config": None if self.manifest is None else self.manifest.get("config"),
            "metrics": self.metrics,
            "checkpoints": self.checkpoints,
        }


class RunCatalog:
    """Every run of one registry, keyed by run id."""

    def __init__(self, runs: dict[bytes, RunInfo]) -> None:
        self.runs = runs

    @classmethod
    def load(cls, events: EventSource, store: ArtifactStore) -> RunCatalog:
        runs: dict[bytes, RunInfo] = {}
        for event in events.all_events("RunStarted"):
            run_id = RunId(event["runId"])
            parents = [(RunId(p["runId"]), label(int(p["relation"]))) for p in event["parents"]]
            started = RunInfo(
                run_id,
                checksum_address(str(event["committer"])),
                int(event["blockNumber"]),
                parents,
            )
            manifest_digest = bytes(event["manifestDigest"])
            started.manifest = _document(store, manifest_digest, DocumentKind.MANIFEST)
            runs[run_id] = started
        for child in runs.values():
            for parent, relation in child.parents:
                if parent in runs:
                    runs[parent].children.append((child.run_id, relation))
        info: RunInfo | None
        for event in events.all_events("CheckpointCommitted"):
            info = runs.get(bytes(event["runId"]))
            if info is not None:
                info.checkpoints += 1
                info.last_metrics = (
                    _metrics(store, bytes(event["metricsDigest"])) or info.last_metrics
                )
        for event in events.all_events("RunFinalized"):
            info = runs.get(bytes(event["runId"]))
            if info is not None:
                info.status = RunStatus.FINALIZED
                info.final_metrics = _metrics(store, bytes(event["metricsDigest"]))
        for event in events.all_events("RunFailed"):
            info = runs.get(bytes(event["runId"]))
            if info is not None:
                info.status, info.fail_reason = RunStatus.FAILED, str(event["reason"])
        for event in events.all_events("RunRevoked"):
            info = runs.get(bytes(event["runId"]))
            if info is not None:
                info.revoked, info.revoke_reason = True, str(event["reason"])
        return cls(runs)

    def get(self, run_id: bytes) -> RunInfo:
        info = self.runs.get(run_id)
        if info is None:
            raise InputError(
                f"no run {to_hex(run_id)} on this registry",
                hint="`ledger runs` lists the recorded runs",
            )
        return info

    # -- listing ------------------------------------------------------------------

    def select(
        self, *, sweep: str | None = None, sort: str | None = None, descending: bool = False
    ) -> list[RunInfo]:
        """Runs (of one sweep), oldest first, or by a metric; runs without it come last."""
        chosen = [
            r for r in self.runs.values() if sweep is None or (r.sweep or {}).get("id") == sweep
        ]
        chosen.sort(key=lambda r: r.block_number)
        if sort is not None:
            have = [r for r in chosen if r.metric(sort) is not None]
            lack = [r for r in chosen if r.metric(sort) is None]
            have.sort(key=lambda r: r.metric(sort) or 0.0, reverse=descending)
            chosen = have + lack
        return chosen

    # -- lineage ------------------------------------------------------------------

    def ancestors(self, run_id: bytes) -> list[dict[str, Any]]:
        """Parents, each with its own ancestors, as JSON-ready nodes."""
        return self._walk(run_id, "ancestors", set())

    def descendants(self, run_id: bytes) -> list[dict[str, Any]]:
        """Children, each with its own descendants, as JSON-ready nodes."""
        return self._walk(run_id, "descendants", set())

    def _walk(self, run_id: bytes, way: str, seen: set[bytes]) -> list[dict[str, Any]]:
        seen = seen | {run_id}
        info = self.runs.get(run_id)
        if info is None:
            return []
        links = info.parents if way == "ancestors" else info.children
        nodes = []
        for other, relation in links:
            node = _node(self.runs.get(other), other, relation)
            node[way] = [] if other in seen else self._walk(other, way, seen)
            nodes.append(node)
        return nodes

    def lineage(self, run_id: bytes) -> dict[str, Any]:
        run = self.get(run_id)
        return {
            "run": _node(run, run_id, None),
            "ancestors": self.ancestors(run_id),
            "descendants": self.descendants(run_id),
        }


MAX_LINEAGE_RUNS = 10_000
"""Runs one lineage may visit: memory stays bounded on a hostile registry."""


def chain_lineage(registry: LineageSource, store: ArtifactStore, run_id: bytes) -> dict[str, Any]:
    """The same tree as :meth:`RunCatalog.lineage`, read run by run from the registry."""
    infos: dict[bytes, RunInfo | None] = {}

    def info(of: bytes) -> RunInfo | None:
        if of not in infos:
            if len(infos) >= MAX_LINEAGE_RUNS:
                raise InputError(
                    f"the lineage of {to_hex(run_id)} has more than {MAX_LINEAGE_RUNS} runs",
                    hint="query the audit index (`ledger serve`) for families this large",
                )
            infos[of] = _chain_info(registry, store, of)
        return infos[of]

    def walk(of: bytes, way: str, seen: set[bytes]) -> list[dict[str, Any]]:
        seen = seen | {of}
        here = info(of)
        if here is None:
            return []
        if way == "ancestors":
            links = here.parents
        else:
            links = [
                (RunId(event["runId"]), label(int(p["relation"])))
                for event in registry.children(of)
                for p in event["parents"]
                if bytes(p["runId"]) == of
            ]
        nodes = []
        for other, relation in links:
            node = _node(info(other), other, relation)
            node[way] = [] if other in seen else walk(other, way, seen)
            nodes.append(node)
        return nodes

    run = info(run_id)
    if run is None:
        raise InputError(
            f"no run {to_hex(run_id)} on this registry",
            hint="`ledger runs` lists the recorded runs",
        )
    return {
        "run": _node(run, run_id, None),
        "ancestors": walk(run_id, "ancestors", set()),
        "descendants": walk(run_id, "descendants", set()),
    }


def _chain_info(registry: LineageSource, store: ArtifactStore, run_id: bytes) -> RunInfo | None:
    """A run's status, parents, name and revocation, or None if it does not exist."""
    record = registry.get_run(run_id)
    if not record.exists:
        return None
    started = registry.events("RunStarted", run_id)
    event = started[0] if started else None
    parents = (
        [(RunId(p["runId"]), label(int(p["relation"]))) for p in event["parents"]] if event else []
    )
    info = RunInfo(
        RunId(run_id),
        record.committer,
        int(event["blockNumber"]) if event else 0,
        parents,
        status=record.status,
        revoked=record.revoked,
    )
    if event is not None:
        info.manifest = _document(store, bytes(event["manifestDigest"]), DocumentKind.MANIFEST)
    if record.revoked:
        revoked = registry.events("RunRevoked", run_id)
        info.revoke_reason = str(revoked[-1]["reason"]) if revoked else None
    return info


def _node(info: RunInfo | None, run_id: bytes, relation: str | None) -> dict[str, Any]:
    if info is None:  # a parent named on chain that never started: say so
        return {
            "run_id": to_hex(run_id),
            "relation": relation,
            "name": None,
            "status": "missing",
            "revoked": False,
            "revoke_reason": None,
        }
    return {
        "run_id": info.hex,
        "relation": relation,
        "name": info.name,
        "status": info.status.name.lower(),
        "revoked": info.revoked,
        "revoke_reason": info.revoke_reason,
    }


def lineage_lines(tree: dict[str, Any]) -> list[str]:
    """The lineage as an indented text tree: ancestors above the run, descendants below."""
    lines: list[str] = []

    def describe(node: dict[str, Any]) -> str:
        text = f"{node['run_id']}  {node['name'] or '(no manifest in store)'}  {node['status']}"
        if node["revoked"]:
            text += f"  REVOKED: {node['revoke_reason']}"
        return text

    def walk(nodes: Iterable[dict[str, Any]], way: str, depth: int) -> None:
        arrow = "derived from" if way == "ancestors" else "derives"
        for node in nodes:
            lines.append(f"{'    ' * depth}└─ [{node['relation']}] {arrow}: {describe(node)}")
            walk(node[way], way, depth + 1)

    if tree["ancestors"]:
        lines.append("ancestors")
        walk(tree["ancestors"], "ancestors", 1)
    lines.append(f"run {describe(tree['run'])}")
    if tree["descendants"]:
        lines.append("descendants")
        walk(tree["descendants"], "descendants", 1)
    return lines


def _document(store: ArtifactStore, digest: bytes, kind: DocumentKind) -> dict[str, Any] | None:
    """The document, or None when it is missing, invalid or the store is away: the
    run is listed with what the chain says."""
    try:
        return read_document(store, digest, kind).body
    except StoreError:
        return None


def _metrics(store: ArtifactStore, digest: bytes) -> dict[str, Any] | None:
    document = _document(store, digest, DocumentKind.METRICS)
    metrics = None if document is None else document.get("metrics")
    return metrics if isinstance(metrics, dict) else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
