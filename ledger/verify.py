"""Re-check a model file against the ledger and report every check.

Outcomes and the CLI's exit codes:

==========  ====  ==========================================================
verified     0    a record matches and every check passed
mismatch     3    a record exists (or ``--run`` was named) but something
                  does not check out: the report names what
unknown      4    no record for this file's CID nor for its tensor root
revoked      5    the run, one of its ancestors, or another run that
                  recorded the same weights (or one of its ancestors) was
                  revoked; or the run or one of its ancestors trained on a
                  revoked dataset (``ledger data revoke``)
unchecked    6    the weights are recorded on chain, nothing contradicts
                  the record, but some of the run's documents could not be
                  fetched (not in the store, the IPFS node or ``--api``),
                  so they could not be checked: not a sign of tampering
proven       7    ``--bundle`` offline: the bundle's Merkle proofs show the
                  record as of its block N; a revocation after block N is
                  not checked (give ``--rpc URL``)
==========  ====  ==========================================================

Precedence: revoked, then mismatch, then unchecked, then verified.

Several runs may record the same weights (its file CID, or its tensor root for a
re-saved copy). The earliest record (block, then log index) is the *origin*,
whose run the report checks in full (or the ``--run`` named); the others are
*claimants*, listed with their committer and block. A claimant that is revoked,
or descends from a revoked run, makes the verdict REVOKED, naming it. A file
found by its CID has its tensors read too when another file's record holds the
tensor root its claimants name, or when they name different roots.

The file's CID is computed without interpreting the file. Only when the CID is
unknown are its tensors read (``.safetensors`` parsed directly; ``torch.save``
files by an opcode reader that never runs the pickle, torch with
``weights_only=True`` for the rest), to find the record by tensor root, which survives
re-saving under another name or format.

A Hugging Face model folder (``model.safetensors``, or shards with
``model.safetensors.index.json``) has no file CID: its record is found by the
tensor root over all of its weights files, and the report says so.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger.chain.records import (
    ZERO32,
    RegistryView,
    RunRecord,
    RunStatus,
    WeightsRecord,
    record_leaf,
    run_id_for,
)
from ledger.documents import DocumentKind, read_document
from ledger.errors import (
    BadIdError,
    FileMissingError,
    InvalidDocumentError,
    LedgerError,
    StoreError,
    UnsupportedFormatError,
)
from ledger.hashing.cid import Cid, Progress, file_cid
from ledger.hashing.merkle import MerkleTree
from ledger.ids import RunId, label, to_hex
from ledger.store import ArtifactStore

if TYPE_CHECKING:  # the tensor readers load when a file's CID is not on record
    from ledger.datasets import DatasetRef
    from ledger.hashing.tensors import TensorDiff, TensorDigest


class Outcome(enum.StrEnum):
    VERIFIED = "verified"
    MISMATCH = "mismatch"
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    UNCHECKED = "unchecked"
    PROVEN = "proven"

    @property
    def exit_code(self) -> int:
        codes = {
            "verified": 0,
            "mismatch": 3,
            "unknown": 4,
            "revoked": 5,
            "unchecked": 6,
            "proven": 7,
        }
        return codes[self.value]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    unchecked: bool = False
    """Not done: what it needs (a document) could not be fetched. ``ok`` is False."""


@dataclass
class VerifyReport:
    path: str
    file_cid: str | None  # None for a folder, which has no file CID
    outcome: Outcome = Outcome.UNKNOWN
    run_id: str | None = None
    matched_by: str | None = None  # "file" or "tensors"
    step: int | None = None
    is_final: bool | None = None
    tensor_root: str | None = None
    tensor_diff: TensorDiff | None = None
    checks: list[Check] = field(default_factory=list)
    files: list[str] | None = None  # a folder's weights files
    origin: dict[str, Any] | None = None  # the earliest record of these weights
    claimants: list[dict[str, Any]] = field(default_factory=list)  # other runs recording them

    @property
    def is_folder(self) -> bool:
        return self.file_cid is None

    def add(self, name: str, ok: bool, detail: str, *, unchecked: bool = False) -> bool:
        self.checks.append(Check(name, ok and not unchecked, detail, unchecked))
        return ok and not unchecked

    @property
    def failed(self) -> list[Check]:
        """Checks that were done and failed (not those that could not be done)."""
        return [c for c in self.checks if not c.ok and not c.unchecked]

    @property
    def unchecked(self) -> list[Check]:
        """Checks that could not be done: a document could not be fetched."""
        return [c for c in self.checks if c.unchecked]

    def to_json(self) -> dict[str, Any]:
        diff = self.tensor_diff
        return {
            "path": self.path,
            "kind": "folder" if self.is_folder else "file",
            "files": self.files,
            "outcome": self.outcome.value,
            "file_cid": self.file_cid,
            "run_id": self.run_id,
            "matched_by": self.matched_by,
            "step": self.step,
            "is_final": self.is_final,
            "tensor_root": self.tensor_root,
            "tensor_diff": None
            if diff is None
            else {
                "added": list(diff.added),
                "removed": list(diff.removed),
                "changed": list(diff.changed),
            },
            "origin": self.origin,
            "claimants": self.claimants,
            "checks": [
                {"name": c.name, "ok": c.ok, "unchecked": c.unchecked, "detail": c.detail}
                for c in self.checks
            ],
        }


class Verifier:
    def __init__(self, registry: RegistryView, store: ArtifactStore) -> None:
        self.registry = registry
        self.store = store
        self._started: dict[bytes, dict[str, Any] | None] = {}
        self._runs: dict[bytes, RunRecord] = {}
        self._committers: dict[str, bool] = {}  # role checks, per verification

    def verify_file(
        self,
        path: Path,
        *,
        expected_run: bytes | None = None,
        progress: Progress | None = None,
        known_cid: Cid | None = None,
    ) -> VerifyReport:
        """Check a weights file, or a Hugging Face model folder, against the ledger.

        ``progress`` receives the bytes hashed while the file CID is computed;
        ``known_cid`` is the file's CIDv1 when the caller already computed it
        (the CLI hashes while it connects).

        Every record of the same weights is a claim: those of the file CID, and
        those of its tensor root. A file found by CID has its tensors read when
        some other record holds a tensor root its claimants name (one
        ``eth_getLogs`` per root tells), when they name different roots, or when
        any run of the registry was ever revoked (one more ``eth_getLogs``): a
        claimant can record a copy's CID under a tensor root it does not hold,
        and only the file's real root then finds a revoked record of the same
        tensors.
        """
        path = Path(path)
        self._started.clear()
        self._runs.clear()
        self._committers.clear()
        sharded = False
        if path.is_dir():
            from ledger.hashing.dcp import is_dcp_folder

            if not is_dcp_folder(path):
                return self._verify_folder(path, expected_run)
            sharded = True  # a DCP checkpoint: its folder CID, as the hook recorded it
        if sharded:
            from ledger.hashing.cid import path_cid

            cid = known_cid or path_cid(path, hidden=True, progress=progress)
        else:
            cid = known_cid if known_cid is not None else file_cid(path, progress=progress)
        report = VerifyReport(path=str(path), file_cid=str(cid))
        if sharded:
            from ledger.hashing.tensors import weights_layouts

            if beside := weights_layouts(path):  # what Hugging Face loaders read instead
                report.add(
                    "container",
                    False,
                    f"the checkpoint folder also holds {', '.join(map(repr, beside))}, which "
                    "Hugging Face loaders read instead of its shards: not checked here",
                )
        by_file = self.registry.find_by_weights(cid.digest)
        by_root: dict[bytes, list[WeightsRecord]] = {}
        tensors: TensorDigest | None = None
        if by_file:
            claimed = {r.tensor_root for r in by_file}
            for root in claimed:
                by_root[root] = self.registry.find_by_tensor_root(root)
            others = [r for rs in by_root.values() for r in rs if r.weights_digest != cid.digest]
            # a zero root: its records say the file holds no tensors
            holds_tensors = any(root != ZERO32 for root in claimed)
            revoked_somewhere = holds_tensors and self.registry.has_revocations()
            if others or len(claimed) > 1 or revoked_somewhere:
                tensors = self._read_tensors(path, report, required=False)
                if tensors is None:
                    against = (
                        f"{len(others)} other record(s) of the tensor root its claimants name"
                        if others or len(claimed) > 1
                        else "the records of revoked runs"
                    )
                    report.add(
                        "tensors",
                        False,
                        f"the file's tensors could not be read to compare them with {against}",
                        unchecked=True,
                    )
        else:
            tensors = self._read_tensors(path, report)
        claims = [Claim(r, "file") for r in by_file]
        if tensors is not None:
            report.tensor_root = tensors.root.hex()
            if tensors.root not in by_root:
                by_root[tensors.root] = self.registry.find_by_tensor_root(tensors.root)
            claims += [
                Claim(r, "tensors") for r in by_root[tensors.root] if r.weights_digest != cid.digest
            ]
        claim = self._choose(claims, expected_run, report)
        if claim is not None:
            record = claim.record
            report.matched_by = claim.matched_by
            if claim.matched_by == "file":
                report.add("record", True, f"file CID {cid} is recorded on chain")
                if tensors is not None and record.tensor_root != tensors.root:
                    report.add(
                        "tensor root",
                        False,
                        f"run {to_hex(record.run_id)} records tensor root "
                        f"{record.tensor_root.hex()}, but the file's is {tensors.root.hex()}",
                    )
            else:
                self._audit_copy(path, cid, record, report)
        return self._conclude(claim, expected_run, cid, tensors, report, claims)

    def _audit_copy(
        self, path: Path, cid: Cid, record: WeightsRecord, report: VerifyReport
    ) -> None:
        """A file found by tensor root: every byte and entry must belong to a tensor."""
        from ledger.hashing.tensors import audit_container

        report.add("record", True, f"tensor root {record.tensor_root.hex()} is recorded")
        if path.is_dir():  # a DCP folder: its entries are what its metadata lists
            from ledger.hashing.dcp import dcp_plan

            others = dcp_plan(path).other_entries
            report.add(
                "container",
                True,
                f"the folder (CID {cid}) is not the folder run {to_hex(record.run_id)} "
                "committed, but its metadata and shards hold identical tensors"
                + (f"; it also holds non-tensor entries: {', '.join(others)}" if others else ""),
            )
            return
        audit = audit_container(path)
        also = (
            "; it also holds training state the tensor root does not cover: "
            + ", ".join(audit.training_state)
            if audit.training_state
            else ""
        )
        report.add(
            "container",
            not audit.problems,
            f"the file (CID {cid}) is not the file run {to_hex(record.run_id)} committed, "
            f"but holds identical tensors{also}"
            if not audit.problems
            else "identical tensors, but the container is not clean: " + "; ".join(audit.problems),
        )

    def verify_cid(self, cid: Cid, *, expected_run: bytes | None = None) -> VerifyReport:
        """Check a file known only by its CID (e.g. an auditor's digest) against the chain."""
        self._started.clear()
        self._runs.clear()
        self._committers.clear()
        report = VerifyReport(path=str(cid), file_cid=str(cid))
        claims = [Claim(r, "file") for r in self.registry.find_by_weights(cid.digest)]
        claim = self._choose(claims, expected_run, report)
        if claim is not None:
            report.matched_by = "file"
            report.add("record", True, f"file CID {cid} is recorded on chain")
        elif expected_run is None:
            report.add("record", False, f"file CID {cid} is not recorded")
            return report
        return self._conclude(claim, expected_run, cid, None, report, claims)

    def verify_tensor_root(self, root: bytes, *, expected_run: bytes | None = None) -> VerifyReport:
        """Check weights known only by their tensor root against the chain."""
        self._started.clear()
        self._runs.clear()
        self._committers.clear()
        report = VerifyReport(path=root.hex(), file_cid=None, tensor_root=root.hex())
        claims = [Claim(r, "tensors") for r in self.registry.find_by_tensor_root(root)]
        claim = self._choose(claims, expected_run, report)
        if claim is not None:
            report.matched_by = "tensors"
            report.add("record", True, f"tensor root {root.hex()} is recorded on chain")
        elif expected_run is None:
            report.add("record", False, f"tensor root {root.hex()} is not recorded")
            return report
        return self._conclude(claim, expected_run, None, None, report, claims)

    def _verify_folder(self, folder: Path, expected_run: bytes | None) -> VerifyReport:
        from ledger.hashing.tensors import container_problem, weights_files

        report = VerifyReport(path=str(folder), file_cid=None)
        files, _ = weights_files(folder)
        report.files = [p.name for p in files]
        tensors = self._read_tensors(folder, report)
        claims: list[Claim] = []
        claim = None
        if tensors is not None:
            report.tensor_root = tensors.root.hex()
            claims = [Claim(r, "tensors") for r in self.registry.find_by_tensor_root(tensors.root)]
            claim = self._choose(claims, expected_run, report)
            if claim is not None:
                report.matched_by = "tensors"
                report.add(
                    "record",
                    True,
                    f"tensor root {tensors.root.hex()} of {len(files)} weights file(s) is "
                    "recorded (a folder has no file CID: looked up by tensor root)",
                )
                problems = [
                    f"{p.name}: {problem}"
                    for p in files
                    if (problem := container_problem(p)) is not None
                ]
                problems += _other_layouts(folder, tensors.root)
                report.add(
                    "container",
                    not problems,
                    f"the folder's weights files ({', '.join(report.files)}) hold identical "
                    "tensors to the committed weights"
                    if not problems
                    else "identical tensors, but a weights file is not clean: "
                    + "; ".join(problems),
                )
        return self._conclude(claim, expected_run, None, tensors, report, claims)

    # -- claimants ----------------------------------------------------------------

    def _choose(
        self, claims: list[Claim], expected_run: bytes | None, report: VerifyReport
    ) -> Claim | None:
        """Orders the claims (block, then log index), notes the origin and the other
        claimants in ``report``, and returns the claim to check in full: the expected
        run's, else the origin run's (its final record first, then by file CID)."""
        claims.sort(key=lambda c: c.record.position)
        if not claims:
            return None
        origin = claims[0]
        report.origin = self._describe(origin, report)
        seen = {origin.record.run_id}
        for claim in claims[1:]:
            if claim.record.run_id not in seen:
                seen.add(claim.record.run_id)
                report.claimants.append(self._describe(claim, report))
        wanted = origin.record.run_id if expected_run is None else expected_run
        own = [c for c in claims if c.record.run_id == wanted]
        if not own:
            return None
        own.sort(key=lambda c: (not c.record.is_final, c.matched_by != "file", c.record.position))
        return own[0]

    def _describe(self, claim: Claim, report: VerifyReport) -> dict[str, Any]:
        record = claim.record
        root = report.tensor_root
        return {
            "run_id": to_hex(record.run_id),
            "committer": self._run(record.run_id).committer,
            "block": record.block_number,
            "log_index": record.log_index,
            "tx": record.tx_hash,
            "matched_by": claim.matched_by,
            "is_final": record.is_final,
            "step": record.step,
            "tensor_root_ok": None if root is None else record.tensor_root.hex() == root,
        }

    def _check_claimants(self, checked: bytes, claims: list[Claim], report: VerifyReport) -> bool:
        """The ``origin`` and ``claimants`` checks; returns True when a claimant other
        than the checked run is revoked or descends from a revoked run."""
        if report.origin is None:
            return False
        origin_id = claims[0].record.run_id
        block = report.origin["block"]
        if checked != origin_id:
            derived = origin_id in self._ancestors(checked)
            report.add(
                "origin",
                derived,
                f"first recorded by run {to_hex(origin_id)} (block {block}), an ancestor "
                f"of run {to_hex(checked)}"
                if derived
                else f"these weights were first recorded by run {to_hex(origin_id)} "
                f"(block {block}), not by run {to_hex(checked)}, which recorded them later",
            )
        elif report.claimants:
            report.add(
                "origin", True, f"run {to_hex(origin_id)} first recorded them (block {block})"
            )
        others = [c for c in [report.origin, *report.claimants] if c["run_id"] != to_hex(checked)]
        if not others:
            return False
        tainted: list[str] = []
        listed: list[str] = []
        for other in others:
            rid = bytes.fromhex(other["run_id"][2:])
            where = (
                f"run {other['run_id']} (committer {other['committer']}, block {other['block']})"
            )
            if other["tensor_root_ok"] is False:
                where += " (records a tensor root these weights do not have)"
            listed.append(where)
            taint = self._taint(rid)
            data = self._revoked_data(rid)[0] if taint is None else []
            other["revoked"] = taint is not None or bool(data)
            if taint is not None:
                source, reason = taint
                tainted.append(
                    f"{where} was revoked: {reason}"
                    if source == rid
                    else f"{where} descends from revoked run {to_hex(source)}: {reason}"
                )
            elif data:
                tainted.append(f"{where} trained on revoked data: " + "; ".join(data))
        report.add(
            "claimants",
            not tainted,
            " | ".join(tainted)
            if tainted
            else f"also recorded by {len(listed)} other run(s): " + "; ".join(listed),
        )
        return bool(tainted)

    def _run(self, run_id: bytes) -> RunRecord:
        if run_id not in self._runs:
            self._runs[run_id] = self.registry.get_run(run_id)
        return self._runs[run_id]

    def _parents(self, run_id: bytes) -> list[bytes]:
        started = self._start_event(run_id)
        return [bytes(p["runId"]) for p in started["parents"]] if started else []

    def _ancestors(self, run_id: bytes) -> set[bytes]:
        seen: set[bytes] = set()
        todo = self._parents(run_id)
        while todo:
            parent = todo.pop()
            if parent not in seen:
                seen.add(parent)
                todo += self._parents(parent)
        return seen

    def _taint(self, run_id: bytes) -> tuple[bytes, str] | None:
        """The run itself or the first ancestor of it found revoked, with the reason."""
        for rid in (run_id, *sorted(self._ancestors(run_id))):
            if self._run(rid).revoked:
                return rid, self._revocation_reason(rid)
        return None

    def _conclude(
        self,
        claim: Claim | None,
        expected_run: bytes | None,
        cid: Cid | None,
        tensors: TensorDigest | None,
        report: VerifyReport,
        claims: list[Claim],
    ) -> VerifyReport:
        if claim is None:
            if expected_run is not None:
                self._explain_against(expected_run, cid, tensors, report)
                if claims:
                    self._check_claimants(expected_run, claims, report)
                report.outcome = Outcome.MISMATCH
            else:
                detail = (
                    "the folder's tensor root is not recorded"
                    if cid is None
                    else "neither the file CID nor its tensor root is recorded"
                )
                report.add("record", False, detail)
                report.outcome = Outcome.UNKNOWN
            return report
        self._check_record(claim.record, report, claims)
        return report

    # -- the record and its run -------------------------------------------------

    def _check_record(
        self, record: WeightsRecord, report: VerifyReport, claims: list[Claim]
    ) -> None:
        report.run_id = to_hex(record.run_id)
        report.is_final = record.is_final
        report.step = record.step
        run = self._run(record.run_id)
        revoked = self._check_run(run, report, label="run")
        what = "final weights" if record.is_final else f"checkpoint at step {record.step}"
        report.add("weights event", True, f"{what} recorded in tx {record.tx_hash}")
        if record.final is not None:
            stored = self.registry.is_final_record(record.run_id, record.final)
            report.add(
                "final commitment",
                stored,
                "the final record matches the commitment stored on chain"
                if stored
                else "the final record does not match the commitment stored on chain",
            )
        elif run.status is RunStatus.FINALIZED:
            self._check_checkpoint_proof(record, report)
        self._check_metrics(record, report)
        revoked = self._check_lineage(run, report) or revoked
        revoked = self._check_data(record.run_id, report) or revoked
        revoked = self._check_claimants(record.run_id, claims, report) or revoked
        if revoked:
            report.outcome = Outcome.REVOKED
        elif report.failed:
            report.outcome = Outcome.MISMATCH
        elif report.unchecked:
            report.outcome = Outcome.UNCHECKED
        else:
            report.outcome = Outcome.VERIFIED

    def _check_checkpoint_proof(self, record: WeightsRecord, report: VerifyReport) -> None:
        """A finalized run's checkpoint must sit under its committed checkpoint root."""
        final = self.registry.final_record(record.run_id)
        leaves = [record_leaf(r) for r in self.registry.checkpoints(record.run_id)]
        leaf = record_leaf(record)
        if final is None or final.final is None or leaf not in leaves:
            report.add("checkpoint proof", False, "the checkpoint is not among the run's records")
            return
        tree = MerkleTree([x.hash for x in leaves])
        proven = self.registry.verify_checkpoint(
            record.run_id, final.final, leaf, tree.proof(leaf.hash)
        )
        report.add(
            "checkpoint proof",
            proven,
            f"the registry proves it under the run's checkpoint root ({len(leaves)} checkpoints)"
            if proven
            else "the checkpoint is not under the run's committed checkpoint root",
        )

    def _check_run(self, run: RunRecord, report: VerifyReport, *, label: str) -> bool:
        """Checks one run's own facts; returns True when it is revoked."""
        rid = to_hex(run.run_id)
        if not report.add(
            f"{label} exists", run.exists, f"{label} {rid}: {run.status.name.lower()}"
        ):
            return False
        started = self._start_event(run.run_id)
        if started is None:
            report.add(f"{label} id", False, f"no RunStarted event for {rid}")
            return run.revoked
        manifest_digest = bytes(started["manifestDigest"])
        derived = run_id_for(started["committer"], manifest_digest)
        same = derived == run.run_id and started["committer"] == run.committer
        report.add(
            f"{label} id",
            same,
            "run id re-derives from committer and manifest digest"
            if same
            else f"run id does not re-derive (got {to_hex(derived)})",
        )
        self._document(manifest_digest, DocumentKind.MANIFEST, f"{label} manifest", report)
        if run.committer not in self._committers:
            self._committers[run.committer] = self.registry.is_committer(run.committer)
        committer_ok = self._committers[run.committer]
        report.add(
            f"{label} committer",
            committer_ok,
            f"{run.committer} holds the committer role"
            if committer_ok
            else f"{run.committer} no longer holds the committer role",
        )
        if run.status is RunStatus.FAILED:  # its checkpoints are genuine; say so, don't fail
            report.add(f"{label} status", True, f"{label} {rid} ended failed (marked on chain)")
        if run.revoked:
            reason = self._revocation_reason(run.run_id)
            report.add(f"{label} not revoked", False, f"{label} {rid} was revoked: {reason}")
        return run.revoked

    def _check_lineage(self, run: RunRecord, report: VerifyReport) -> bool:
        """Walks every ancestor; returns True when one of them is revoked.

        A derived model verifies only if every ancestor does: each ancestor gets
        the run checks (exists, id, manifest in the store, committer, revocation)
        and, when finalized, its final record (commitment on chain, metrics
        document in the store). The parents walked are those of the
        ``RunStarted`` events, so a lost manifest does not hide grandparents.
        One ``lineage`` check sums up, naming each ancestor that fails and why.
        """
        revoked = False
        seen = {run.run_id}
        todo = [run]
        walked = 0
        problems: list[str] = []
        missing: list[str] = []
        while todo:
            child = todo.pop()
            started = self._start_event(child.run_id)
            if started is None:
                continue
            on_chain = {bytes(p["runId"]): int(p["relation"]) for p in started["parents"]}
            manifest = self._document_quiet(bytes(started["manifestDigest"]), DocumentKind.MANIFEST)
            if manifest is not None and _declared_parents(manifest) != set(on_chain):
                report.add(
                    "lineage parents",
                    False,
                    f"run {to_hex(child.run_id)}: manifest parents differ from those on chain",
                )
            for parent_id, code in on_chain.items():
                if parent_id in seen:
                    continue
                seen.add(parent_id)
                walked += 1
                relation = label(code)
                parent = self._run(parent_id)
                name = f"ancestor {to_hex(parent_id)[:14]} ({relation})"
                first = len(report.checks)
                revoked = self._check_run(parent, report, label=name) or revoked
                if parent.status is RunStatus.FINALIZED:
                    self._check_ancestor_final(parent, report, name)
                failed = [c for c in report.checks[first:] if not c.ok and not c.unchecked]
                unchecked = [c for c in report.checks[first:] if c.unchecked]
                if failed:
                    reasons = "; ".join(_reason(c, name, parent_id) for c in failed)
                    problems.append(f"{to_hex(parent_id)} ({relation}) does not verify: {reasons}")
                elif unchecked:
                    reasons = "; ".join(_reason(c, name, parent_id) for c in unchecked)
                    missing.append(f"{to_hex(parent_id)} ({relation}) was not checked: {reasons}")
                if parent.exists:
                    todo.append(parent)
        if walked:
            plural = "" if walked == 1 else "s"
            report.add(
                "lineage",
                not problems,
                " | ".join(problems + missing)
                if problems or missing
                else f"{walked} ancestor{plural} verified",
                unchecked=bool(missing) and not problems,
            )
        return revoked

    def _check_data(self, run_id: bytes, report: VerifyReport) -> bool:
        """The datasets of the run and of every ancestor (their manifests' ``data``,
        :mod:`ledger.datasets`, parts included) against the registry's artifact
        revocations; returns True when one is revoked.

        One ``data not revoked`` check: it names each revoked dataset, the run that
        trained on it, the lineage path from the checked run to that run, and the
        reason on chain. A manifest that cannot be fetched leaves its run's data
        unchecked.
        """
        found, unread, datasets = self._revoked_data(run_id)
        if found:
            report.add("data not revoked", False, " | ".join(found))
            return True
        if unread:
            names = ", ".join(to_hex(r)[:14] for r in unread)
            report.add(
                "data not revoked",
                False,
                f"the datasets of run(s) {names} were not checked against revocations: their "
                "manifests could not be fetched (give `--api URL` of an audit API that has "
                "them, or configure the IPFS node that holds them)",
                unchecked=True,
            )
        elif datasets:
            report.add(
                "data not revoked",
                True,
                f"{datasets} dataset(s) of the run and its ancestors checked: none is revoked",
            )
        return False

    def _revoked_data(self, run_id: bytes) -> tuple[list[str], list[bytes], int]:
        """(what is revoked, worded; runs whose manifest could not be read; datasets
        checked) for the datasets of ``run_id`` and its ancestors."""
        from ledger.datasets import run_datasets

        runs = [run_id, *sorted(self._ancestors(run_id))]
        uses: list[tuple[bytes, DatasetRef]] = []
        unread: list[bytes] = []
        for rid in runs:
            started = self._start_event(rid)
            manifest = (
                self._document_quiet(bytes(started["manifestDigest"]), DocumentKind.MANIFEST)
                if started is not None
                else None
            )
            if manifest is None:
                unread.append(rid)
                continue
            uses += [(rid, ref) for ref in run_datasets(manifest)]
        digests = sorted({bytes.fromhex(ref.digest[2:]) for _, ref in uses})
        revoked = self.registry.artifact_revocations(digests) if digests else {}
        found: list[str] = []
        for rid, ref in uses:
            revocation = revoked.get(bytes.fromhex(ref.digest[2:]))
            if revocation is None:
                continue
            what = (
                f"dataset {ref.cid} (data {ref.key!r})"
                if ref.part_of is None
                else f"{ref.cid}, part of dataset {ref.part_of} (data {ref.key!r}),"
            )
            whose = (
                "this run"
                if rid == run_id
                else f"ancestor run {to_hex(rid)} ({self._path(run_id, rid)})"
            )
            found.append(
                f"{what} trained on by {whose} was revoked in block {revocation.block_number}: "
                f"{revocation.reason}"
            )
        datasets = len({ref.digest for _, ref in uses if ref.part_of is None})
        return found, unread, datasets

    def _path(self, run_id: bytes, ancestor: bytes) -> str:
        """How ``run_id`` descends from ``ancestor``: ``fine-tune of 0x12.. <- distill of ..``."""
        steps: dict[bytes, tuple[bytes, str]] = {}
        todo = [run_id]
        while todo and ancestor not in steps:
            child = todo.pop(0)
            started = self._start_event(child)
            for parent in started["parents"] if started else []:
                parent_id = bytes(parent["runId"])
                if parent_id not in steps and parent_id != run_id:
                    steps[parent_id] = (child, label(int(parent["relation"])))
                    todo.append(parent_id)
        path: list[str] = []
        at = ancestor
        while at in steps:
            child, relation = steps[at]
            path.append(f"{to_hex(child)[:14]} is a {relation} of {to_hex(at)[:14]}")
            at = child
        return ", ".join(reversed(path))

    def _check_ancestor_final(self, run: RunRecord, report: VerifyReport, label: str) -> None:
        """A finalized ancestor's final record: on-chain commitment and metrics in the store."""
        final = self.registry.final_record(run.run_id)
        if final is None or final.final is None:
            report.add(f"{label} final record", False, "finalized, but no RunFinalized event")
            return
        stored = self.registry.is_final_record(run.run_id, final.final)
        report.add(
            f"{label} final record",
            stored,
            "the final record matches the commitment stored on chain"
            if stored
            else "the final record does not match the commitment stored on chain",
        )
        self._document(final.metrics_digest, DocumentKind.METRICS, f"{label} metrics", report)

    def _start_event(self, run_id: bytes) -> dict[str, Any] | None:
        if run_id not in self._started:
            events = self.registry.events("RunStarted", run_id)
            self._started[run_id] = events[0] if events else None
        return self._started[run_id]

    def _revocation_reason(self, run_id: bytes) -> str:
        events = self.registry.events("RunRevoked", run_id)
        return str(events[-1]["reason"]) if events else "(no reason found)"

    def _check_metrics(self, record: WeightsRecord, report: VerifyReport) -> None:
        document = self._document(record.metrics_digest, DocumentKind.METRICS, "metrics", report)
        if document is None:
            return
        weights = document.get("weights", {})
        try:
            cid_ok = Cid.parse(str(weights.get("cid"))).digest == record.weights_digest
        except LedgerError:
            cid_ok = False
        root_ok = weights.get("tensor_root") == record.tensor_root.hex()
        report.add(
            "metrics binding",
            cid_ok and root_ok,
            "metrics document names the same weights as the chain"
            if cid_ok and root_ok
            else "metrics document names other weights than the chain records",
        )

    # -- store documents ----------------------------------------------------------

    def _document(
        self, digest: bytes, kind: DocumentKind, name: str, report: VerifyReport
    ) -> dict[str, Any] | None:
        """The document, with a check ``name`` saying whether it is in the store,
        re-hashes, is of ``kind`` and is canonical JSON (the one failure reported)."""
        try:
            document = read_document(self.store, digest, kind)
        except InvalidDocumentError as exc:  # bytes that are not the document on chain
            report.add(name, False, exc.message)
            return None
        except StoreError as exc:  # missing, or the store is away: not checked
            report.add(
                name,
                False,
                f"{exc.message}; not checked (give `--api URL` of an audit API that has "
                "it, or configure the IPFS node that holds it)",
                unchecked=True,
            )
            return None
        canonical = document.is_canonical()
        report.add(
            name,
            canonical,
            f"{document.cid} re-derives from the stored bytes"
            if canonical
            else f"{document.cid} is not canonical JSON",
        )
        return document.body

    def _document_quiet(self, digest: bytes, kind: DocumentKind) -> dict[str, Any] | None:
        """The document, or None for any store failure (for explanations only)."""
        try:
            return read_document(self.store, digest, kind).body
        except StoreError:
            return None

    # -- tensors --------------------------------------------------------------------

    def _read_tensors(
        self, path: Path, report: VerifyReport, *, required: bool = True
    ) -> TensorDigest | None:
        """The tensors of ``path``; None, with a failed ``tensors`` check when
        ``required``, for a file that holds none ledger can read."""
        from ledger.hashing.tensors import tensor_digest

        try:
            return tensor_digest(path)
        except (UnsupportedFormatError, FileMissingError) as exc:
            if required:
                report.add("tensors", False, exc.message)
            return None

    def _explain_files(self, folder: Path, recorded: dict[str, Any], report: VerifyReport) -> None:
        """A checkpoint folder: name the files that differ from the committed ones."""
        changed, added, removed = _shard_changes(folder, recorded)
        parts = [
            f"{label}: {', '.join(names)}"
            for label, names in (("changed", changed), ("added", added), ("removed", removed))
            if names
        ]
        report.add("files", not parts, "; ".join(parts) or "every file matches")

    def _explain_against(
        self, run_id: bytes, cid: Cid | None, tensors: TensorDigest | None, report: VerifyReport
    ) -> None:
        """The file matches nothing: say how it differs from ``run_id``'s final weights."""
        report.run_id = to_hex(run_id)
        events = self.registry.events("RunFinalized", run_id)
        if not events:
            report.add("record", False, f"run {to_hex(run_id)} has no final weights on chain")
            return
        event = events[0]
        recorded_cid = bytes(event["weightsDigest"])
        if cid is not None:
            report.add(
                "file CID",
                cid.digest == recorded_cid,
                f"file CID {cid} differs from the run's final weights",
            )
        if tensors is None:
            return
        same_root = tensors.root == bytes(event["tensorRoot"])
        report.add("tensor root", same_root, "tensor root differs from the run's final weights")
        document = self._document_quiet(bytes(event["metricsDigest"]), DocumentKind.METRICS)
        recorded_files = (document or {}).get("weights", {}).get("files")
        if isinstance(recorded_files, dict) and report.path and Path(report.path).is_dir():
            self._explain_files(Path(report.path), recorded_files, report)
        index_cid = (document or {}).get("weights", {}).get("tensor_index")
        if not index_cid:
            return
        index = self._document_quiet(Cid.parse(str(index_cid)).digest, DocumentKind.TENSOR_INDEX)
        if index is None:
            return
        from ledger.hashing.tensors import diff_tensors

        diff = diff_tensors(index, tensors)
        report.tensor_diff = diff
        parts = [
            f"{label}: {', '.join(names)}"
            for label, names in (
                ("changed", diff.changed),
                ("added", diff.added),
                ("removed", diff.removed),
            )
            if names
        ]
        report.add("tensors", diff.empty, "; ".join(parts) or "all tensors match")


def _shard_changes(folder: Path, recorded: dict[str, Any]) -> tuple[list[str], ...]:
    """The files of ``folder`` that differ from the recorded CIDs: (changed, added, removed)."""
    from ledger.hashing.cid import path_cid

    present = sorted(e.name for e in os.scandir(folder) if e.is_file(follow_symlinks=False))
    changed = [
        name
        for name in present
        if name in recorded and str(path_cid(folder / name)) != recorded[name]
    ]
    added = [name for name in present if name not in recorded]
    removed = sorted(name for name in recorded if name not in present)
    return changed, added, removed


@dataclass(frozen=True)
class Claim:
    """One record of the weights being verified, and how it was found."""

    record: WeightsRecord
    matched_by: str  # "file" (its CID) or "tensors" (its tensor root)


def _reason(check: Check, label: str, run_id: bytes) -> str:
    """A failed ancestor check, worded without repeating the ancestor's label and id."""
    name = check.name.removeprefix(label).strip()
    detail = check.detail.removeprefix(label).strip().removeprefix(to_hex(run_id)).strip()
    return detail if name in ("exists", "not revoked") else f"{name}: {detail}"


def _declared_parents(manifest: dict[str, Any]) -> set[bytes]:
    """The parent run ids a manifest names (unreadable ones as they are: they differ)."""
    declared: set[bytes] = set()
    for parent in manifest.get("parents", []):
        text = str(parent.get("run_id", "")) if isinstance(parent, dict) else ""
        try:
            declared.add(RunId.parse(text, field="manifest parent"))
        except BadIdError:
            declared.add(text.encode())
    return declared


def _other_layouts(folder: Path, root: bytes) -> list[str]:
    """What the folder's other weights layouts hold unlike the checked one: a loader
    that reads them (another format, the index instead of the single file, what
    ``config.json`` names) must get the same tensors, or the folder is not clean."""
    from ledger.hashing.tensors import layout_digest, weights_layouts

    problems = []
    for name in weights_layouts(folder)[1:]:
        try:
            other = layout_digest(folder, name)
        except LedgerError as exc:
            problems.append(f"{name}, which a loader may read instead, cannot be read: {exc}")
            continue
        if other.root != root:
            problems.append(
                f"{name}, which a loader may read instead, holds other tensors "
                f"(root {other.root.hex()})"
            )
    return problems
