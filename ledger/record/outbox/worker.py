"""The outbox worker: from journal entries to confirmed records on chain.

One pass (:meth:`Worker.run_once`) does, in order:

1. **store** every ``pending`` entry: put its manifest, or its weights file,
   tensor index and metrics document, in the store; the chain record it yields
   is saved with the entry (``stored``);
2. **check and reconcile**: every pass that has something for the chain first
   compares the chain with the journal in one batch request: its id and genesis
   block hash (a different chain: every confirmed entry is suspect), the hash of
   the newest block holding confirmed entries, and that the registry answers at
   its address (else ``eth_getCode`` tells "no contract" from "not the
   registry", and nothing is sent: :class:`RegistryNotDeployedError`, retried).
   The transport reconnects silently, so this is how a restarted chain or a
   reorg is noticed. When anything changed (and on first contact, after an
   outage, in ``ledger sync``, or when the registry refuses a run the journal
   holds as started) the block of every confirmed entry is checked; entries
   whose block hash changed or vanished are looked up on chain, confirmed again
   where they are, and recommitted where they are gone;
3. **recover** ``sent`` entries: a transaction mined deep enough confirms them
   (any of a stuck transaction's replacements: the journal keeps them all); an
   unmined one is rebroadcast from the saved bytes (same nonce, so mined at most
   once), or, when stuck (its max fee under the next block's base fee, or
   pending longer than :data:`STUCK_AFTER` with less than the tip the node now
   suggests), replaced by one with the same nonce and fees raised by at least
   :data:`~ledger.chain.sender.FEE_BUMP`; one whose nonce was taken by another
   transaction is looked up and requeued;
4. **send** the entries whose predecessors are all confirmed (or mined: the
   key's nonces keep its transactions in order, on any branch), batched per
   kind (``startRuns``, ``commitCheckpoints``, ``finalizeRuns``,
   ``markFailed``), saving each signed transaction before broadcasting it.

**Confirmation depth.** An entry is confirmed once its transaction's block has
:func:`~ledger.config.confirmation_depth` blocks on top of it (``LEDGER_CONFIRMATIONS``:
0 on a local dev chain, 12 elsewhere; the audit index waits as long) and that
block is still the chain's block at its height. Until then it stays ``sent``
with the block noted (:attr:`PassResult.deepening`); a transaction that leaves
the chain meanwhile is rebroadcast or looked for like any unmined one. A
confirmed entry whose block later leaves the chain (a reorg deeper than the
depth, a rollback, a reset) is noticed by step 2: it goes back to ``sent`` with
its saved transaction (rebroadcast, same nonce and hash, if that nonce is still
free: a record is never signed twice while its first transaction can still be
mined), else it is signed anew; a refusal meaning "already recorded, with this
content" (the old transaction mined after all) confirms it.

While the next block needs more per gas than ``LEDGER_MAX_FEE_GWEI``, or the
account that pays (the committer's, or the relayer's with ``LEDGER_RELAYER_KEY``)
has too little ETH, records stay in the outbox: one line when that starts, one
when they go out again.

A receipt confirms its entries only when it carries each one's registry event
from the configured address (a transaction to an address without code also
succeeds). A refusal meaning "already recorded with this content" confirms the
entry; the same id with other content fails it for good. Unreachable chains and stores
are retried with backoff; the user gets one line when that starts and one when
it ends. While the registry is missing (a chain reset after the run started),
every open entry waiting for the chain is noted with :data:`NO_REGISTRY` and
the reason, so that a waiting exit (:meth:`Outbox.flush`) sees from the journal
that waiting cannot help and stops.

This module is the passes alone: :func:`ledger.record.outbox.serve.serve` runs
them in a loop (on a thread, or in the worker process of
:mod:`ledger.record.outbox.process`), holding the data directory's
:class:`~ledger.record.outbox.lock.WorkerLock`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger.chain.records import FinalRecord, RunStatus, checksum_address
from ledger.chain.rpc import as_int
from ledger.config import Secret, Settings, confirmation_depth
from ledger.errors import (
    ChainError,
    ChainUnavailableError,
    ConfigError,
    FeeAboveCapError,
    InputError,
    InsufficientFundsError,
    LedgerError,
    NonceTooLowError,
    RegistryNotDeployedError,
    StoreError,
    StoreFullError,
    StoreUnavailableError,
    TransactionRevertedError,
    UnderpricedError,
)
from ledger.hashing.cid import Cid
from ledger.hashing.keccak import keccak256
from ledger.hashing.merkle import CheckpointLeaf, checkpoint_root
from ledger.ids import Digest32, Relation, RunId, to_hex
from ledger.record.outbox.journal import Entry, Journal, SavedTx
from ledger.store import ArtifactStore, open_store, synced_together

if TYPE_CHECKING:
    from ledger.chain.sender import Fees, Receipt
    from ledger.chain.sender import RegistrySender as Registry

BATCH_LIMIT = 100  # records per transaction (a commitCheckpoints of 100 is ~0.6M gas)
STORE_LIMIT = 256  # entries stored per pass, so sending interleaves with storing
STORE_THREADS = 8
STORE_INLINE = 16 << 20  # bytes of weights a pass beside training stores without a pool
LINGER = 2.0
RECEIPT_WAIT = 2.0  # per pass; an unmined transaction is looked at again next pass
STUCK_AFTER = 90.0  # s pending with less than the suggested tip before a replacement
NO_REGISTRY = "registry not deployed"
"""The prefix of an open entry's error while the registry is not at its address."""

