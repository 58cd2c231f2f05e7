"""The API's response documents (pydantic), with the examples OpenAPI shows."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RUN_ID = "0x5f1c0b7bd4a1c5cf5e4a4d6f0e3a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a"
ADDRESS = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
DIGEST = "0x9c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d"


class DataSourceRef(BaseModel):
    """One data source a run's manifest names, as the manifest says (bounded texts)."""

    key: str = Field(description="the manifest's data key (cut at 200 characters)")
    kind: str | None = Field(description="file | folder | files | hf-dataset | array | ...")
    name: str | None = Field(description="the file or folder name, when the fingerprint has one")
    id: str | None = Field(description="its CID, fingerprint or sha256, when it has one")


class RunSummary(BaseModel):
    """A run as the index knows it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "run_id": RUN_ID,
                    "name": "price-forecast",
                    "committer": ADDRESS,
                    "status": "finalized",
                    "revoked": False,
                    "started_at": 1763900000,
                    "started_block": 12,
                    "sweep_id": "lr-sweep",
                    "sweep_trial": 3,
                    "world_size": 1,
                    "checkpoint_count": 4,
                    "metrics": {"val_loss": 0.08},
                    "ended_at": 1763900600,
                    "params": {"lr": 0.01, "model.layers": 4},
                    "data_sources": [
                        {"key": "train", "kind": "file", "name": "train.csv", "id": "bafkrei..."}
                    ],
                }
            ]
        }
    )

    run_id: str = Field(description="0x-prefixed 32-byte run id")
    name: str | None = Field(description="name from the manifest (null until it is read)")
    committer: str
    status: str = Field(description="running | finalized | failed")
    revoked: bool
    started_at: int = Field(description="block time of RunStarted, Unix seconds")
    started_block: int
    sweep_id: str | None = None
    sweep_trial: int | None = None
    world_size: int | None = None
    checkpoint_count: int
    metrics: dict[str, float] | None = Field(
        default=None, description="final numeric metrics, when asked for with metrics=true"
    )
    ended_at: int | None = Field(
        default=None, description="block time of the run's end (finalized or failed)"
    )
    params: dict[str, str | float | bool | None] | None = Field(
        default=None,
        description="the manifest's config flattened to dotted keys (at most "
        "64 keys, texts cut at 200 characters), when asked for with params=true",
    )
    data_sources: list[DataSourceRef] | None = Field(
        default=None,
        description="the manifest's data sources (at most 32), when asked for with data=true",
    )
    revoked_data: list[str] = Field(
        default_factory=list,
        description="CIDs of revoked datasets the run or one of its ancestors trained on "
        "(the run is tainted by them)",
    )


class RunPage(BaseModel):
    runs: list[RunSummary]
    next_cursor: str | None = Field(
        description="pass as cursor= for the next page; null at the end"
    )


class ParentLink(BaseModel):
    run_id: str
    relation: str = Field(examples=["fine-tune"])


class ChainFacts(BaseModel):
    committer: str
    manifest_digest: str
    started_block: int
    started_tx: str
    ended_block: int | None
    ended_tx: str | None
    failed_reason: str | None
    revoked_block: int | None
    revoked_tx: str | None
    revoked_by: str | None
    revoked_reason: str | None
    checkpoint_root: str | None


class WeightsOut(BaseModel):
    step: int | None = Field(description="checkpoint step; null for the final weights")
    is_final: bool
    weights_digest: str
    weights_cid: str | None = Field(description="the file CID, when its metrics document says")
    tensor_root: str
    metrics_digest: str
    metrics: dict[str, Any] | None = Field(description="metrics from the store's document")
    block: int
    tx: str


class DataTaintOut(BaseModel):
    dataset: str = Field(description="CID of the revoked dataset (or revoked part)")
    digest: str = Field(description="its digest, as revoked on chain")
    part_of: str | None = Field(description="the dataset holding it, when it is a part")
    run_id: str = Field(description="the run whose manifest names it: this run or an ancestor")
    key: str = Field(description="the manifest's data key")
    reason: str = Field(description="the revocation's reason, as on chain")


class RunDataOut(BaseModel):
    key: str = Field(description="the manifest's data key", examples=["train"])
    cid: str
    digest: str
    kind: str = Field(examples=["folder"])
    name: str | None
    bytes: int | None
    part_of: str | None = Field(description="the dataset holding it, when it is a part")
    revoked: bool


class ReplayAttestationOut(BaseModel):
    """One ``ReplayAttested`` event: an account replayed checkpoints ``from_step`` ->
    ``to_step`` of the run (``ledger replay --record``). Anyone may attest: trust is
    the reader's choice of attesters."""

    attester: str = Field(description="the account that replayed and signed")
    from_step: int
    to_step: int
    reproduced: bool = Field(description="identical or within tolerance; false: diverged")
    report_digest: str = Field(description="sha2-256 digest of the replay report's CID")
    report_cid: str | None = Field(
        description="the replay report's CID (GET /api/v1/documents/{cid}); null when the "
        "store does not hold it"
    )
    block: int
    tx: str


