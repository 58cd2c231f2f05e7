"""``ledger verify MODEL --bundle FILE``: a model against its bundle, with no store.

Offline, every fact comes from the bundle and is proven there: each header
re-hashes to its block hash; each receipt is in its block's receipts trie; the
registry's account and each run's storage slots are in the state trie of the
bundle's *as-of* block; the documents re-hash to the digests the proven logs
name; the Statement is built again from those logs and documents and must be
the bundle's, word for word (only the subject's name and ``sha256`` come from
outside: the ``sha256`` is checked against the file). The outcome is PROVEN
(exit 7): true as of that block; a revocation after it is not checked.

With ``--rpc URL`` (repeatable) each node is trusted for two things only: that
the bundle's blocks are on its canonical chain (by hash), and a fresh storage
proof at its latest block that no run of the lineage is revoked now. Every node
must agree; then the outcome is VERIFIED (exit 0).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ledger.bundle.evidence import (
    EvidenceError,
    account_from_proof,
    header_hash,
    slot_from_proof,
    trim_header,
    verify_receipt,
)
from ledger.bundle.export import BUNDLE_TYPE, artifact_slot, run_slots
from ledger.bundle.statement import RunEvents, build_statement, dedupe_checkpoints
from ledger.chain.abi import registry_abi
from ledger.chain.records import (
    FinalRecord,
    RunStatus,
    checksum_address,
    record_leaf,
    record_of,
    run_id_for,
)
from ledger.chain.rpc import as_bytes, as_int
from ledger.documents import MANIFEST_SCHEMA, METRICS_SCHEMA, canonical_json
from ledger.errors import ChainError, InputError, LedgerError
from ledger.hashing.cid import Cid, bytes_cid
from ledger.hashing.merkle import checkpoint_root
from ledger.hashing.tensors import TENSORS_SCHEME
from ledger.ids import to_hex
from ledger.verify import Outcome, VerifyReport

__all__ = ["read_bundle", "verify_bundle"]


def read_bundle(path: Path) -> dict[str, Any]:
    """The bundle at ``path`` as JSON; an :class:`InputError` naming the file otherwise."""
    try:
        bundle = json.loads(Path(path).read_bytes())
    except FileNotFoundError as exc:
        raise InputError(f"--bundle {path}: no such file") from exc
    except (OSError, ValueError, RecursionError) as exc:
        raise InputError(
            f"--bundle {path}: not a JSON bundle ({str(exc)[:200]})",
            hint="give the .provenance.json file `ledger export` wrote",
        ) from exc
    if not isinstance(bundle, dict) or bundle.get("bundleType") != BUNDLE_TYPE:
        raise InputError(
            f"--bundle {path}: not a ledger bundle (bundleType is not {BUNDLE_TYPE!r})",
            hint="give the .provenance.json file `ledger export` wrote",
        )
    return bundle


class _Slot:
    """A run's packed storage slot, in the layout of registry 3 (committer, status,
    revoked, start block, latest block) or 2 (committer, start time, status, revoked).

    A bundle does not say which registry wrote it, and must not be trusted to: the
    layout is the one whose start agrees with the run's proven ``RunStarted`` event,
    its block (registry 3) or that block's time (registry 2). A word that agrees
    with neither has status ``NONE`` (``layout`` 0), and the check fails.
    """

    def __init__(self, word: bytes, start_block: int, start_time: int | None) -> None:
        self.committer = checksum_address(word[12:32])
        self.layout = 0
        status, revoked = 0, 0
        if word[11] <= 3 and int.from_bytes(word[5:10], "big") == start_block:
            self.layout, status, revoked = 3, word[11], word[10]
        elif word[3] <= 3 and int.from_bytes(word[4:12], "big") == start_time:
            self.layout, status, revoked = 2, word[3], word[2]
        self.status = RunStatus(status)
        self.revoked = revoked != 0


def verify_bundle(
    path: Path,
    bundle: Mapping[str, Any],
    *,
    cid: Cid,
    sha256: str | None,
    rpcs: Sequence[str] = (),
    registry: str | None = None,
    chain_id: int | None = None,
) -> VerifyReport:
    """Check the model file (its ``cid`` and ``sha256``) against ``bundle``.

    ``registry`` and ``chain_id``, when given (a configured data directory), are
    those the bundle must come from.
    """
    report = VerifyReport(path=str(path), file_cid=str(cid))
    try:
        _Check(report, bundle, cid, sha256, registry, chain_id).run(rpcs)
    except EvidenceError as exc:
        report.add("bundle", False, exc.message)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        report.add("bundle", False, f"the bundle is malformed: {type(exc).__name__} {exc}")
    if any(c.name.endswith("not revoked") and not c.ok for c in report.checks):
        report.outcome = Outcome.REVOKED
    elif report.failed or report.unchecked:
        report.outcome = Outcome.MISMATCH
    else:
        report.outcome = Outcome.VERIFIED if rpcs else Outcome.PROVEN
    return report


class _Check:
    def __init__(
        self,
        report: VerifyReport,
        bundle: Mapping[str, Any],
        cid: Cid,
        sha256: str | None,
        registry: str | None,
        chain_id: int | None,
    ) -> None:
        self.report = report
        self.bundle = bundle
        self.cid = cid
        self.sha256 = sha256
        self.expected_registry = registry
        self.expected_chain = chain_id
        chain = bundle["chain"]
        self.chain_id = int(chain["chainId"])
        self.registry = checksum_address(str(chain["registry"]))
        self.as_of = int(chain["asOfBlock"])
        self.headers: dict[int, Mapping[str, Any]] = {}
        self.runs: dict[bytes, RunEvents] = {}
        self.documents: dict[bytes, bytes] = {}
        self.slots: dict[bytes, bytes] = {}

    def add(self, name: str, ok: bool, detail: str) -> bool:
        return self.report.add(name, ok, detail)

    def run(self, rpcs: Sequence[str]) -> None:
        self._origin()
        self._headers()
        self._receipts()
        self._state()
        self._documents()
        subject = self._subject()
        if subject is None:
            return
        self._lineage(subject)
        self._statement(subject)
        self._signature(subject)
        for url in rpcs:
            self._rpc(url)

    # -- where the bundle says it comes from -------------------------------------

    def _origin(self) -> None:
        if self.expected_chain is not None or self.expected_registry is not None:
            same = (self.expected_chain in (None, self.chain_id)) and (
                self.expected_registry is None
                or checksum_address(self.expected_registry) == self.registry
            )
            self.add(
                "registry",
                same,
                f"the bundle is from registry {self.registry} on chain {self.chain_id}"
                if same
                else f"the bundle is from registry {self.registry} on chain {self.chain_id}, "
                f"not the configured {self.expected_registry} on chain {self.expected_chain}",
            )

    # -- proofs -------------------------------------------------------------------

    def _headers(self) -> None:
        bad = []
        for header in self.bundle["chain"]["headers"]:
            number = as_int(header["number"])
            if header_hash(header) != as_bytes(header["hash"]):
                bad.append(str(number))
            self.headers[number] = header
        if self.as_of not in self.headers:
            raise EvidenceError(f"the bundle lacks the header of its as-of block {self.as_of}")
        self.add(
            "headers",
            not bad,
            f"{len(self.headers)} block headers re-hash to their block hashes"
            if not bad
            else f"block header(s) {', '.join(bad)} do not re-hash to their block hash",
        )

    def _receipts(self) -> None:
        decoder = registry_abi()
        bad = []
        for n, entry in enumerate(self.bundle["chain"]["receipts"]):
            receipt = entry["receipt"]
            number = as_int(receipt["blockNumber"])
            index = as_int(receipt["transactionIndex"])
            header = self.headers.get(number)
            try:
                if header is None:
                    raise EvidenceError(f"no header of block {number}")
                verify_receipt(receipt, index, entry["proof"], as_bytes(header["receiptsRoot"]))
            except EvidenceError as exc:
                bad.append(f"receipt {n} (block {number}): {exc.message}")
                continue
            for position, log in enumerate(receipt["logs"]):
                if checksum_address(str(log["address"])) != self.registry:
                    continue
                decoded = decoder.decode_log(
                    {
                        **log,
                        "blockNumber": hex(number),
                        "logIndex": hex(position),
                        "transactionHash": f"block {number} tx {index}",
                    }
                )
                if decoded is not None:
                    self._event(*decoded)
        for run in self.runs.values():
            run.checkpoints = dedupe_checkpoints(run.checkpoints)
        self.add(
            "receipts",
            not bad,
            f"{len(self.bundle['chain']['receipts'])} receipts are in their blocks' receipts tries"
            if not bad
            else "; ".join(bad),
        )

    def _event(self, name: str, event: dict[str, Any]) -> None:
        run = self.runs.setdefault(bytes(event["runId"]), RunEvents(bytes(event["runId"])))
        if name == "RunStarted" and run.started is None:
            run.started = event
        elif name == "CheckpointCommitted":
            run.checkpoints.append(event)
        elif name == "RunFinalized" and run.finalized is None:
            run.finalized = event
        elif name == "RunFailed":
            run.failed = event
        elif name == "RunRevoked":
            run.revoked.append(event)

    def _state(self) -> None:
        state = self.bundle["chain"]["state"]
        if checksum_address(str(state["address"])) != self.registry:
            raise EvidenceError("the state proof is of another account than the registry")
        self.slots = self._proven_slots(state, self.headers[self.as_of])
        self.add(
            "state proof",
            True,
            f"{len(self.slots)} storage slots of the registry proven at block {self.as_of}",
        )

    def _slot(self, word: bytes, started: Mapping[str, Any]) -> _Slot:
        """A run's slot, decoded in the layout its proven start agrees with."""
        block = int(started["blockNumber"])
        header = self.headers.get(block)
        return _Slot(word, block, as_int(header["timestamp"]) if header is not None else None)

    def _proven_slots(
        self, state: Mapping[str, Any], header: Mapping[str, Any]
    ) -> dict[bytes, bytes]:
        address = as_bytes(self.registry)
        _, _, storage_root, _ = account_from_proof(
            address, state["accountProof"], as_bytes(header["stateRoot"])
        )
        slots = {}
        for entry in state["storageProof"]:
            slot = as_bytes(entry["key"]).rjust(32, b"\x00")
            slots[slot] = slot_from_proof(slot, entry["proof"], storage_root)
        return slots

    def _documents(self) -> None:
        bad = []
        for name, text in self.bundle["documents"].items():
            data = str(text).encode("utf-8")
            digest = bytes_cid(data).digest
            try:
                named = Cid.parse(str(name)).digest
            except InputError:
                named = b""
            if named != digest:
                bad.append(f"{name} does not re-hash to its CID")
                continue
            self.documents[digest] = data
        self.add(
            "documents",
            not bad,
            f"{len(self.documents)} documents re-hash to their CIDs" if not bad else "; ".join(bad),
        )

    def _document(
        self, digest: bytes, field: str, expected: str, what: str
    ) -> dict[str, Any] | None:
        data = self.documents.get(digest)
        if data is None:
            self.add(what, False, f"the bundle lacks the {what} {to_hex(digest)}")
            return None
        body = _json(data)
        ok = isinstance(body, dict) and body.get(field) == expected and canonical_json(body) == data
        self.add(
            what,
            ok,
            f"{bytes_cid(data)} re-hashes and is canonical"
            if ok
            else f"{bytes_cid(data)} is not a canonical {expected} document",
        )
        return body if ok else None

    # -- the runs -----------------------------------------------------------------

    def _subject(self) -> RunEvents | None:
        found = [
            r
            for r in self.runs.values()
            if r.finalized is not None and bytes(r.finalized["weightsDigest"]) == self.cid.digest
        ]
        if not found:
            self.add(
                "subject",
                False,
                f"file CID {self.cid} is not the final weights of any run the bundle proves",
            )
            return None
        subject = found[0]
        self.report.run_id = to_hex(subject.run_id)
        self.report.is_final = True
        self.report.matched_by = "file"
        self.add("record", True, f"file CID {self.cid} is the final weights of the run")
        return subject

    def _check_run(self, run: RunEvents, label: str) -> bool:
        """One run's facts; returns False when something failed."""
        rid = to_hex(run.run_id)
        if run.started is None:
            return self.add(f"{label} exists", False, f"the bundle does not prove {rid} started")
        started = run.started
        manifest_digest = bytes(started["manifestDigest"])
        same = run_id_for(started["committer"], manifest_digest) == run.run_id
        ok = self.add(
            f"{label} id",
            same,
            "run id re-derives from committer and manifest digest"
            if same
            else "run id does not re-derive from committer and manifest digest",
        )
        ok = (
            self._document(manifest_digest, "schema", MANIFEST_SCHEMA, f"{label} manifest")
            is not None
            and ok
        )
        run_slot, final_slot = run_slots(run.run_id)
        if run_slot not in self.slots:
            return self.add(f"{label} state", False, f"the bundle lacks the storage proof of {rid}")
        slot = self._slot(self.slots[run_slot], started)
        expected = RunStatus.FINALIZED if run.finalized is not None else slot.status
        state_ok = slot.committer == started["committer"] and slot.status is expected
        detail = f"{slot.status.name.lower()}, committer {slot.committer}, as of block {self.as_of}"
        if run.finalized is not None:
            record = record_of("RunFinalized", run.finalized).final
            assert record is not None
            stored = self.slots.get(final_slot)
            state_ok = state_ok and stored == record.commitment
            detail += "; the final record matches the stored commitment"
            ok = self._checkpoints(run, record, label) and ok
            metrics = self._document(
                record.metrics_digest, "schema", METRICS_SCHEMA, f"{label} metrics"
            )
            ok = metrics is not None and self._binding(metrics, record, label) and ok
        ok = (
            self.add(f"{label} state", state_ok, detail if state_ok else "state differs: " + detail)
            and ok
        )
        if slot.revoked:
            reason = str(run.revoked[-1]["reason"]) if run.revoked else "(reason not in bundle)"
            self.add(
                f"{label} not revoked",
                False,
                f"{label} {rid} was revoked as of block {self.as_of}: {reason}",
            )
            return False
        self.add(
            f"{label} not revoked",
            True,
            f"not revoked as of block {self.as_of}; a revocation after that block is not "
            "checked (give --rpc URL)",
        )
        return ok

    def _checkpoints(self, run: RunEvents, record: FinalRecord, label: str) -> bool:
        leaves = [record_leaf(record_of("CheckpointCommitted", e)) for e in run.checkpoints]
        root = checkpoint_root(leaves)
        ok = root == record.checkpoint_root and len(leaves) == record.checkpoint_count
        return self.add(
            f"{label} checkpoints",
            ok,
            f"{len(leaves)} proven checkpoints make the committed checkpoint root"
            if ok
            else f"{len(leaves)} proven checkpoints do not make the committed checkpoint root "
            f"({record.checkpoint_count} committed)",
        )

    def _binding(self, metrics: dict[str, Any], record: FinalRecord, label: str) -> bool:
        weights = metrics.get("weights") or {}
        try:
            cid_ok = Cid.parse(str(weights.get("cid"))).digest == record.weights_digest
        except LedgerError:
            cid_ok = False
        ok = cid_ok and weights.get("tensor_root") == record.tensor_root.hex()
        ok = self.add(
            f"{label} metrics binding",
            ok,
            "metrics document names the same weights as the chain"
            if ok
            else "metrics document names other weights than the chain records",
        )
        index = weights.get("tensor_index")
        if label == "run" and index:
            body = self._document(
                Cid.parse(str(index)).digest, "scheme", TENSORS_SCHEME, "tensor index"
            )
            ok = body is not None and ok
        return ok

    def _lineage(self, subject: RunEvents) -> None:
        self._check_run(subject, "run")
        seen = {subject.run_id}
        todo = [subject]
        walked, failed = 0, []
        while todo:
            child = todo.pop()
            if child.started is None:
                continue
            for parent in child.started["parents"]:
                pid = bytes(parent["runId"])
                if pid in seen:
                    continue
                seen.add(pid)
                walked += 1
                run = self.runs.get(pid, RunEvents(pid))
                if not self._check_run(run, f"ancestor {to_hex(pid)[:14]}"):
                    failed.append(to_hex(pid))
                todo.append(run)
        if walked:
            self.add(
                "lineage",
                not failed,
                f"{walked} ancestor(s) proven by the bundle"
                if not failed
                else "ancestor(s) not proven: " + ", ".join(failed),
            )

    def _statement(self, subject: RunEvents) -> None:
        statement = self.bundle["statement"]
        assert subject.started is not None and subject.finalized is not None
        manifest = _object(self.documents.get(bytes(subject.started["manifestDigest"]), b"{}"))
        metrics_digest = bytes(subject.finalized["metricsDigest"])
        metrics = _object(self.documents.get(metrics_digest, b"{}"))
        claimed = statement["subject"][0]
        expected = build_statement(
            run=subject,
            manifest=manifest,
            metrics=metrics,
            manifest_cid=str(Cid.from_digest(bytes(subject.started["manifestDigest"]), 0x55)),
            metrics_cid=str(Cid.from_digest(metrics_digest, 0x55)),
            parents=list(self.runs.values()),
            timestamps={n: as_int(h["timestamp"]) for n, h in self.headers.items()},
            chain_id=self.chain_id,
            registry=self.registry,
            subject_name=str(claimed.get("name")),
            subject_sha256=claimed.get("digest", {}).get("sha256"),
        )
        same = statement == expected
        self.add(
            "statement",
            same,
            "the Statement is what the proven logs and documents say"
            if same
            else "the Statement differs from what the proven logs and documents say: "
            + _first_difference(statement, expected),
        )
        sha = claimed.get("digest", {}).get("sha256")
        if sha is not None and self.sha256 is not None:
            self.add(
                "subject",
                sha == self.sha256,
                f"the file's sha256 is the Statement subject's ({claimed.get('name')})"
                if sha == self.sha256
                else f"the file's sha256 {self.sha256} is not the subject's {sha}",
            )

    def _signature(self, subject: RunEvents) -> None:
        """The DSSE envelope, if any: it must carry the bundle's Statement, and every
        signature must recover to the run's committer (proven by the logs)."""
        from ledger.bundle.dsse import read_envelope

        envelope = self.bundle.get("envelope")
        if envelope is None:
            self.add(
                "signature",
                True,
                "unsigned: the Statement carries no DSSE signature (the chain proofs stand alone)",
            )
            return
        assert subject.started is not None
        committer = checksum_address(str(subject.started["committer"]))
        try:
            if not isinstance(envelope, Mapping):
                raise InputError("the envelope is not a JSON object")
            statement, signatures = read_envelope(envelope)
        except InputError as exc:
            self.add("signature", False, f"bad DSSE envelope: {exc.message}")
            return
        if statement != self.bundle["statement"]:
            self.add(
                "signature",
                False,
                "the DSSE envelope signs another Statement than the bundle's: "
                + _first_difference(statement, self.bundle["statement"]),
            )
            return
        foreign = [s.signer for s in signatures if s.signer != committer]
        mislabelled = [
            s.keyid
            for s in signatures
            if s.keyid is not None and s.keyid.lower() != s.signer.lower()
        ]
        if foreign:
            self.add(
                "signature",
                False,
                f"the Statement is signed by {', '.join(foreign)}, not by the run's committer "
                f"{committer}",
            )
        elif mislabelled:
            self.add(
                "signature",
                False,
                f"a signature's keyid {', '.join(mislabelled)} is not the address it recovers to "
                f"({committer})",
            )
        else:
            self.add(
                "signature",
                True,
                f"the Statement is signed (DSSE) by the run's committer {committer}",
            )

    # -- a node, for what is after the bundle -------------------------------------

    def _rpc(self, url: str) -> None:
        from ledger.chain.rpc import JsonRpc

        name = f"rpc {url}"
        try:
            with JsonRpc(url) as rpc:
                chain_id = rpc.chain_id()
                if chain_id != self.chain_id:
                    self.add(name, False, f"is chain {chain_id}, the bundle's is {self.chain_id}")
                    return
                blocks = rpc.batch(
                    [("eth_getBlockByNumber", [hex(n), False]) for n in sorted(self.headers)]
                )
                forked = [
                    str(n)
                    for n, block in zip(sorted(self.headers), blocks, strict=True)
                    if block is None or block["hash"] != self.headers[n]["hash"]
                ]
                if forked:
                    self.add(name, False, f"block(s) {', '.join(forked)} are not on its chain")
                    return
                latest = trim_header(rpc("eth_getBlockByNumber", "latest", False))
                if header_hash(latest) != as_bytes(latest["hash"]):
                    self.add(name, False, "its latest header does not re-hash to its hash")
                    return
                runs = [r for r in self.runs if self.runs[r].started is not None]
                datasets = self._datasets(runs)
                keys = [to_hex(run_slots(r)[0]) for r in runs]
                keys += [to_hex(artifact_slot(d)) for d in datasets]
                state = rpc("eth_getProof", self.registry, keys, latest["number"])
                slots = self._proven_slots(state, latest)
        except ChainError as exc:
            self.add(name, False, f"unreachable or refused: {exc.message}")
            return
        except EvidenceError as exc:
            self.add(name, False, f"its proof does not check out: {exc.message}")
            return
        number = as_int(latest["number"])
        self.add(
            name,
            True,
            f"the bundle's {len(self.headers)} blocks are canonical; "
            f"state proven at block {number}",
        )
        for rid in runs:
            started = self.runs[rid].started
            assert started is not None
            slot = self._slot(slots.get(run_slots(rid)[0], b"\x00" * 32), started)
            if slot.revoked:
                self.add(
                    f"run {to_hex(rid)[:14]} not revoked",
                    False,
                    f"{to_hex(rid)} is revoked as of block {number} ({url})",
                )
        for digest, (cid, rid, key) in datasets.items():
            revoked_in = int.from_bytes(slots.get(artifact_slot(digest), b"\x00" * 32), "big")
            if revoked_in:
                self.add(
                    f"dataset {cid[:16]}… not revoked",
                    False,
                    f"dataset {cid} (data {key!r} of run {to_hex(rid)}) was revoked in block "
                    f"{revoked_in}, as of block {number} ({url})",
                )
        if datasets:
            self.add(
                f"datasets ({url})",
                True,
                f"{len(datasets)} dataset(s) of the lineage's manifests checked against "
                f"revocations at block {number}",
            )

    def _datasets(self, runs: Sequence[bytes]) -> dict[bytes, tuple[str, bytes, str]]:
        """The datasets (and parts) the bundle's manifests of ``runs`` name: digest ->
        (CID, the run naming it, its data key)."""
        from ledger.datasets import run_datasets

        found: dict[bytes, tuple[str, bytes, str]] = {}
        for rid in runs:
            started = self.runs[rid].started
            raw = self.documents.get(bytes(started["manifestDigest"])) if started else None
            manifest = _json(raw) if raw else None
            if not isinstance(manifest, dict):
                continue
            for ref in run_datasets(manifest):
                found.setdefault(bytes.fromhex(ref.digest[2:]), (ref.cid, rid, ref.key))
        return found


def _first_difference(got: Any, want: Any, path: str = "") -> str:
    if isinstance(got, dict) and isinstance(want, dict):
        for key in sorted(set(got) | set(want)):
            if got.get(key) != want.get(key):
                return _first_difference(got.get(key), want.get(key), f"{path}.{key}")
    if isinstance(got, list) and isinstance(want, list) and len(got) == len(want):
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            if a != b:
                return _first_difference(a, b, f"{path}[{i}]")
    return path.lstrip(".") or "(the whole Statement)"


def _json(data: bytes) -> Any:
    """A bundle document's JSON, or None where it is not JSON (malformed, or nested
    past Python's limit: a crafted bundle must get a verdict, not a traceback)."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def _object(data: bytes) -> dict[str, Any]:
    """A bundle document's JSON object; {} where it is none (the document checks
    above have said why)."""
    body = _json(data)
    return body if isinstance(body, dict) else {}