_RETRYABLE = (
    ChainUnavailableError,
    RegistryNotDeployedError,
    StoreUnavailableError,
    StoreFullError,
)
# the chain is there but will not take the records yet: nothing to reconnect or recheck
_HELD = (FeeAboveCapError, InsufficientFundsError)
# store errors that clear up on their own (a node back, space freed): retried, not failed
_STORE_RETRYABLE = (StoreUnavailableError, StoreFullError)
_KIND_ORDER = ("start", "checkpoint", "finalize", "fail", "revoke")
_ALONE = ("fail", "revoke")  # one per transaction (the registry has no batch call for them)
_EVENT_OF = {
    "start": "RunStarted",
    "checkpoint": "CheckpointCommitted",
    "finalize": "RunFinalized",
    "fail": "RunFailed",
    "revoke": "RunRevoked",
}


def _stderr(line: str) -> None:
    # a closed pipe (``| head``) or no stderr loses the line; the journal still says it all
    with contextlib.suppress(OSError, AttributeError, ValueError):
        print(f"ledger: {line}", file=sys.stderr, flush=True)


@dataclass
class PassResult:
    """What one pass did."""

    stored: int = 0
    confirmed: int = 0
    recommitted: int = 0
    failed: int = 0
    deepening: int = 0  # entries mined, waiting for the confirmation depth
    waiting_on: str | None = None  # why open entries could not move (chain/store down)

    @property
    def moved(self) -> bool:
        return bool(self.stored or self.confirmed or self.recommitted or self.failed)