class ReplayList(BaseModel):
    run_id: str
    total: int = Field(description="attestations of the run (by the attester, if filtered)")
    reproduced: int = Field(description="of those listed, how many say reproduced")
    replays: list[ReplayAttestationOut] = Field(description="newest first")


class RunDetail(RunSummary):
    datasets: list[RunDataOut] = Field(
        default_factory=list, description="datasets the manifest names (and their parts)"
    )
    data_taint: list[DataTaintOut] = Field(
        default_factory=list,
        description="revoked datasets this run or an ancestor trained on, nearest run first",
    )
    manifest_cid: str | None
    manifest: dict[str, Any] | None = Field(description="the manifest from the store")
    document_state: str = Field(description="loaded | pending | missing | invalid (manifest)")
    parents: list[ParentLink]
    chain: ChainFacts
    checkpoints: list[WeightsOut]
    final: WeightsOut | None
    replays: list[ReplayAttestationOut] = Field(
        description="the latest 100 replay attestations, newest first (all: /replays)"
    )


class CheckpointProof(BaseModel):
    step: int
    weights_digest: str
    tensor_root: str
    metrics_digest: str
    leaf: str = Field(description="the Merkle leaf hash of the checkpoint record")
    proof: list[str] = Field(description="sibling hashes from the leaf up to the root")
    verified_by_registry: bool = Field(
        description="the registry's verifyCheckpoint accepts it under the run's final record"
    )


class CheckpointProofOut(BaseModel):
    """Read from the chain for this request, never from the index."""

    run_id: str
    checkpoint_root: str = Field(description="the root the run's final record commits to")
    root_matches: bool = Field(description="the root rebuilt from the run's records matches")
    checkpoints: list[CheckpointProof] = Field(description="every record at that step")


class LineageNode(BaseModel):
    run_id: str
    name: str | None
    status: str | None = Field(description="null when the run is not in the index")
    revoked: bool | None
    generation: int = Field(description="negative: ancestors, positive: descendants, 0: the run")


class LineageEdge(BaseModel):
    child: str
    parent: str
    relation: str


class LineageOut(BaseModel):
    run_id: str
    nodes: list[LineageNode]
    edges: list[LineageEdge]
    truncated: bool


class TaintOut(BaseModel):
    run_id: str
    tainted: bool = Field(
        description="the run or one of its ancestors is revoked, or trained on a revoked dataset"
    )
    revoked_sources: list[str] = Field(description="revoked runs among itself and its ancestors")
    revoked_data: list[DataTaintOut] = Field(
        default_factory=list,
        description="revoked datasets the run or one of its ancestors trained on",
    )


class TaintedRun(BaseModel):
    run_id: str
    name: str | None
    revoked_ancestors: list[str]


class TaintList(BaseModel):
    runs: list[TaintedRun]
    truncated: bool


class LookupRecord(BaseModel):
    run_id: str
    name: str | None
    status: str | None
    revoked: bool | None
    is_final: bool
    step: int | None
    weights_digest: str
    tensor_root: str
    block: int
    tx: str


class LookupOut(BaseModel):
    query: str
    records: list[LookupRecord]


class CheckOut(BaseModel):
    name: str
    ok: bool
    unchecked: bool = Field(
        default=False,
        description="true when the check could not be done (a document could not be fetched); "
        "ok is then false but nothing was found wrong",
    )
    detail: str


class ClaimOut(BaseModel):
    """One run's record of the verified weights (by file CID or by tensor root)."""

    run_id: str
    committer: str = Field(description="the account that started the run")
    block: int
    log_index: int
    tx: str
    matched_by: Literal["file", "tensors"] = Field(
        description="the record names this file's CID, or only its tensor root"
    )
    is_final: bool
    step: int | None
    tensor_root_ok: bool | None = Field(
        description="whether the record's tensor root is the file's (null when the file's "
        "tensors were not read)"
    )


