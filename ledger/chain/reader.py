"""A read-only registry client over plain JSON-RPC: what ``ledger verify`` talks to.

Importing web3 costs more than a second of CPU, more than hashing a gigabyte
on two cores. Verification only reads (``eth_call``, ``eth_getLogs``), so it
uses ledger's own transport (:class:`~ledger.chain.rpc.JsonRpc`) and ABI codec
(:class:`~ledger.chain.abi.RegistryAbi`). It satisfies
:class:`~ledger.chain.records.RegistryView`; :class:`~ledger.chain.sender.RegistrySender`
extends it to send transactions. A test compares its answers with an
independent web3.py client on a real chain.

Cost does not grow with the chain on a registry 3: every lookup starts at a block
that contract storage names (the latest block recording a weights digest or a
tensor root; a run's start, latest and revocation blocks; its latest replay
attestation) and follows the previous-block links its events carry, one
single-block ``eth_getLogs`` per block that holds matching events. A registry 2
has no such pointers: it is read by scanning its logs from the deploy block
(:func:`~ledger.chain.logs.scan_logs` splits the range where a provider caps it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ledger.chain.abi import registry_abi
from ledger.chain.logs import learned_cap, scan_logs
from ledger.chain.records import (
    COMMITTER_ROLE,
    ZERO32,
    ArtifactRevocation,
    EventLookups,
    FinalRecord,
    RunRecord,
    RunStatus,
    WeightsRecord,
    check_chain_id,
    checksum_address,
    configured_registry,
    record_of,
)
from ledger.chain.rpc import JsonRpc, as_bytes, as_int
from ledger.config import Settings
from ledger.errors import ChainError, NotFoundError, RegistryNotDeployedError, RpcError
from ledger.hashing.merkle import CheckpointLeaf
from ledger.ids import RunId, resolve_run_id, run_id_prefix, to_hex

__all__ = ["RegistryReader", "ReplayAttestation"]

WEIGHTS_EVENTS = ("CheckpointCommitted", "RunFinalized")
RUN_CHAIN_EVENTS = ("RunStarted", "CheckpointCommitted", "RunFinalized", "RunFailed")
"""The events a run's ``previousRunBlock`` links chain (its revocation stands apart)."""

WIDE_ENOUGH = 1_000
"""A run's blocks read in one range query when no cap was learned for the endpoint
and the run spans at most this many (a range most providers allow; a refusal is
split by :func:`~ledger.chain.logs.scan_logs` anyway)."""

MAX_LINKS = 100_000
"""Blocks a walk along previous-block links may visit before it is taken for a loop
(links point strictly back, so only a broken node answers that many)."""


@dataclass(frozen=True)
class ReplayAttestation:
    """One ``ReplayAttested`` event: who replayed which steps of a run, with what outcome."""

    run_id: bytes
    attester: str
    from_step: int
    to_step: int
    reproduced: bool
    report_digest: bytes
    block_number: int
    tx_hash: str


