"""``ledger export``: a run's bundle, gathered from the chain and the store.

The exporter reads the run's events and those of every ancestor, fetches the
receipts of their transactions, rebuilds each block's receipts trie from all of
the block's receipts (and refuses a node whose receipts do not rebuild the
block's ``receiptsRoot``), keeps one proof per transaction, and asks for an
EIP-1186 proof of every run's storage slots at the latest block: the block the
bundle is proven *as of*.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger.bundle.evidence import receipt_proof, receipts_root, trim_header
from ledger.bundle.statement import RunEvents, build_statement, dedupe_checkpoints
from ledger.chain.reader import RegistryReader
from ledger.chain.rpc import as_bytes, as_int
from ledger.documents import DocumentKind, read_document
from ledger.errors import ChainError, InputError, StoreError
from ledger.hashing.cid import Cid, bytes_cid
from ledger.hashing.keccak import keccak256
from ledger.ids import to_hex
from ledger.store import ArtifactStore

if TYPE_CHECKING:
    from ledger.chain.sender import Signer

BUNDLE_TYPE = "ledger.bundle/v1"
RUNS_SLOT = 4
"""The storage slot of ``_runs``: AccessControl's ``_roles`` is 0, EIP712's two
fallback strings 1 and 2, Nonces' ``_nonces`` 3 (transient storage takes none)."""
FINALS_SLOT = 5
"""The storage slot of ``_finalCommitments``."""


ARTIFACT_REVOCATIONS_SLOT = 11
"""The storage slot of ``_artifactRevocationBlocks`` (a revoked artifact's block, 0 if
not revoked): after ``_runs`` 4, ``_finalCommitments`` 5, ``_weightsBlocks`` 6,
``_tensorBlocks`` 7, ``_childBlocks`` 8, ``_runRevocationBlocks`` 9 and
``_revokedRuns`` 10 (a test reads it back from a real revocation)."""


def artifact_slot(digest: bytes) -> bytes:
    """The storage slot holding the block an artifact (a dataset) was revoked in."""
    return keccak256(digest + ARTIFACT_REVOCATIONS_SLOT.to_bytes(32, "big"))


def run_slots(run_id: bytes) -> tuple[bytes, bytes]:
    """The storage slots of a run: its packed record and its final commitment."""
    return (
        keccak256(run_id + RUNS_SLOT.to_bytes(32, "big")),
        keccak256(run_id + FINALS_SLOT.to_bytes(32, "big")),
    )


_RECEIPT_FIELDS = ("type", "status", "cumulativeGasUsed", "logsBloom", "transactionIndex")


def _trim_receipt(receipt: dict[str, Any]) -> dict[str, Any]:
    out = {k: receipt[k] for k in _RECEIPT_FIELDS if k in receipt}
    out["blockNumber"] = receipt["blockNumber"]
    out["logs"] = [
        {"address": log["address"], "topics": log["topics"], "data": log["data"]}
        for log in receipt["logs"]
    ]
    return out