@dataclass
class Worker:
    """Moves journal entries to the chain; see the module docstring."""

    journal: Journal
    settings: Settings
    store: ArtifactStore | None = None
    say: Callable[[str], None] = _stderr
    receipt_wait: float = RECEIPT_WAIT  # seconds; an unmined transaction stays ``sent``
    linger: float = LINGER  # seconds a checkpoint may wait for others to share its batch
    urgent: bool = False  # set while someone waits (flush, sync): send at once
    secret: Secret | None = None  # the signing key, when resolved already (else from settings)
    stuck_after: float = STUCK_AFTER  # s a transaction may pend before it is replaced
    confirmations: int | None = None  # blocks on top of a record's; None: from the settings
    _registry: Any = None
    _reconcile: bool = True
    _everything: bool = False  # another chain: every confirmed entry is suspect
    _suspect: bool = False  # the registry may be gone: look at its code before sending
    _bad_code: bytes | None = None  # hash of code that took a call without recording it
    _identity: tuple[int, str] | None = None  # the chain's, saved once reconciled
    _outage: str | None = None

    def recheck(self) -> None:
        """Check confirmed records against the chain on the next pass."""
        self._reconcile = True

    # -- one pass -----------------------------------------------------------------

    def run_once(self) -> PassResult:
        result = PassResult()
        try:
            self._store_pending(result)
            if self._chain_work():
                registry = self._connect()
                missing = self._check_chain(registry)
                if self._reconcile:
                    self._reconcile_confirmed(registry, result)
                if missing is not None:
                    raise missing  # nothing is sent until the registry is there
                self._recover_sent(registry, result)
                self._send_ready(registry, result)
        except _RETRYABLE as exc:
            result.waiting_on = one_line(exc)
            if isinstance(exc, RegistryNotDeployedError):
                self._note_no_registry(exc)
            self._drop_connection()
        except _HELD as exc:
            result.waiting_on = one_line(exc)
            if self._outage is None:  # once per spike: the reason `ledger status` shows
                held = self.journal.entries(states=["stored"])
                self.journal.note_attempt([e.id for e in held], one_line(exc))
        except ConfigError as exc:
            result.waiting_on = one_line(exc)
        if result.moved:
            self.journal.checkpoint_wal()
        self._report_outage(result)
        return result

    def _note_no_registry(self, missing: RegistryNotDeployedError) -> None:
        """Note on each entry waiting for the chain that the registry is not there
        (a pass later than a flush's start tells it that waiting cannot help); an
        entry's own reason (e.g. a receipt without its event) is kept after the mark."""
        general = f"{NO_REGISTRY}: {one_line(missing)}"
        for entry in self.journal.entries(states=["stored", "sent"]):
            own = entry.error if entry.error and not entry.error.startswith(NO_REGISTRY) else None
            self.journal.note_attempt([entry.id], f"{NO_REGISTRY}: {own}" if own else general)

    def _report_outage(self, result: PassResult) -> None:
        open_entries = self.journal.open_count()
        if result.waiting_on and open_entries:
            if self._outage is None:
                self.say(
                    f"{result.waiting_on}; {open_entries} record(s) kept in the outbox, "
                    "retrying in the background"
                )
            self._outage = result.waiting_on
        elif self._outage is not None:
            if "LEDGER_MAX_FEE_GWEI" in self._outage:
                self.say("fees are under LEDGER_MAX_FEE_GWEI again; sending the held records")
            else:
                self.say("reachable again; sending the queued records")
            self._outage = None

    # -- 1. store -----------------------------------------------------------------

    def _store_pending(self, result: PassResult) -> None:
        """Store pending entries, up to STORE_LIMIT a pass: on one thread while
        training runs beside (threads would cost it more CPU than they save), on
        STORE_THREADS when someone waits or the files are large (copies, fsyncs
        and hashing overlap).

        A finalize is stored with the checkpoints before it; the Merkle root of
        their records is added once they are all stored (it stays pending while
        one of them does).
        """
        pending = self.journal.entries(states=["pending"])[:STORE_LIMIT]
        if not pending:
            return
        store = self._store()  # opened once, before the threads share it
        with synced_together(store):  # the store's folder: one fsync a pass
            if len(pending) > 1 and (
                self.urgent or sum(int(e.payload.get("size", 0)) for e in pending) > STORE_INLINE
            ):
                with ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="ledger-store") as pool:
                    outcomes = list(pool.map(self._try_record, pending))
            else:
                outcomes = [self._try_record(e) for e in pending]
        stored: list[tuple[int, dict[str, Any]]] = []
        finals: list[tuple[Entry, dict[str, Any]]] = []
        unavailable: StoreError | None = None
        waiting: list[int] = []
        for entry, outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, _STORE_RETRYABLE):
                unavailable = unavailable or outcome
                waiting.append(entry.id)
            elif isinstance(outcome, LedgerError):
                self.journal.mark_failed(entry.id, one_line(outcome))
                result.failed += 1
            elif entry.kind == "finalize":
                finals.append((entry, outcome))
            else:
                stored.append((entry.id, outcome))
        self.journal.mark_stored_many(stored)
        result.stored += len(stored)
        rooted = [(e.id, r) for e, r in finals if self._add_checkpoint_root(e, r)]
        self.journal.mark_stored_many(rooted)
        result.stored += len(rooted)
        if unavailable is not None:
            # kept pending; the reason is what `ledger status` and the run's exit report say
            self.journal.note_attempt(waiting, one_line(unavailable))
            raise unavailable

    def _add_checkpoint_root(self, final: Entry, record: dict[str, Any]) -> bool:
        """Add the root of the run's checkpoint records before ``final`` to its
        record; False while one of those checkpoints is not stored yet."""
        earlier = [
            e
            for e in self.journal.entries(run_id=final.run_id)
            if e.kind == "checkpoint" and e.id < final.id and e.state != "failed"
        ]
        if any(e.record is None for e in earlier):
            return False  # stored again next pass, when they are (the store keeps one copy)
        leaves = [_leaf(e.record) for e in earlier]
        record["checkpoint_root"] = checkpoint_root(leaves).hex()
        record["checkpoint_count"] = len(leaves)
        return True

    def _try_record(self, entry: Entry) -> dict[str, Any] | LedgerError:
        try:
            return self._build_record(entry)
        except (InputError, StoreError) as exc:
            return exc

    def _build_record(self, entry: Entry) -> dict[str, Any]:
        """Store what ``entry`` names; returns its chain record (a finalize's
        without the checkpoint root: see :meth:`_add_checkpoint_root`)."""
        from ledger.record.artifacts import store_weights

        store = self._store()
        payload = entry.payload
        if entry.kind == "start":
            manifest = payload["manifest"].encode()
            cid = store.put_bytes(manifest)
            return {"manifest_cid": str(cid), "manifest_digest": cid.digest.hex()}
        if entry.kind in _ALONE:
            return {"reason": payload["reason"]}
        path = Path(payload["path"])
        _check_unchanged(path, payload)
        metrics = payload["metrics"]  # checked at append; store_weights writes them canonically
        step = entry.step if entry.kind == "checkpoint" else None
        resume = payload.get("resume")
        if resume is not None:  # a replayable run's resume file, bound by the metrics document
            resume_path = Path(resume["path"])
            _check_unchanged(resume_path, resume)
            resume_cid = store.put_file(resume_path)
            _check_unchanged(resume_path, resume)
            described = {"cid": str(resume_cid), "bytes": resume["size"]}
            metrics = {**metrics, "resume": {**metrics.get("resume", {}), **described}}
        given = None
        if "tensors" in payload:  # hashed by the training process as it wrote the file
            from ledger.hashing.tensors import digest_from_index

            given = digest_from_index(payload["tensors"])
        weights, tensors, metrics_cid = store_weights(
            store, entry.run_id, path, metrics, step, tensors=given
        )
        _check_unchanged(path, payload)  # not rewritten while it was being stored
        return {
            "step": step,
            "file_cid": str(weights),
            "tensor_root": tensors.root.hex(),
            "metrics_cid": str(metrics_cid),
        }

    def _store(self) -> ArtifactStore:
        if self.store is None:
            self.store = open_store(self.settings)
        return self.store

    # -- chain connection -----------------------------------------------------------

    def _connect(self) -> Registry:
        if self._registry is None:
            from ledger.chain.sender import RegistrySender

            self._registry = RegistrySender.connect(self.settings, self.secret)
            if self.confirmations is None:
                self.confirmations = confirmation_depth(self.settings, self._registry.chain_id)
        registry: Registry = self._registry
        return registry

    def _drop_connection(self) -> None:
        if self._registry is not None:
            self._reconcile = True  # the chain may have been reset while away
        self._registry = None

    def _chain_work(self) -> bool:
        """Whether this pass has anything for the chain (else it leaves it alone)."""
        return self._reconcile or bool(self.journal.stored_by_kind()) or self.journal.has_sent()

    # -- 2. check and reconcile -------------------------------------------------------

    def _check_chain(self, registry: Registry) -> RegistryNotDeployedError | None:
        """Compare the chain with the journal (one batch request); see the module
        docstring. Returns the error to raise, once reconciled, when the registry
        is not at its address."""
        newest = self.journal.newest_confirmed_block(registry.address)
        version = to_hex(registry.abi.call("version", []))
        calls: list[tuple[str, Sequence[object]]] = [
            ("eth_chainId", []),
            ("eth_getBlockByNumber", ["0x0", False]),
            ("eth_call", [{"to": registry.address, "data": version}, "latest"]),
        ]
        if newest is not None:
            calls.append(("eth_getBlockByNumber", [hex(newest[0]), False]))
        answers = registry.rpc.batch(calls)
        chain_id = as_int(answers[0])
        if chain_id != registry.chain_id:
            raise ChainUnavailableError(
                f"the chain at {registry.rpc.url} is now chain {chain_id}, not {registry.chain_id}",
                hint="point LEDGER_RPC_URL at the chain the registry is on",
            )
        genesis = str((answers[1] or {}).get("hash", ""))
        known = self.journal.chain_identity()
        if known != (chain_id, genesis):
            self._identity = (chain_id, genesis)
            self._reconcile = True
            if known is not None:  # another chain: nothing confirmed is known to be on it
                self._everything = self._suspect = True
        if newest is not None:
            block = answers[3]
            if newest[1] != {str(block["hash"]) if block else None}:
                self._reconcile = True  # rolled back, reorganised or restarted
        if answers.error(2) is not None or answers[2] in (None, "", "0x"):
            self._suspect = True
        return self._registry_problem(registry) if self._suspect else None

    def _registry_problem(self, registry: Registry) -> RegistryNotDeployedError | None:
        code = registry.rpc("eth_getCode", registry.address, "latest")
        where = f"{registry.address} on chain {registry.chain_id} ({registry.rpc.url})"
        if code in (None, "", "0x"):
            return RegistryNotDeployedError(
                f"no contract at {where}: nothing is sent until the registry is there",
                hint="the chain may have been reset; run `ledger deploy` again (the same key "
                "on a fresh chain deploys to the same address), or fix registry_address",
            )
        if keccak256(str(code).encode()) == self._bad_code:
            return RegistryNotDeployedError(
                f"the contract at {where} is not the registry: it took a transaction "
                "without recording it; nothing more is sent to it",
                hint="fix registry_address in config.json (or LEDGER_REGISTRY), "
                "or run `ledger deploy`",
            )
        self._suspect = False
        return None

    def _not_recorded(self, registry: Registry, kind: str, tx_hash: str) -> None:
        """A mined transaction whose receipt lacks its records' events: remember the
        code that took it, so nothing more is sent to it; raises."""
        code = registry.rpc("eth_getCode", registry.address, "latest")
        self._bad_code = keccak256(str(code).encode()) if code not in (None, "", "0x") else None
        self._suspect = True
        raise self._registry_problem(registry) or RegistryNotDeployedError(
            f"transaction {tx_hash} succeeded but carries no {_EVENT_OF[kind]} event of "
            f"the registry at {registry.address}"
        )

    def _reconcile_confirmed(self, registry: Registry, result: PassResult) -> None:
        """Check the block of every confirmed entry (every entry, on another chain);
        look up those whose block changed or vanished, and recommit what is gone."""
        here = registry.address
        stale: list[tuple[int, str]] = []
        if not self._everything:
            recorded = self.journal.confirmed_block_hashes(here)
            now = registry.block_hashes([n for n, _ in recorded if n >= 0])
            stale = [(n, h) for n, h in recorded if n < 0 or now.get(n) != h]
        suspects = self.journal.confirmed_elsewhere(here, stale, everything=self._everything)
        events = _Events(registry)
        lost: list[Entry] = []
        for entry in suspects:
            found = self._find_on_chain(registry, entry, events)
            if found is None:
                lost.append(entry)
            else:
                self._confirm(registry, [entry], found[0], found[1], None, note=entry.note)
        if lost:
            self._send_again(lost)
            result.recommitted += len(lost)
            self.say(
                f"{len(lost)} confirmed record(s) are no longer on chain (reset, restarted "
                "or reorganised); recommitting them from the outbox"
            )
        if self._identity is not None:
            self.journal.set_chain_identity(*self._identity)
            self._identity = None
        self._reconcile = self._everything = False

    def _send_again(self, lost: list[Entry]) -> None:
        """Lost records back in line: with their saved transaction where there is one
        (recovery rebroadcasts its bytes if its nonce is still free), else to be signed."""
        saved = {
            e.tx_hash for e in lost if e.tx_hash and self.journal.saved_tx(e.tx_hash) is not None
        }
        self.journal.resend([e.id for e in lost if e.tx_hash in saved])
        self.journal.requeue([e.id for e in lost if e.tx_hash not in saved], recommit=True)

    def _find_on_chain(
        self, registry: Registry, entry: Entry, cache: _Events | None = None
    ) -> tuple[int, str] | None:
        """(block number, tx hash) of the event that records ``entry``, if any."""
        run_id = RunId.parse(entry.run_id, field="journal run_id")
        record = entry.record or {}
        lookup = cache or _Events(registry)
        if entry.kind in ("start", "fail", "revoke"):
            events = lookup(_EVENT_OF[entry.kind], run_id)
        elif entry.kind == "checkpoint":
            leaf = _leaf(record)
            events = [
                e
                for e in lookup("CheckpointCommitted", run_id)
                if int(e["step"]) == leaf.step
                and bytes(e["weightsDigest"]) == leaf.weights_digest
                and bytes(e["tensorRoot"]) == leaf.tensor_root
                and bytes(e["metricsDigest"]) == leaf.metrics_digest
            ]
        else:
            final = _final(record)
            events = [
                e
                for e in lookup("RunFinalized", run_id)
                if bytes(e["weightsDigest"]) == final.weights_digest
                and bytes(e["metricsDigest"]) == final.metrics_digest
                and bytes(e["checkpointRoot"]) == final.checkpoint_root
            ]
        if not events:
            return None
        return int(events[0]["blockNumber"]), str(events[0]["transactionHash"])

    def _confirm(
        self,
        registry: Registry,
        entries: Sequence[Entry],
        block_number: int,
        tx_hash: str,
        result: PassResult | None,
        *,
        block_hash: str | None = None,
        note: str | None = None,
    ) -> None:
        """Confirm ``entries``, recorded by ``tx_hash`` in block ``block_number``
        (``block_hash``: the receipt's), once that block has the confirmation depth
        on top of it and is still the chain's block at its height. Until then they
        stay ``sent`` with the block noted (counted in ``result.deepening``); a block
        the chain no longer has leaves them ``sent``, unmined, for recovery to look at."""
        ids = [e.id for e in entries]
        depth = self.confirmations or 0
        if depth == 0:  # a dev chain: the receipt's block is the head, nothing to wait for
            canonical: str | None = block_hash or registry.block_hash(block_number)
            deep = True
        else:
            head, canonical = registry.head_and_hash(block_number)
            deep = head - block_number >= depth
        if canonical is None or (block_hash is not None and canonical != block_hash):
            # reorganised between the receipt and now: as if never mined
            self.journal.mark_mined(ids, block_number=None, block_hash=None, tx_hash=tx_hash)
            return
        if not deep:
            mined = (
                f"mined in block {block_number}, waiting for {depth} confirmations "
                f"({max(0, head - block_number)} so far)"
            )
            self.journal.mark_mined(
                ids, block_number=block_number, block_hash=canonical, tx_hash=tx_hash, note=mined
            )
            if result is not None:
                result.deepening += len(ids)
            return
        self.journal.mark_confirmed(
            ids,
            block_number=block_number,
            block_hash=canonical,
            registry=registry.address,
            tx_hash=tx_hash,
            note=note,
        )
        if result is not None:
            result.confirmed += len(ids)

    # -- 3. recover sent ------------------------------------------------------------

    def _recover_sent(self, registry: Registry, result: PassResult) -> None:
        by_tx: dict[str, list[Entry]] = {}
        for entry in self.journal.entries(states=["sent"]):
            by_tx.setdefault(entry.tx_hash or "", []).append(entry)
        for tx_hash, entries in by_tx.items():
            family = self.journal.tx_family(tx_hash) if tx_hash else []
            saved = family[-1] if family else None
            tx_hash, receipt = _mined_of(registry, tx_hash, family)
            # still next in line: send the same bytes again (same nonce, same hash), or
            # a replacement with higher fees when it is stuck
            # (a relayed call that ran elsewhere, copied by someone, would only revert:
            # not sent again, whatever is on chain decides)
            if (
                receipt is None
                and saved is not None
                and saved.nonce == registry.mined_nonce(saved.sender)
                and not registry.signed_call_used(saved.raw)
            ):
                tx_hash, receipt = self._unstick(registry, saved, entries)
                if receipt is None:
                    if any(e.block_number is not None for e in entries):  # left the chain
                        self.journal.mark_mined(
                            [e.id for e in entries], block_number=None, block_hash=None
                        )
                    continue  # still not mined; the next pass looks again
            if receipt is not None and receipt.ok and _records_all(registry, receipt, entries):
                self._confirm(
                    registry,
                    entries,
                    receipt.block_number,
                    tx_hash,
                    result,
                    block_hash=receipt.block_hash,
                )
                continue
            # never mined (its nonce went to another transaction, or the chain was
            # reset), mined and reverted, or mined without recording them (no
            # registry at the address then): whatever is on chain now decides
            for entry in entries:
                found = self._find_on_chain(registry, entry)
                if found is not None:
                    self._confirm(registry, [entry], *found, result)
                else:
                    self.journal.requeue([entry.id], recommit=False)

    def _unstick(
        self, registry: Registry, saved: SavedTx, entries: list[Entry]
    ) -> tuple[str, Receipt | None]:
        """Rebroadcast ``saved`` (the newest of its family) and wait for it, or, when it
        is stuck, replace it: the same calls, the same nonce, fees raised by at least
        FEE_BUMP (a relayed call is signed again, with the same contract nonce: it
        was not used). Returns the hash waited for and its receipt, if mined."""
        from ledger.chain.sender import Fees

        try:
            fees: Fees | None = Fees.of(saved.raw)
        except ValueError:
            fees = None  # not a transaction of ours to raise: only rebroadcast it
        stuck = False
        if fees is not None:
            base, tip = registry.fee_market()
            # under the base fee it cannot be mined; past stuck_after with less than the
            # tip the node suggests now, it waits behind better paying ones (with the
            # tip, waiting longer is the network's doing: no raise, so no fee creep)
            stuck = fees.max_fee < base or (
                time.time() - saved.created_at > self.stuck_after and fees.priority < tip
            )
        if not stuck:
            try:
                registry.broadcast(saved.raw)
            except UnderpricedError:
                stuck = fees is not None  # the node wants more than it offers now
            except NonceTooLowError:
                pass  # mined meanwhile: the next pass finds it
        if stuck and fees is not None:
            replaced = self._replace(registry, saved, fees, entries)
            if replaced is not None:
                return replaced, self._wait(registry, replaced)
            with contextlib.suppress(NonceTooLowError, UnderpricedError):
                registry.broadcast(saved.raw)  # refused as a call: settled on chain below
        return saved.tx_hash, self._wait(registry, saved.tx_hash)

    def _replace(
        self, registry: Registry, saved: SavedTx, fees: Fees, entries: list[Entry]
    ) -> str | None:
        """Sign, save and send the replacement of ``saved``; its hash, or None when the
        registry refuses the calls now (whatever is on chain then decides). Raises
        FeeAboveCapError when the raise would pass the cap (``saved`` stays out)."""
        kinds = {e.kind for e in entries}
        if len(kinds) != 1:
            return None
        try:
            data = registry.batch_call(kinds.pop(), [_chain_item(e) for e in entries])
            prepared = registry.prepare(data, nonce=saved.nonce, at_least=fees.bumped())
        except TransactionRevertedError:
            return None
        if prepared.sender.lower() != saved.sender.lower():
            return None  # another payer now (the relayer key changed): only rebroadcast
        replacement = SavedTx(
            prepared.tx_hash, prepared.raw, prepared.sender, prepared.nonce, prepared.chain_id
        )
        self.journal.save_replacement([e.id for e in entries], replacement, saved.tx_hash)
        self.say(
            f"transaction {saved.tx_hash} is stuck ({fees}); replaced by "
            f"{prepared.tx_hash} ({prepared.fees}), same nonce {saved.nonce}"
        )
        with contextlib.suppress(NonceTooLowError, UnderpricedError):
            # mined meanwhile, or the node keeps the other: the family decides
            registry.broadcast(prepared.raw)
        return prepared.tx_hash

    # -- 4. send ----------------------------------------------------------------------

    def _send_ready(self, registry: Registry, result: PassResult) -> None:
        if self._only_lingering():
            return
        lingering: set[str] = set()
        while True:
            ready = [e for e in self._own(self._ready(), registry) if e.kind not in lingering]
            if not ready:
                return
            kind = min((e.kind for e in ready), key=_KIND_ORDER.index)
            batch = [e for e in ready if e.kind == kind][: 1 if kind in _ALONE else BATCH_LIMIT]
            if kind == "checkpoint" and self._lingers(batch):
                lingering.add(kind)  # let more checkpoints join this batch; others go on
                continue
            before = result.confirmed + result.failed + result.deepening
            self._send_batch(registry, kind, batch, result)
            if result.confirmed + result.failed + result.deepening == before:
                return  # nothing moved (e.g. a parent not on chain yet): next pass

    def _own(self, ready: list[Entry], registry: Registry) -> list[Entry]:
        """The entries of runs this worker's key started (or will start).

        A run's id is derived from its committer, and the registry takes a run's
        records from its committer alone: another key's worker (a resident one
        of other settings, ``ledger sync`` with another key) leaves them in the
        journal for a worker with that key.
        """
        committers = self.journal.run_committers({e.run_id for e in ready})
        mine = registry.signer.address.lower()
        return [
            e
            for e in ready
            if committers.get(e.run_id, mine).lower() == mine
            # a revocation: its committer, or the key that revoked (an admin)
            or (e.kind == "revoke" and str(e.payload.get("revoker", "")).lower() == mine)
        ]

    def _only_lingering(self) -> bool:
        """Whether all there is to send is checkpoints still waiting for others to
        share their transaction: a pass beside training (one per checkpoint) then
        reads no entry."""
        stored = self.journal.stored_by_kind()
        if self.urgent or set(stored) - {"checkpoint"}:
            return False
        count, oldest = stored.get("checkpoint", (0, 0.0))
        return count == 0 or self._waits_for_more(count, oldest)

    def _lingers(self, batch: list[Entry]) -> bool:
        return self._waits_for_more(len(batch), min(e.created_at for e in batch))

    def _waits_for_more(self, count: int, oldest: float) -> bool:
        """Whether ``count`` checkpoints, the oldest appended at ``oldest``, should
        wait for more to share their transaction (fewer transactions, less gas and
        less CPU beside training): not when full, urgent, or old enough."""
        if self.urgent or count >= BATCH_LIMIT:
            return False
        return time.time() - oldest < self.linger

    def _ready(self) -> list[Entry]:
        """Per run, the stored entries next in line: a start alone, or a run of
        stored entries of one kind whose earlier entries are all confirmed or
        mined (waiting for the confirmation depth: a key's nonces keep its
        transactions in order on every branch, so a reorg that drops a run's start
        drops what followed it too). A start waits while a parent run in the
        journal is not started (mined) yet."""
        entries = [
            e
            for e in self.journal.entries(states=["pending", "stored", "sent", "failed"])
            if not (e.state == "sent" and e.block_number is not None)  # mined
        ]
        starts_open = {e.run_id for e in entries if e.kind == "start" and e.state != "failed"}
        failed_starts = {e.run_id for e in entries if e.kind == "start" and e.state == "failed"}
        head_kind: dict[str, str | None] = {}  # run -> kind being taken, None once blocked
        ready: list[Entry] = []
        for entry in entries:
            if entry.state == "failed":
                continue
            if entry.kind != "start" and entry.run_id in failed_starts:
                self.journal.mark_failed(entry.id, f"the start of run {entry.run_id} failed")
                continue
            taking = head_kind.get(entry.run_id, "")
            if taking is None or (taking and taking != entry.kind) or entry.state != "stored":
                head_kind[entry.run_id] = None
                continue
            if entry.kind == "start":
                head_kind[entry.run_id] = None  # nothing of a run goes with its start
                parents = [p[0] for p in entry.payload.get("parents", [])]
                if any(p in starts_open for p in parents):
                    continue
            else:
                head_kind[entry.run_id] = entry.kind
            ready.append(entry)
        return ready

    def _send_batch(
        self, registry: Registry, kind: str, batch: list[Entry], result: PassResult
    ) -> None:
        while batch:
            items = [_chain_item(e) for e in batch]
            try:
                # no nonce given: the pending one is asked each time, with the gas estimate
                # and fees (one request); a rolled-back or reset chain rolls nonces back
                # too, and this worker is the data directory's only sender
                prepared = registry.prepare(registry.batch_call(kind, items))
            except TransactionRevertedError as exc:
                batch = self._refused(registry, kind, batch, exc, result)
                continue
            saved = SavedTx(
                prepared.tx_hash, prepared.raw, prepared.sender, prepared.nonce, prepared.chain_id
            )
            self.journal.save_sent([e.id for e in batch], saved)
            try:
                registry.broadcast(saved.raw)
            except NonceTooLowError:
                self.journal.requeue([e.id for e in batch], recommit=False)
                continue
            except (UnderpricedError, InsufficientFundsError) as exc:
                # the node did not take it: back to stored, signed again next pass
                self.journal.requeue([e.id for e in batch], recommit=False, error=one_line(exc))
                if isinstance(exc, InsufficientFundsError):
                    raise
                return
            receipt = self._wait(registry, saved.tx_hash)
            if receipt is None:
                return  # stays sent; recovered next pass
            if not receipt.ok:
                # reverted: a record may be on chain all the same (a relayed call that a
                # copy from the mempool ran first): what is there is confirmed, not resent
                left = []
                for entry in batch:
                    found = self._find_on_chain(registry, entry)
                    if found is None:
                        left.append(entry.id)
                    else:
                        self._confirm(registry, [entry], *found, result)
                self.journal.requeue(
                    left, recommit=False, error=f"transaction {saved.tx_hash} reverted on chain"
                )
                return
            if not _records_all(registry, receipt, batch):
                self.journal.requeue(
                    [e.id for e in batch],
                    recommit=False,
                    error=f"transaction {saved.tx_hash} recorded nothing (no registry event)",
                )
                self._not_recorded(registry, kind, saved.tx_hash)  # raises
            self._confirm(
                registry,
                batch,
                receipt.block_number,
                saved.tx_hash,
                result,
                block_hash=receipt.block_hash,
            )
            return

    def _refused(
        self,
        registry: Registry,
        kind: str,
        batch: list[Entry],
        exc: TransactionRevertedError,
        result: PassResult,
    ) -> list[Entry]:
        """Settle the entries a refusal names; returns the rest of the batch to retry."""
        name, args = exc.error_name, exc.error_args
        named = bytes(args[0]) if args and isinstance(args[0], bytes) else None
        hit = [e for e in batch if named is not None and e.run_id == to_hex(named)]
        rest = [e for e in batch if e not in hit]
        if name == "RegistryUnknownParent":
            for entry in batch:
                if any(p[0] == to_hex(named or b"") for p in entry.payload.get("parents", [])):
                    self.journal.note_attempt(
                        [entry.id], f"{exc}: the parent run is not on chain yet"
                    )
                    rest = [e for e in rest if e.id != entry.id]
            return rest if len(rest) < len(batch) else []
        if name == "RegistryUnknownRun":
            self._reconcile = True  # the journal holds the run as started: the chain lost it
            self.journal.note_attempt([e.id for e in hit], f"{exc}: the run is not on chain (yet)")
            return []
        if name == "RegistryNotAllowedToRevoke":
            for entry in hit:
                self.journal.mark_failed(
                    entry.id,
                    f"{exc}: only the run's committer or an admin may revoke it; "
                    "run `ledger sync --retry-failed` with that key",
                )
                result.failed += 1
            return rest
        if not hit:
            if len(batch) == 1:
                self.journal.mark_failed(batch[0].id, str(exc))
                result.failed += 1
                return []
            for entry in batch:  # isolate the refused one
                self._send_batch(registry, kind, [entry], result)
            return []
        for entry in hit:
            found = self._already_recorded(registry, entry, name)
            if found is not None:
                self._confirm(registry, [entry], *found, result, note="already on chain")
            else:
                self.journal.mark_failed(
                    entry.id, f"{exc}; the chain holds other content under this run id"
                )
                result.failed += 1
        return rest

    def _already_recorded(
        self, registry: Registry, entry: Entry, error_name: str
    ) -> tuple[int, str] | None:
        """Whether a refusal means "recorded already, with this content"."""
        run_id = RunId.parse(entry.run_id, field="journal run_id")
        if entry.kind == "start" and error_name == "RegistryRunExists":
            committer = entry.payload.get("committer", "")
            if registry.get_run(run_id).committer != checksum_address(committer):
                return None
            return self._find_on_chain(registry, entry)
        if entry.kind == "revoke" and error_name == "RegistryRunRevoked":
            return self._find_on_chain(registry, entry)
        if error_name == "RegistryRunNotRunning":
            status = registry.get_run(run_id).status
            if entry.kind == "finalize" and status == RunStatus.FINALIZED:
                return self._find_on_chain(registry, entry)
            if entry.kind == "fail" and status == RunStatus.FAILED:
                return self._find_on_chain(registry, entry)
        return None

    # -- transactions -----------------------------------------------------------------

    def _wait(self, registry: Registry, tx_hash: str) -> Receipt | None:
        return wait_for_receipt(registry, tx_hash, self.receipt_wait)


