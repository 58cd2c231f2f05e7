"""A read-only registry client over plain JSON-RPC: what ``ledger verify`` talks to.

Importing web3 costs more than a second of CPU, more than hashing a gigabyte
on two cores. Verification only reads (``eth_call``, ``eth_getLogs``), so it
uses ledger's own transport (:class:`~ledger.chain.rpc.JsonRpc`) and ABI codec
(:class:`~ledger.chain.abi.RegistryAbi`). It satisfies
:class:`~ledger.chain.records.RegistryView`; :class:`~ledger.chain.sender.RegistrySender`
extends it to send transactions. A test compares its answers with an
independent web3.py client on a real chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ledger.chain.abi import registry_abi
from ledger.chain.logs import scan_logs
from ledger.chain.records import (
    COMMITTER_ROLE,
    EventLookups,
    FinalRecord,
    RunRecord,
    WeightsRecord,
    check_chain_id,
    checksum_address,
    configured_registry,
    record_of,
)
from ledger.chain.rpc import JsonRpc, as_bytes
from ledger.config import Settings
from ledger.errors import ChainError, NotFoundError, RegistryNotDeployedError
from ledger.hashing.merkle import CheckpointLeaf
from ledger.ids import RunId, resolve_run_id, run_id_prefix, to_hex

__all__ = ["RegistryReader"]


class RegistryReader(EventLookups):
    """Read-only views and events of one deployed registry."""

    def __init__(self, rpc: JsonRpc, address: str, deploy_block: int = 0) -> None:
        self.rpc = rpc
        self.address = checksum_address(address)
        self.deploy_block = deploy_block
        self.abi = registry_abi()

    @classmethod
    def connect(cls, settings: Settings) -> RegistryReader:
        """The registry named by the settings; checks the chain id and that code is there."""
        address = configured_registry(settings)
        rpc = JsonRpc(settings.rpc_url)
        chain_id = rpc.chain_id()
        check_chain_id(settings, chain_id)
        if rpc("eth_getCode", address, "latest") in (None, "0x", ""):
            raise RegistryNotDeployedError(
                f"no contract at {address} on chain {chain_id} ({settings.rpc_url})",
                hint="the chain may have been reset; run `ledger deploy` again",
            )
        return cls(rpc, address, settings.deploy_block or 0)

    # -- views ------------------------------------------------------------------

    def _call(self, name: str, *args: Any) -> list[Any]:
        data = to_hex(self.abi.call(name, args))
        result = self.rpc("eth_call", {"to": self.address, "data": data}, "latest")
        try:
            return self.abi.outputs(name, as_bytes(result))
        except ChainError as exc:
            raise ChainError(f"{exc.message} (registry at {self.address})") from exc

    def get_run(self, run_id: bytes) -> RunRecord:
        (raw,) = self._call("getRun", run_id)
        return RunRecord.from_view(run_id, list(raw.values()))

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
        started = self._logs([self.abi.event_topic("RunStarted")])
        return resolve_run_id(text, (bytes(e["runId"]) for _, e in started), field=field)

    # -- events -----------------------------------------------------------------

    def events(self, name: str, run_id: bytes) -> list[dict[str, Any]]:
        return [event for _, event in self._logs([self.abi.event_topic(name), to_hex(run_id)])]

    def all_events(self, name: str) -> list[dict[str, Any]]:
        """Every event ``name`` of the registry, oldest first (one ``eth_getLogs``)."""
        return [event for _, event in self._logs([self.abi.event_topic(name)])]

    def _find_weights(self, value: bytes, *, topic_index: int) -> list[WeightsRecord]:
        names = ("CheckpointCommitted", "RunFinalized")
        topics: list[Any] = [[self.abi.event_topic(n) for n in names]]
        topics += [None] * (topic_index - 1) + [to_hex(value)]
        return [record_of(name, event) for name, event in self._logs(topics)]

    def _logs(self, topics: list[Any]) -> list[tuple[str, dict[str, Any]]]:
        """The registry's logs matching ``topics``, decoded, oldest first (one
        ``eth_getLogs`` where the endpoint allows it, else range by range)."""
        query = {"address": self.address, "topics": topics}
        chunks = scan_logs(self.rpc, query, self.deploy_block)
        decoded = (self.abi.decode_log(log) for _, logs in chunks for log in logs)
        return [event for event in decoded if event is not None]