# "proven" is `ledger verify --bundle` offline (exit 7); this API checks the chain
# itself, so it never answers it, but the verifier's outcome type includes it
Outcome = Literal["verified", "mismatch", "unknown", "revoked", "unchecked", "proven"]


class VerifyOut(BaseModel):
    """The verifier's report, re-checked against the chain for this request."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "outcome": "verified",
                    "run_id": RUN_ID,
                    "file_cid": "bafkreia...",
                    "matched_by": "file",
                    "checks": [{"name": "record", "ok": True, "detail": "..."}],
                }
            ]
        }
    )

    outcome: Outcome = Field(
        description="verified (exit 0): recorded and every check passed; mismatch (3): a "
        "check failed, the file or its documents are not what was recorded; unknown (4): "
        "no record of these weights; revoked (5): recorded, but the run, an ancestor or "
        "another record of the same weights is revoked; unchecked (6): the weights are "
        "recorded on chain but the run's documents could not be fetched to check them "
        "(proven, exit 7, is `ledger verify --bundle` offline and never answered here)"
    )
    file_cid: str | None
    run_id: str | None
    matched_by: str | None
    step: int | None
    is_final: bool | None
    tensor_root: str | None
    checks: list[CheckOut]
    origin: ClaimOut | None = Field(
        default=None, description="the earliest record of these weights (block, then log index)"
    )
    claimants: list[ClaimOut] = Field(
        default_factory=list, description="the other runs that recorded the same weights"
    )
    source: str = Field(default="chain", description="always 'chain': never the index alone")


class VerifyDigest(BaseModel):
    """Exactly one of cid, digest, tensor_root."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"cid": "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"}]
        },
    )

    cid: str | None = Field(default=None, max_length=200, description="a file CID (v0 or v1)")
    digest: str | None = Field(
        default=None, max_length=66, description="0x sha2-256 digest of a file CID, as on chain"
    )
    tensor_root: str | None = Field(default=None, max_length=66)
    run: str | None = Field(
        default=None, max_length=66, description="run the file should belong to"
    )


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    ready: bool
    database: str
    schema_revision: str | None
    chain: str
    chain_head: int | None
    indexed_block: int | None
    lag_blocks: int | None
    indexer_error: str | None


# -- datasets -----------------------------------------------------------------------

DATASET_CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"


class RevocationOut(BaseModel):
    block: int
    tx: str
    revoker: str
    reason: str


class DatasetSummary(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "cid": DATASET_CID,
                    "digest": DIGEST,
                    "kind": "folder",
                    "name": "train",
                    "bytes": 2147483648,
                    "runs": 3,
                    "revoked": False,
                    "revocation": None,
                }
            ]
        }
    )

    cid: str = Field(description="the dataset's CIDv1")
    digest: str = Field(description="the CID's sha2-256 digest: what a revocation names")
    kind: str = Field(description="folder | file | files | hf-dataset | ... (the fingerprint)")
    name: str | None
    bytes: int | None
    runs: int = Field(description="runs whose manifest names it")
    revoked: bool
    revocation: RevocationOut | None


class DatasetPage(BaseModel):
    datasets: list[DatasetSummary]
    next_cursor: str | None = Field(
        description="pass as cursor= for the next page; null at the end"
    )


class DatasetRun(BaseModel):
    run_id: str
    name: str | None
    status: str | None = Field(description="null when the run is not in the index")
    revoked: bool | None
    keys: list[str] = Field(description="the manifest's data keys naming the dataset")
    final_weights_digest: str | None = Field(description="the model it produced, if finalized")


class DescendantRun(BaseModel):
    run_id: str
    name: str | None
    status: str | None
    revoked: bool | None
    via: str = Field(description="the run trained on the dataset that it descends from")
    generation: int = Field(description="generations below that run")
    final_weights_digest: str | None


class DatasetDetailOut(DatasetSummary):
    part_of: list[str] = Field(description="CIDs of datasets holding this one as a part")
    parts: list[RunDataOut] = Field(description="files or folders inside it that runs name")
    used_by: list[DatasetRun] = Field(description="runs trained on it directly")
    descendants: list[DescendantRun] = Field(
        description="runs derived (fine-tuned, distilled...) from those, transitively"
    )
    truncated: bool