def _mined_of(
    registry: Registry, tx_hash: str, family: Sequence[SavedTx]
) -> tuple[str, Receipt | None]:
    """The hash and receipt of whichever of a family of replacements is mined (at most
    one is: they share a nonce); ``tx_hash`` and None while none is."""
    for saved in reversed(family) if family else ():
        receipt = registry.receipt(saved.tx_hash)
        if receipt is not None:
            return saved.tx_hash, receipt
    if not family and tx_hash:
        return tx_hash, registry.receipt(tx_hash)
    return tx_hash, None


def wait_for_receipt(registry: Registry, tx_hash: str, timeout: float) -> Receipt | None:
    """The receipt of a broadcast transaction, or None if it is not mined within
    ``timeout`` seconds (:meth:`~ledger.chain.sender.RegistrySender.wait_for_receipt`)."""
    return registry.wait_for_receipt(tx_hash, timeout)


class _Events:
    """A run's events of one name, looked up once per reconcile (a run's thousand
    checkpoints are one ``eth_getLogs``, not a thousand)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._found: dict[tuple[str, bytes], list[dict[str, Any]]] = {}

    def __call__(self, name: str, run_id: bytes) -> list[dict[str, Any]]:
        key = (name, bytes(run_id))
        if key not in self._found:
            self._found[key] = self.registry.events(name, run_id)
        return self._found[key]


def _records_all(registry: Registry, receipt: Receipt, entries: Sequence[Entry]) -> bool:
    """Whether the receipt carries, for each entry, its event from the registry's
    address (a checkpoint's for its step): status 1 alone proves nothing."""
    found: set[tuple[str, str, int | None]] = set()
    for log in receipt.logs:
        if str(log.get("address", "")).lower() != registry.address.lower():
            continue
        try:
            decoded = registry.abi.decode_log(log)
        except ChainError:
            continue
        if decoded is None:
            continue
        name, event = decoded
        step = int(event["step"]) if name == "CheckpointCommitted" else None
        found.add((name, to_hex(bytes(event["runId"])).lower(), step))
    for entry in entries:
        step = int((entry.record or {}).get("step", 0)) if entry.kind == "checkpoint" else None
        if (_EVENT_OF[entry.kind], entry.run_id.lower(), step) not in found:
            return False
    return True


# -- records as the chain takes them ----------------------------------------------------


def _leaf(record: dict[str, Any] | None) -> CheckpointLeaf:
    assert record is not None
    return CheckpointLeaf(
        int(record.get("step", 0)),
        Cid.parse(record["file_cid"]).digest,
        Digest32.parse(record["tensor_root"], field="tensor_root"),
        Cid.parse(record["metrics_cid"]).digest,
    )


def _final(record: dict[str, Any]) -> FinalRecord:
    return FinalRecord(
        Cid.parse(record["file_cid"]).digest,
        Digest32.parse(record["tensor_root"], field="tensor_root"),
        Cid.parse(record["metrics_cid"]).digest,
        Digest32.parse(record["checkpoint_root"], field="checkpoint_root"),
        int(record["checkpoint_count"]),
    )


def _chain_item(entry: Entry) -> tuple[Any, Any]:
    record = entry.record or {}
    run_id = RunId.parse(entry.run_id, field="journal run_id")
    if entry.kind == "start":
        parents = [
            (RunId.parse(p, field="parent run_id"), Relation(int(r)))
            for p, r in entry.payload.get("parents", [])
        ]
        return Digest32.parse(record["manifest_digest"], field="manifest_digest"), parents
    if entry.kind == "checkpoint":
        return run_id, _leaf(record)
    if entry.kind == "finalize":
        return run_id, _final(record)
    return run_id, str(record["reason"])[:500]


def one_line(exc: LedgerError) -> str:
    """An error as one line of text: its message, and its hint in parentheses."""
    return f"{exc.message} ({exc.hint})" if exc.hint else exc.message


def path_status(path: Path) -> tuple[int, int]:
    """A weights file's (size, mtime_ns); a checkpoint folder's (bytes of its files,
    the latest mtime_ns of the folder, its sub-folders and files): what tells that
    it changed after it was handed over. Raises FileNotFoundError."""
    info = path.stat()
    if not os.path.isdir(path):
        return info.st_size, info.st_mtime_ns
    size, latest = 0, info.st_mtime_ns
    for folder, _, names in os.walk(path):
        latest = max(latest, os.stat(folder).st_mtime_ns)
        for name in names:
            entry = os.lstat(os.path.join(folder, name))
            size += entry.st_size
            latest = max(latest, entry.st_mtime_ns)
    return size, latest


def _check_unchanged(path: Path, payload: dict[str, Any]) -> None:
    try:
        status = path_status(path)
    except FileNotFoundError as exc:
        raise InputError(
            f"{path} was removed before the outbox stored it",
            hint="keep checkpoint files until `ledger status` shows them confirmed",
        ) from exc
    if status != (payload["size"], payload["mtime_ns"]):
        raise InputError(
            f"{path} changed after it was handed to the outbox (size or modification time)",
            hint="write each checkpoint to a new file; ledger records what was handed over",
        )


__all__ = ["PassResult", "Worker", "one_line", "path_status", "wait_for_receipt"]
