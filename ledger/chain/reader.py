"""A read-only registry client over plain JSON-RPC: what ``ledger verify`` talks to.

Importing web3 costs more than a second of CPU, more than hashing a gigabyte
on two cores. Verification only reads (``eth_call``, ``eth_getLogs``), so it
uses this client instead: HTTP on a socket (:mod:`ledger.chain.rpc`), the
committed ABI and :mod:`ledger.chain.abi`. It satisfies
:class:`~ledger.chain.records.RegistryView`, like the web3
:class:`~ledger.chain.registry.Registry` (which signs and sends transactions),
and answers the same; a test compares the two on a real chain.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any

from ledger.chain import abi
from ledger.chain.compiler import load_artifact
from ledger.chain.records import (
    COMMITTER_ROLE,
    EventLookups,
    FinalRecord,
    RunRecord,
    WeightsRecord,
    checksum_address,
    record_of,
)
from ledger.chain.rpc import PlainHttp, TlsHttp
from ledger.config import Settings
from ledger.errors import (
    ChainError,
    ChainUnavailableError,
    ConfigError,
    RegistryNotDeployedError,
    RpcError,
)
from ledger.hashing.merkle import CheckpointLeaf

TIMEOUT = 10.0


class BatchAnswers:
    """The answers to :meth:`JsonRpc.batch`, in call order.

    ``answers[i]`` is the result of call ``i``, or raises the
    :class:`~ledger.errors.RpcError` the node answered it with (iterating
    raises at the first such call).
    """

    def __init__(self, answers: list[tuple[Any, RpcError | None]]) -> None:
        self._answers = answers

    def __len__(self) -> int:
        return len(self._answers)

    def __iter__(self) -> Iterator[Any]:
        return (self[n] for n in range(len(self)))

    def __getitem__(self, index: int) -> Any:
        result, error = self._answers[index]
        if error is not None:
            raise error.with_traceback(None)
        return result

    def error(self, index: int) -> RpcError | None:
        """The error call ``index`` was answered with, or None if it succeeded."""
        return self._answers[index][1]


class JsonRpc:
    """Blocking JSON-RPC over HTTP(S), on one kept-alive connection.

    ``ledger verify`` makes about ten calls; opening a connection for each
    (as ``urllib`` does) costs more than the calls themselves. Calls that do
    not depend on each other can share one request (:meth:`batch`). The HTTP
    is :mod:`ledger.chain.rpc`'s (``http.client`` only for ``https://``).
    """

    def __init__(self, url: str, timeout: float = TIMEOUT) -> None:
        self.url = url
        self.timeout = timeout
        self._id = 0
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"RPC URL {url!r} is not an http(s) URL")
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._conn: PlainHttp | TlsHttp | None = None
        self._lock = threading.Lock()

    def __call__(self, method: str, *params: object) -> Any:
        with self._lock:
            self._id += 1
            request = {"jsonrpc": "2.0", "id": self._id, "method": method, "params": params}
            answer = self._exchange(request, method)
        if not isinstance(answer, dict):
            raise ChainError(f"{method} at {self.url}: the answer is not a JSON-RPC response")
        if "error" in answer:
            raise self._error(method, answer["error"])
        return answer.get("result")

    def batch(self, calls: Sequence[tuple[str, Sequence[object]]]) -> BatchAnswers:
        """Several calls in one request (a JSON-RPC 2.0 batch): one round trip.

        ``calls`` are ``(method, params)`` pairs; the answers come back in call
        order, matched by id (a node may answer a batch in any order). A call
        the node refused is an :class:`~ledger.errors.RpcError` raised when its
        answer is read, the one :meth:`__call__` would raise; the others stay
        readable. A transport failure raises :class:`ChainUnavailableError` for
        the whole batch, as a single call does.
        """
        if not calls:
            return BatchAnswers([])
        methods = ", ".join(dict.fromkeys(method for method, _ in calls))
        with self._lock:
            first = self._id + 1
            self._id += len(calls)
            request = [
                {"jsonrpc": "2.0", "id": first + n, "method": method, "params": list(params)}
                for n, (method, params) in enumerate(calls)
            ]
            answer = self._exchange(request, methods)
        if isinstance(answer, dict) and "error" in answer:  # the batch itself was refused
            raise self._error(methods, answer["error"])
        if not isinstance(answer, list):
            raise ChainError(f"{methods} at {self.url}: the answer is not a JSON-RPC batch")
        by_id = {item.get("id"): item for item in answer if isinstance(item, dict)}
        answers: list[tuple[Any, RpcError | None]] = []
        for n, (method, _) in enumerate(calls):
            item = by_id.get(first + n)
            if item is None:
                raise ChainError(f"{method} at {self.url}: no answer to it in the batch")
            if "error" in item:
                answers.append((None, self._error(method, item["error"])))
            else:
                answers.append((item.get("result"), None))
        return BatchAnswers(answers)

    def _exchange(self, request: object, what: str) -> Any:
        """Post ``request`` and parse the answer; the caller holds the lock."""
        try:
            return json.loads(self._post(json.dumps(request).encode()))
        except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
            self._close()
            raise ChainUnavailableError(
                f"no chain answers at {self.url} ({what}: {exc})",
                hint="start one with `ledger chain up`, or set LEDGER_RPC_URL",
            ) from exc

    def _error(self, method: str, error: object) -> RpcError:
        fields = error if isinstance(error, dict) else {}
        return RpcError(
            f"{method} failed at {self.url}: {fields.get('message', error)}",
            code=fields.get("code"),
            data=fields.get("data"),
        )

    def _post(self, body: bytes) -> bytes:
        for attempt in (1, 2):  # a kept-alive connection the server closed: reopen once
            conn = self._connection()
            try:
                response = conn.post(self._path, body, "application/json")
            except (ConnectionResetError, BrokenPipeError):
                self._close()
                if attempt == 2:
                    raise
                continue
            if response.will_close:
                self._close()
            if response.status != 200:
                raise ValueError(f"HTTP {response.status} {response.reason}")
            return response.body
        raise AssertionError("unreachable")

    def _connection(self) -> PlainHttp | TlsHttp:
        if self._conn is None:
            kind = TlsHttp if self._https else PlainHttp
            self._conn = kind(self._host, self._port, self.timeout)
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class RegistryReader(EventLookups):
    """Read-only views and events of one deployed registry."""

    def __init__(self, rpc: JsonRpc, address: str, deploy_block: int = 0) -> None:
        entries: list[dict[str, Any]] = load_artifact()["abi"]
        self.rpc = rpc
        self.address = checksum_address(address)
        self.deploy_block = deploy_block
        self._functions = {i["name"]: i for i in entries if i.get("type") == "function"}
        self._events = {i["name"]: i for i in entries if i.get("type") == "event"}

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
        data = "0x" + abi.encode_call(function, args).hex()
        result = self.rpc("eth_call", {"to": self.address, "data": data}, "latest")
        try:
            return abi.decode_params(function["outputs"], bytes.fromhex(str(result)[2:]))
        except ValueError as exc:
            raise ChainError(f"{name} at {self.address} answered undecodable data: {exc}") from exc

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

    # -- events -----------------------------------------------------------------

    def events(self, name: str, run_id: bytes) -> list[dict[str, Any]]:
        topic = "0x" + abi.topic(self._events[name]).hex()
        return [event for _, event in self._logs([topic, "0x" + run_id.hex()])]

    def all_events(self, name: str) -> list[dict[str, Any]]:
        """Every event ``name`` of the registry, oldest first (one ``eth_getLogs``)."""
        topic = "0x" + abi.topic(self._events[name]).hex()
        return [event for _, event in self._logs([topic])]

    def _find_weights(self, value: bytes, *, topic_index: int) -> list[WeightsRecord]:
        names = ("CheckpointCommitted", "RunFinalized")
        topics: list[Any] = [["0x" + abi.topic(self._events[n]).hex() for n in names]]
        topics += [None] * (topic_index - 1) + ["0x" + value.hex()]
        return [record_of(name, event) for name, event in self._logs(topics)]

    def _logs(self, topics: list[Any]) -> list[tuple[str, dict[str, Any]]]:
        """The registry's logs matching ``topics``, decoded, oldest first."""
        logs = self.rpc(
            "eth_getLogs",
            {
                "address": self.address,
                "fromBlock": hex(self.deploy_block),
                "toBlock": "latest",
                "topics": topics,
            },
        )
        by_topic = {"0x" + abi.topic(e).hex(): e for e in self._events.values()}
        decoded = []
        for log in logs or []:
            event = by_topic.get(str(log["topics"][0]))
            if event is None:
                continue
            decoded.append((str(event["name"]), self._decode(event, log)))
        return decoded

    def _decode(self, event: dict[str, Any], log: dict[str, Any]) -> dict[str, Any]:
        inputs = event["inputs"]
        indexed = [p for p in inputs if p.get("indexed")]
        plain = [p for p in inputs if not p.get("indexed")]
        try:
            topics = [bytes.fromhex(str(t)[2:]) for t in log["topics"][1:]]
            values = dict(
                zip(
                    (str(p["name"]) for p in plain),
                    abi.decode_params(plain, bytes.fromhex(str(log["data"])[2:])),
                    strict=True,
                )
            )
            for param, word in zip(indexed, topics, strict=True):
                values[str(param["name"])] = abi.decode_params([param], word)[0]
            return {
                **{str(p["name"]): values[str(p["name"])] for p in inputs},
                "blockNumber": int(log["blockNumber"], 16),
                "transactionHash": str(log["transactionHash"]),
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise ChainError(
                f"cannot decode a {event['name']} log from {self.address}: {exc}"
            ) from exc
