"""A read-only registry client over plain JSON-RPC: what ``ledger verify`` talks to.

Importing web3 costs more than a second of CPU, more than hashing a gigabyte
on two cores. Verification only reads (``eth_call``, ``eth_getLogs``), so it
uses this client instead: the standard library's HTTP, the committed ABI and
:mod:`ledger.chain._abi`. It satisfies
:class:`~ledger.chain.records.RegistryView`, like the web3
:class:`~ledger.chain.registry.Registry` (which signs and sends transactions),
and answers the same; a test compares the two on a real chain.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from ledger.chain import _abi
from ledger.chain.compiler import load_artifact
from ledger.chain.records import (
    COMMITTER_ROLE,
    ZERO32,
    RunRecord,
    RunStatus,
    WeightsRecord,
    checksum_address,
)
from ledger.config import Settings
from ledger.errors import ChainError, ChainUnavailableError, ConfigError, RegistryNotDeployedError

TIMEOUT = 10.0


class JsonRpc:
    """Blocking JSON-RPC over HTTP(S)."""

    def __init__(self, url: str, timeout: float = TIMEOUT) -> None:
        self.url = url
        self.timeout = timeout
        self._id = 0

    def __call__(self, method: str, *params: object) -> Any:
        self._id += 1
        body = json.dumps({"jsonrpc": "2.0", "id": self._id, "method": method, "params": params})
        request = urllib.request.Request(
            self.url, data=body.encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.loads(response.read())
        except (urllib.error.URLError, OSError, json.JSONDecodeError, ValueError) as exc:
            raise ChainUnavailableError(
                f"no chain answers at {self.url} ({method}: {exc})",
                hint="start one with `ledger chain up`, or set LEDGER_RPC_URL",
            ) from exc
        if not isinstance(answer, dict):
            raise ChainError(f"{method} at {self.url}: the answer is not a JSON-RPC response")
        if "error" in answer:
            raise ChainError(f"{method} failed at {self.url}: {answer['error']}")
        return answer.get("result")


class RegistryReader:
    """Read-only views and events of one deployed registry."""

    def __init__(self, rpc: JsonRpc, address: str, deploy_block: int = 0) -> None:
        abi: list[dict[str, Any]] = load_artifact()["abi"]
        self.rpc = rpc
        self.address = checksum_address(address)
        self.deploy_block = deploy_block
        self._functions = {i["name"]: i for i in abi if i.get("type") == "function"}
        self._events = {i["name"]: i for i in abi if i.get("type") == "event"}

    @classmethod
    def connect(cls, settings: Settings) -> RegistryReader:
        """The registry named by the settings; checks the chain id and that code is there."""
        if not settings.registry_address:
            raise ConfigError(
                "no registry address configured",
                hint="run `ledger deploy`, or set LEDGER_REGISTRY",
            )
        rpc = JsonRpc(settings.rpc_url)
        chain_id = int(rpc("eth_chainId"), 16)
        if settings.chain_id is not None and settings.chain_id != chain_id:
            raise ConfigError(
                f"the config file names chain id {settings.chain_id} but {settings.rpc_url} "
                f"is chain {chain_id}",
                hint="point LEDGER_RPC_URL at the right chain, or run `ledger deploy` again",
            )
        try:
            address = checksum_address(settings.registry_address)
        except ValueError as exc:
            raise ConfigError(
                f"registry address {settings.registry_address!r} is not an address",
                hint="fix registry_address in config.json or LEDGER_REGISTRY",
            ) from exc
        if rpc("eth_getCode", address, "latest") in (None, "0x", ""):
            raise RegistryNotDeployedError(
                f"no contract at {address} on chain {chain_id} ({settings.rpc_url})",
                hint="the chain may have been reset; run `ledger deploy` again",
            )
        return cls(rpc, address, settings.deploy_block or 0)

    # -- views ------------------------------------------------------------------

    def _call(self, name: str, *args: Any) -> list[Any]:
        function = self._functions[name]
        data = "0x" + _abi.encode_call(function, args).hex()
        result = self.rpc("eth_call", {"to": self.address, "data": data}, "latest")
        try:
            return _abi.decode_params(function["outputs"], bytes.fromhex(str(result)[2:]))
        except ValueError as exc:
            raise ChainError(f"{name} at {self.address} answered undecodable data: {exc}") from exc

    def get_run(self, run_id: bytes) -> RunRecord:
        (raw,) = self._call("getRun", run_id)
        committer, started_at, status, revoked, manifest, root = raw.values()
        return RunRecord(
            run_id=run_id,
            committer=str(committer),
            started_at=int(started_at),
            status=RunStatus(status),
            revoked=bool(revoked),
            manifest_digest=bytes(manifest),
            checkpoint_root=bytes(root),
        )

    def find_by_weights(self, digest: bytes) -> WeightsRecord | None:
        return _weights_record(self._call("findByWeights", digest)[0])

    def find_by_tensor_root(self, root: bytes) -> WeightsRecord | None:
        return _weights_record(self._call("findByTensorRoot", root)[0])

    def is_committer(self, account: str) -> bool:
        return bool(self._call("hasRole", COMMITTER_ROLE, account)[0])

    # -- events -----------------------------------------------------------------

    def events(self, name: str, run_id: bytes) -> list[dict[str, Any]]:
        event = self._events[name]
        inputs = event["inputs"]
        indexed = [p for p in inputs if p.get("indexed")]
        if not indexed or indexed[0]["name"] != "runId":
            raise ChainError(f"event {name} is not indexed by runId first")
        logs = self.rpc(
            "eth_getLogs",
            {
                "address": self.address,
                "fromBlock": hex(self.deploy_block),
                "toBlock": "latest",
                "topics": ["0x" + _abi.topic(event).hex(), "0x" + run_id.hex()],
            },
        )
        plain = [p for p in inputs if not p.get("indexed")]
        decoded = []
        for log in logs or []:
            try:
                topics = [bytes.fromhex(str(t)[2:]) for t in log["topics"][1:]]
                values = dict(
                    zip(
                        (str(p["name"]) for p in plain),
                        _abi.decode_params(plain, bytes.fromhex(str(log["data"])[2:])),
                        strict=True,
                    )
                )
                for param, word in zip(indexed, topics, strict=True):
                    values[str(param["name"])] = _abi.decode_params([param], word)[0]
                decoded.append(
                    {
                        **{str(p["name"]): values[str(p["name"])] for p in inputs},
                        "blockNumber": int(log["blockNumber"], 16),
                        "transactionHash": str(log["transactionHash"]),
                    }
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise ChainError(f"cannot decode a {name} log from {self.address}: {exc}") from exc
        return decoded


def _weights_record(raw: dict[str, Any]) -> WeightsRecord | None:
    run_id, is_final, step = raw.values()
    if bytes(run_id) == ZERO32:
        return None
    return WeightsRecord(run_id=bytes(run_id), is_final=bool(is_final), step=int(step))