class RegistryReader(EventLookups):
    """Read-only views and events of one deployed registry."""

    def __init__(
        self,
        rpc: JsonRpc,
        address: str,
        deploy_block: int = 0,
        *,
        version: str | None = None,
        memo: bool = False,
    ) -> None:
        """``memo``: remember, for this reader's life, what a chain that is not
        reorganised never changes (finished runs' blocks, a block's registry logs),
        so one command asks for each once. Off for long-lived readers, which must see
        a reorganised or reset chain."""
        self.rpc = rpc
        self.address = checksum_address(address)
        self.deploy_block = deploy_block
        self.abi = registry_abi()
        self._version = version
        self.memo = memo
        self._start_blocks: dict[bytes, int] = {}
        """Start blocks of runs seen (they never change once a run exists)."""
        self._ended: dict[bytes, RunRecord] = {}
        """Runs seen finalized or failed: their start and latest blocks are final."""
        self._blocks: dict[int, list[tuple[str, dict[str, Any]]]] = {}
        """Every decoded registry log of a block, for the single-block queries."""

    @classmethod
    def connect(cls, settings: Settings) -> RegistryReader:
        """The registry named by the settings; checks the chain id and that a registry
        answers there (its ``version()``, which reads need anyway). For one command:
        ``memo`` is on (a server turns it off, see :meth:`__init__`)."""
        address = configured_registry(settings)
        rpc = JsonRpc(settings.rpc_url)
        chain_id = rpc.chain_id()
        check_chain_id(settings, chain_id)
        reader = cls(rpc, address, settings.deploy_block or 0, memo=True)
        where = f"{address} on chain {chain_id} ({settings.rpc_url})"
        hint = "the chain may have been reset; run `ledger deploy` again"
        not_registry = RegistryNotDeployedError(
            f"the contract at {where} is not a ledger registry (it has no version())",
            hint="fix registry_address in config.json or LEDGER_REGISTRY, or run "
            "`ledger deploy` again",
        )
        try:
            data = reader._eth_call("version")
        except RpcError as exc:  # code that is not a registry reverts
            raise not_registry from exc
        if not data:  # no code at all answers nothing
            raise RegistryNotDeployedError(f"no contract at {where}", hint=hint)
        try:
            reader._version = str(reader._decode("version", data)[0])
        except ChainError as exc:
            raise not_registry from exc
        return reader

    # -- which registry ------------------------------------------------------------

    def version(self) -> str:
        """The registry's ``version()`` (asked once per reader); a
        :class:`~ledger.errors.RegistryNotDeployedError` when no code answers."""
        version = self._known_version()
        if version is None:
            raise RegistryNotDeployedError(
                f"no contract at {self.address} ({self.rpc.url})",
                hint="the chain may have been reset; run `ledger deploy` again",
            )
        return version

    def _known_version(self) -> str | None:
        """``version()``, or None (not remembered) while no code is at the address."""
        if self._version is None:
            data = self._eth_call("version")
            if not data:
                return None
            self._version = str(self._decode("version", data)[0])
        return self._version

    @property
    def has_lookups(self) -> bool:
        """Whether the registry stores block pointers (registry 3 and later), so
        reads need no scan of its logs. False while no code is at the address (a
        reset chain): its logs, then, are none, as a scan finds."""
        version = self._known_version()
        if version is None:
            return False
        major = version.split(".", 1)[0]
        return not major.isdigit() or int(major) >= 3

    # -- views ------------------------------------------------------------------

    def _call(self, name: str, *args: Any) -> list[Any]:
        return self._decode(name, self._eth_call(name, *args))

    def _eth_call(self, name: str, *args: Any) -> bytes:
        data = to_hex(self.abi.call(name, args))
        return as_bytes(self.rpc("eth_call", {"to": self.address, "data": data}, "latest"))

    def _decode(self, name: str, data: bytes, *, v2: bool = False) -> list[Any]:
        try:
            return self.abi.outputs(name, data, v2=v2)
        except ChainError as exc:
            raise ChainError(f"{exc.message} (registry at {self.address})") from exc

    def get_run(self, run_id: bytes) -> RunRecord:
        data = self._eth_call("getRun", run_id)
        # a static struct: seven words from registry 3, five from registry 2
        (raw,) = self._decode("getRun", data, v2=len(data) == 5 * 32)
        run = RunRecord.from_view(run_id, list(raw.values()))
        if self.memo and run.exists and run.start_block is not None:
            self._start_blocks[run_id] = run.start_block
            if run.status in (RunStatus.FINALIZED, RunStatus.FAILED):
                self._ended[run_id] = run
        return run

    def is_final_record(self, run_id: bytes, record: FinalRecord) -> bool:
        return bool(self._call("isFinalRecord", run_id, record.as_tuple())[0])

    def verify_checkpoint(
        self,
        run_id: bytes,
        record: FinalRecord,
        checkpoint: CheckpointLeaf,
        proof: Sequence[bytes],
    ) -> bool:
        leaf = (
            checkpoint.step,
            checkpoint.weights_digest,
            checkpoint.tensor_root,
            checkpoint.metrics_digest,
        )
        return bool(self._call("verifyCheckpoint", run_id, record.as_tuple(), leaf, list(proof))[0])

    def is_committer(self, account: str) -> bool:
        return bool(self._call("hasRole", COMMITTER_ROLE, account)[0])

    def resolve_run(self, text: str, *, field: str = "run id", exists: bool = False) -> RunId:
        """The run id ``text`` names: a full id, or a unique prefix of a run started on
        this registry (one ``eth_getLogs`` of the ``RunStarted`` events).

        With ``exists``, a full id of a run the registry does not know is a
        :class:`~ledger.errors.NotFoundError` too.
        """
        if run_id_prefix(text, field=field) is None:
            run_id = RunId.parse(text, field=field)
            if exists and not self.get_run(run_id).exists:
                raise NotFoundError(
                    f"{field}: no run {run_id} on the registry at {self.address}",
                    hint="`ledger runs` lists the recorded runs",
                )
            return run_id
        started = self._logs([self.abi.event_topics("RunStarted")])
        return resolve_run_id(text, (bytes(e["runId"]) for _, e in started), field=field)

    # -- lookups ------------------------------------------------------------------

    def has_revocations(self) -> bool:
        """Whether any run of the registry was ever revoked (one call on registry 3)."""
        if not self.has_lookups:
            return super().has_revocations()
        return int(self._call("revokedRunCount")[0]) > 0

    def artifact_revocation(self, digest: bytes) -> dict[str, Any] | None:
        """The ``ArtifactRevoked`` event of an artifact (e.g. a dataset by its CID
        digest), or None if it was not revoked: one call, plus one ``eth_getLogs``
        of one block when it was. Registry 2 revoked no artifacts."""
        if not self.has_lookups:
            return None
        block = int(self._call("artifactRevokedBlock", digest)[0])
        if block == 0:
            return None
        topics = [self.abi.event_topic("ArtifactRevoked"), to_hex(digest)]
        events = [e for _, e in self._logs_in(block, block, topics)]
        if not events:
            raise ChainError(
                f"the registry at {self.address} says artifact {to_hex(digest)} was revoked "
                f"in block {block}, but that block has no such event",
                hint="the node may be missing logs (a pruned or lagging node); try another RPC",
            )
        return events[-1]

    def replay_attestations(self, run_id: bytes) -> list[ReplayAttestation]:
        """Every replay attestation of a run, by anyone, oldest first: one call and
        one single-block ``eth_getLogs`` per block holding some (registry 3 only)."""
        if not self.has_lookups:
            return []
        head = int(self._call("latestReplayBlock", run_id)[0])
        topics = [self.abi.event_topic("ReplayAttested"), to_hex(run_id)]
        return [
            ReplayAttestation(
                run_id=bytes(e["runId"]),
                attester=str(e["attester"]),
                from_step=int(e["fromStep"]),
                to_step=int(e["toStep"]),
                reproduced=bool(e["reproduced"]),
                report_digest=bytes(e["reportDigest"]),
                block_number=int(e["blockNumber"]),
                tx_hash=str(e["transactionHash"]),
            )
            for _, e in self._walk(head, topics, "previousBlock")
        ]

    def children(self, run_id: bytes) -> list[dict[str, Any]]:
        """The ``RunStarted`` events of every run started with ``run_id`` as a parent,
        oldest first: on registry 3 one call and one single-block ``eth_getLogs`` per
        block that started some (a scan of every start on registry 2)."""
        started = self.abi.event_topic("RunStarted")
        if not self.has_lookups:
            events = [e for _, e in self._logs([self.abi.event_topics("RunStarted")])]
            return [e for e in events if any(bytes(p["runId"]) == run_id for p in e["parents"])]
        found: list[list[dict[str, Any]]] = []
        block, visits = int(self._call("latestChildBlock", run_id)[0]), 0
        while block > 0:
            visits += 1
            if visits > MAX_LINKS:
                raise ChainError(
                    f"the registry at {self.address} links more than {MAX_LINKS} blocks "
                    f"of children of run {to_hex(run_id)}",
                    hint="the RPC endpoint may be answering wrongly; try another one",
                )
            naming, links = [], []
            for _, event in self._logs_in(block, block, [started]):
                pairs = zip(event["parents"], event.get("previousChildBlocks", []), strict=False)
                mine = [int(link) for parent, link in pairs if bytes(parent["runId"]) == run_id]
                if mine:
                    naming.append(event)
                    links += mine
            if not naming:
                raise ChainError(
                    f"the registry at {self.address} points at block {block} for children "
                    f"of run {to_hex(run_id)} that it does not have there",
                    hint="the node may be missing logs (a pruned or lagging node, or a "
                    "chain reorganised under it); try again, or another RPC",
                )
            found.append(naming)
            following = min((link for link in links if link != block), default=0)
            if following >= block:
                raise ChainError(
                    f"the registry at {self.address} links block {block} forward to {following}",
                    hint="the RPC endpoint may be answering wrongly; try another one",
                )
            block = following
        return [event for events in reversed(found) for event in events]

    def started_at(self, run: RunRecord) -> int | None:
        """A run's start time: stored by registry 2, its start block's timestamp on
        registry 3 (one call); None for a run that does not exist."""
        if run.started_at is not None or not run.exists:
            return run.started_at
        block = self.rpc("eth_getBlockByNumber", hex(run.start_block or 0), False) or {}
        return as_int(block["timestamp"]) if "timestamp" in block else None

    # -- events -----------------------------------------------------------------

    def events(self, name: str, run_id: bytes) -> list[dict[str, Any]]:
        """Decoded events ``name`` of one run, oldest first.

        On registry 3 the run's stored blocks say where they are: ``RunStarted`` at
        its start block, ``RunFinalized``/``RunFailed`` at its latest block, its
        revocation at its own; checkpoints in the blocks between, read in one
        range query where the endpoint allows the range, else by following the
        run's links back from its latest block."""
        if not self.has_lookups:
            return [e for _, e in self._logs([self.abi.event_topics(name), to_hex(run_id)])]
        topics = [self.abi.event_topic(name), to_hex(run_id)]
        if name == "RunStarted":
            start = self._start_blocks.get(run_id)
            if start is None:
                run = self.get_run(run_id)
                if not run.exists:
                    return []
                start = run.start_block or 0
            return [e for _, e in self._logs_in(start, start, topics)]
        if name == "ReplayAttested":
            head = int(self._call("latestReplayBlock", run_id)[0])
            return [e for _, e in self._walk(head, topics, "previousBlock")]
        ended = self._ended.get(run_id) if name != "RunRevoked" else None
        run = ended if ended is not None else self.get_run(run_id)
        if not run.exists:
            return []
        start, last = run.start_block or 0, run.last_block or 0
        if name == "RunRevoked":
            block = run.revoked_block or 0
            return [e for _, e in self._logs_in(block, block, topics)] if block else []
        if name in ("RunFinalized", "RunFailed"):
            wanted = RunStatus.FINALIZED if name == "RunFinalized" else RunStatus.FAILED
            if run.status is not wanted:
                return []
            return [e for _, e in self._logs_in(last, last, topics)]
        if name == "CheckpointCommitted":
            return self._run_checkpoints(run_id, start, last)
        # any other event naming the run (none today): from its start to the head
        return [e for _, e in self._logs([self.abi.event_topics(name), to_hex(run_id)], start)]

    def _run_checkpoints(self, run_id: bytes, start: int, last: int) -> list[dict[str, Any]]:
        """A run's checkpoint events: one query over its blocks when the endpoint is
        known to allow that range (or the range is one block), else a walk along the
        run's links (one query per block with an event of the run)."""
        topics = [self.abi.event_topic("CheckpointCommitted"), to_hex(run_id)]
        cap = learned_cap(self.rpc.url)
        if last - start + 1 <= (cap or WIDE_ENOUGH):
            return [e for _, e in self._logs_in(start, last, topics)]
        chain = [[self.abi.event_topic(n) for n in RUN_CHAIN_EVENTS], to_hex(run_id)]
        walked = self._walk(last, chain, "previousRunBlock", stop=start)
        return [e for name, e in walked if name == "CheckpointCommitted"]

    def all_events(self, name: str) -> list[dict[str, Any]]:
        """Every event ``name`` of the registry, oldest first (a scan of its logs)."""
        return [event for _, event in self._logs([self.abi.event_topics(name)])]

    def _find_weights(self, value: bytes, *, topic_index: int) -> list[WeightsRecord]:
        topics: list[Any] = [[t for n in WEIGHTS_EVENTS for t in self.abi.event_topics(n)]]
        topics += [None] * (topic_index - 1) + [to_hex(value)]
        if not self.has_lookups:
            return [record_of(name, event) for name, event in self._logs(topics)]
        if topic_index == 3 and value == ZERO32:
            return []
        view, link = (
            ("latestWeightsBlock", "previousWeightsBlock")
            if topic_index == 2
            else ("latestTensorRootBlock", "previousTensorBlock")
        )
        head = int(self._call(view, value)[0])
        return [record_of(name, event) for name, event in self._walk(head, topics, link)]

    def _walk(
        self, head: int, topics: list[Any], link: str, *, stop: int = 0
    ) -> list[tuple[str, dict[str, Any]]]:
        """Events matching ``topics`` from block ``head`` back along ``link``, oldest
        first: one single-block query per block. In a block, the first event links
        to the previous block (later ones link to their own block). The walk ends at
        a zero link, or at block ``stop``."""
        found: list[list[tuple[str, dict[str, Any]]]] = []
        block, visits = head, 0
        while block > 0:
            visits += 1
            if visits > MAX_LINKS:
                raise ChainError(
                    f"the registry at {self.address} links more than {MAX_LINKS} blocks "
                    "back from one lookup",
                    hint="the RPC endpoint may be answering wrongly; try another one",
                )
            events = self._logs_in(block, block, topics)
            if not events:
                raise ChainError(
                    f"the registry at {self.address} points at block {block} for events "
                    "it does not have there",
                    hint="the node may be missing logs (a pruned or lagging node, or a "
                    "chain reorganised under it); try again, or another RPC",
                )
            found.append(events)
            if block <= stop:
                break
            earlier = [int(e[link]) for _, e in events if link in e and int(e[link]) != block]
            following = min(earlier, default=0)
            if following >= block:
                raise ChainError(
                    f"the registry at {self.address} links block {block} forward to {following}",
                    hint="the RPC endpoint may be answering wrongly; try another one",
                )
            block = following
        return [event for events in reversed(found) for event in events]

    def _logs_in(
        self, first: int, last: int, topics: list[Any]
    ) -> list[tuple[str, dict[str, Any]]]:
        """The registry's logs matching ``topics`` in blocks ``first`` to ``last``.

        With ``memo``, one block is asked for all its registry logs once, and each
        query of it filtered here (a block holds as many as its gas allows)."""
        if self.memo and first == last:
            if first not in self._blocks:
                self._blocks[first] = self._logs_in_range(first, first, [])
            return [e for e in self._blocks[first] if _matches(e, topics, self.abi)]
        return self._logs_in_range(first, last, topics)

    def _logs_in_range(
        self, first: int, last: int, topics: list[Any]
    ) -> list[tuple[str, dict[str, Any]]]:
        query = {"address": self.address, "topics": topics}
        chunks = scan_logs(self.rpc, query, first, last)
        decoded = (self.abi.decode_log(log) for _, logs in chunks for log in logs)
        return [event for event in decoded if event is not None]

    # -- artifacts (datasets) ---------------------------------------------------------

    ARTIFACT_BATCH = 200
    """``artifactRevokedBlock`` calls per JSON-RPC batch."""

    def artifact_revocations(self, digests: Sequence[bytes]) -> dict[bytes, ArtifactRevocation]:
        """The revocations of those of ``digests`` that the registry revoked.

        One batched ``eth_call`` of ``artifactRevokedBlock`` per
        :attr:`ARTIFACT_BATCH` digests, then, for each revoked one, one
        ``eth_getLogs`` of that single block for its ``ArtifactRevoked`` event
        (the reason): the cost grows with the digests asked and the revocations
        found, not with the chain. A registry older than 3.0.0 cannot revoke
        artifacts: nothing is revoked there.
        """
        wanted = list(dict.fromkeys(bytes(d) for d in digests))
        if not wanted or not self.has_lookups:
            return {}
        blocks: dict[bytes, int] = {}
        for i in range(0, len(wanted), self.ARTIFACT_BATCH):
            part = wanted[i : i + self.ARTIFACT_BATCH]
            calls = [
                (
                    "eth_call",
                    [
                        {
                            "to": self.address,
                            "data": to_hex(self.abi.call("artifactRevokedBlock", [d])),
                        },
                        "latest",
                    ],
                )
                for d in part
            ]
            for digest, answer in zip(part, self.rpc.batch(calls), strict=True):
                block = int(self.abi.outputs("artifactRevokedBlock", as_bytes(answer))[0])
                if block:
                    blocks[digest] = block
        topic = self.abi.event_topic("ArtifactRevoked")
        found: dict[bytes, ArtifactRevocation] = {}
        for digest, block in blocks.items():
            events = [e for _, e in self._logs_in(block, block, [topic, to_hex(digest)])]
            if events:
                event = events[-1]
                found[digest] = ArtifactRevocation(
                    digest,
                    block,
                    str(event["transactionHash"]),
                    checksum_address(str(event["revoker"])),
                    str(event["reason"]),
                )
            else:  # revoked on chain, but the node no longer serves that block's logs
                found[digest] = ArtifactRevocation(
                    digest, block, "", "", f"(the reason: its event in block {block} was not found)"
                )
        return found

    def _logs(
        self, topics: list[Any], start: int | None = None
    ) -> list[tuple[str, dict[str, Any]]]:
        """The registry's logs matching ``topics`` from block ``start`` (its deploy
        block by default) to the head, decoded, oldest first (one ``eth_getLogs``
        where the endpoint allows it, else range by range)."""
        query = {"address": self.address, "topics": topics}
        first = self.deploy_block if start is None else max(start, self.deploy_block)
        chunks = scan_logs(self.rpc, query, first)
        decoded = (self.abi.decode_log(log) for _, logs in chunks for log in logs)
        return [event for event in decoded if event is not None]


def _matches(event: tuple[str, dict[str, Any]], topics: list[Any], abi: Any) -> bool:
    """Whether a decoded log matches an ``eth_getLogs`` topic filter (a position is
    None, one ``0x`` value, or a list of alternatives)."""
    name, values = event
    item = abi.events[name]
    indexed = [str(p["name"]) for p in item["inputs"] if p.get("indexed")]
    words = [abi.event_topics(name), *([_word(values[n])] for n in indexed)]
    for position, wanted in enumerate(topics):
        if wanted is None:
            continue
        alternatives = [str(w).lower() for w in (wanted if isinstance(wanted, list) else [wanted])]
        if position >= len(words) or not any(w in alternatives for w in words[position]):
            return False
    return True


def _word(value: Any) -> str:
    """An indexed value as its topic: 32 bytes, ``0x`` hex."""
    if isinstance(value, bytes):
        return to_hex(value.rjust(32, b"\x00"))
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:  # an address
        return "0x" + value[2:].lower().rjust(64, "0")
    return to_hex(int(value).to_bytes(32, "big"))