class Exporter:
    """Builds bundles from one registry (its reader) and one document store."""

    def __init__(self, reader: RegistryReader, store: ArtifactStore) -> None:
        self.reader = reader
        self.rpc = reader.rpc
        self.store = store

    def run_of_weights(self, path: Path) -> bytes:
        """The run whose final weights ``path`` is (by file CID)."""
        from ledger.hashing.cid import file_cid

        return self.run_of_cid(path, file_cid(path))

    def run_of_weights_hashed(self, path: Path) -> tuple[bytes, str]:
        """:meth:`run_of_weights` and the file's sha256, from one read of the file."""
        from ledger.hashing.cid import file_cid_and_sha256

        cid, sha256 = file_cid_and_sha256(path)
        return self.run_of_cid(path, cid), sha256

    def run_of_cid(self, path: Path, cid: Cid) -> bytes:
        """The run whose final weights are the file ``path`` of CID ``cid``."""
        records = self.reader.find_by_weights(cid.digest)
        finals = [r for r in records if r.is_final]
        if not finals:
            what = "a checkpoint, not final weights" if records else "not recorded"
            raise InputError(
                f"{path}: file CID {cid} is {what}",
                hint="`ledger export` exports a finalized run's final weights",
            )
        return finals[0].run_id

    def export(
        self,
        run_id: bytes,
        *,
        weights: Path | None = None,
        sha256: str | None = None,
        signer: Signer | None = None,
    ) -> dict[str, Any]:
        """The bundle of ``run_id``'s final weights.

        ``weights``: the file (its name, and its sha256 unless ``sha256`` gives it);
        ``signer``: the committer's key, to sign the Statement as a DSSE envelope
        (an :class:`InputError` if it is not the run's committer's).
        """
        runs = self._lineage(run_id)
        subject = runs[0]
        if subject.finalized is None:
            raise InputError(
                f"run {to_hex(run_id)} is not finalized: it has no final weights to export"
            )
        assert subject.started is not None
        committer = str(subject.started["committer"])
        if signer is not None and signer.address.lower() != committer.lower():
            raise InputError(
                f"the configured key ({signer.address}) is not run {to_hex(run_id)}'s "
                f"committer ({committer}): its signature would not verify",
                hint="export with the committer's key, or with --no-sign",
            )
        chain_id = self.rpc.chain_id()
        tx_hashes = {
            str(e["transactionHash"])
            for r in runs
            for e in (r.started, r.finalized, r.failed, *r.checkpoints, *r.revoked)
            if e is not None
        }
        headers, receipts = self._receipts(sorted(tx_hashes))
        as_of = as_int(self.rpc("eth_blockNumber"))
        latest = self.rpc("eth_getBlockByNumber", hex(as_of), False)
        headers[as_of] = trim_header(latest)
        slots = [to_hex(s) for r in runs for s in run_slots(r.run_id)]
        state = self.rpc("eth_getProof", self.reader.address, slots, hex(as_of))
        documents: dict[str, str] = {}
        manifests: dict[bytes, dict[str, Any]] = {}
        for run in runs:
            assert run.started is not None  # _lineage keeps only started runs
            _cid, body = self._document(
                bytes(run.started["manifestDigest"]), DocumentKind.MANIFEST, documents
            )
            manifests[run.run_id] = body
            if run.finalized is not None:
                metrics_cid, metrics = self._document(
                    bytes(run.finalized["metricsDigest"]), DocumentKind.METRICS, documents
                )
                if run is subject:
                    subject_metrics, subject_metrics_cid = metrics, metrics_cid
                    index = (metrics.get("weights") or {}).get("tensor_index")
                    if index:
                        self._document(
                            Cid.parse(str(index)).digest, DocumentKind.TENSOR_INDEX, documents
                        )
        manifest_cid = str(bytes_cid(documents_bytes(documents, subject.started)))
        name, sha256 = self._subject(subject_metrics, weights, sha256)
        statement = build_statement(
            run=subject,
            manifest=manifests[subject.run_id],
            metrics=subject_metrics,
            manifest_cid=manifest_cid,
            metrics_cid=subject_metrics_cid,
            parents=runs[1:],
            timestamps={n: as_int(h["timestamp"]) for n, h in headers.items()},
            chain_id=chain_id,
            registry=self.reader.address,
            subject_name=name,
            subject_sha256=sha256,
        )
        bundle: dict[str, Any] = {
            "bundleType": BUNDLE_TYPE,
            "statement": statement,
            "chain": {
                "chainId": chain_id,
                "registry": self.reader.address,
                "asOfBlock": as_of,
                "headers": [headers[n] for n in sorted(headers)],
                "receipts": receipts,
                "state": state,
            },
            "documents": documents,
        }
        if signer is not None:
            from ledger.bundle.dsse import sign_statement

            bundle["envelope"] = sign_statement(statement, signer)
        return bundle

    # -- the runs -----------------------------------------------------------------

    def _lineage(self, run_id: bytes) -> list[RunEvents]:
        """The run and every ancestor (each once), the run first."""
        out: list[RunEvents] = []
        todo, seen = [run_id], {run_id}
        while todo:
            rid = todo.pop(0)
            run = RunEvents(rid)
            started = self.reader.events("RunStarted", rid)
            if not started:
                raise InputError(
                    f"run {to_hex(rid)} is not on the registry at {self.reader.address}"
                )
            run.started = started[0]
            run.checkpoints = dedupe_checkpoints(self.reader.events("CheckpointCommitted", rid))
            finals = self.reader.events("RunFinalized", rid)
            run.finalized = finals[0] if finals else None
            failed = self.reader.events("RunFailed", rid)
            run.failed = failed[0] if failed else None
            run.revoked = self.reader.events("RunRevoked", rid)
            out.append(run)
            for parent in run.started["parents"]:
                pid = bytes(parent["runId"])
                if pid not in seen:
                    seen.add(pid)
                    todo.append(pid)
        return out

    # -- receipts and their proofs ------------------------------------------------

    def _receipts(
        self, tx_hashes: list[str]
    ) -> tuple[dict[int, dict[str, Any]], list[dict[str, Any]]]:
        wanted: dict[int, set[int]] = {}
        for tx in tx_hashes:
            receipt = self.rpc("eth_getTransactionReceipt", tx)
            if receipt is None:
                raise ChainError(f"the node has no receipt for transaction {tx}")
            wanted.setdefault(as_int(receipt["blockNumber"]), set()).add(
                as_int(receipt["transactionIndex"])
            )
        headers: dict[int, dict[str, Any]] = {}
        out: list[dict[str, Any]] = []
        for number in sorted(wanted):
            block = self.rpc("eth_getBlockByNumber", hex(number), False)
            all_receipts = self._block_receipts(block)
            root = receipts_root(all_receipts)
            if root != as_bytes(block["receiptsRoot"]):
                raise ChainError(
                    f"the receipts of block {number} do not rebuild its receiptsRoot "
                    f"({to_hex(root)} vs {block['receiptsRoot']}): the node's receipts "
                    "cannot be proven"
                )
            headers[number] = trim_header(block)
            by_index = {as_int(r["transactionIndex"]): r for r in all_receipts}
            for index in sorted(wanted[number]):
                out.append(
                    {
                        "receipt": _trim_receipt(by_index[index]),
                        "proof": receipt_proof(all_receipts, index),
                    }
                )
        return headers, out

    def _block_receipts(self, block: dict[str, Any]) -> list[dict[str, Any]]:
        from ledger.errors import RpcError

        try:
            receipts = self.rpc("eth_getBlockReceipts", block["number"])
        except RpcError:  # an older node: one call per transaction
            receipts = None
        if receipts is None:
            receipts = [self.rpc("eth_getTransactionReceipt", tx) for tx in block["transactions"]]
        return list(receipts)

    # -- documents and the subject ------------------------------------------------

    def _document(
        self, digest: bytes, kind: DocumentKind, documents: dict[str, str]
    ) -> tuple[str, dict[str, Any]]:
        document = read_document(self.store, digest, kind)
        documents[str(document.cid)] = document.data.decode("utf-8")
        return str(document.cid), document.body

    def _subject(
        self, metrics: dict[str, Any], weights: Path | None, sha256: str | None
    ) -> tuple[str, str | None]:
        """The subject's name and the sha256 of its file (when the file is at hand)."""
        cid_text = str((metrics.get("weights") or {}).get("cid") or "")
        if weights is not None:
            return weights.name, sha256 or _sha256_file(weights)
        if cid_text:
            cid = Cid.parse(cid_text)
            sha = self._stored_sha256(cid)
            if sha is not None:
                return cid_text, sha
            try:
                data = self.store.get_bytes(cid)
            except (InputError, StoreError):  # not kept in the store: no sha256
                data = None
            if data is not None:
                return f"{cid_text}", hashlib.sha256(data).hexdigest()
        return cid_text or "weights", None

    def _stored_sha256(self, cid: Cid) -> str | None:
        """The sha256 of the store's file of ``cid``, streamed (not read into memory) and
        re-hashed to ``cid`` on the way; None where the store has no file to stream."""
        from ledger.hashing.cid import file_cid_and_sha256

        file_for = getattr(self.store, "file_for", None)
        if file_for is None:
            return None
        try:
            got, sha = file_cid_and_sha256(file_for(cid))
        except (InputError, StoreError):
            return None
        return sha if got == cid else None


def documents_bytes(documents: dict[str, str], started: dict[str, Any] | None) -> bytes:
    """The manifest's bytes among ``documents`` (by the digest the run started with)."""
    assert started is not None
    digest = bytes(started["manifestDigest"])
    for text in documents.values():
        data = text.encode("utf-8")
        if bytes_cid(data).digest == digest:
            return data
    raise InputError("the bundle lacks the run's manifest")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
