"""The one JSON-RPC transport of ledger: every call to a chain node goes through here.

:class:`JsonRpc` sends calls (alone or in batches) on one kept-alive HTTP
connection, maps a failed transport to
:class:`~ledger.errors.ChainUnavailableError` and a node's error object to
:class:`~ledger.errors.RpcError`; :func:`as_int`, :func:`as_bytes` and
:func:`ledger.ids.to_hex` convert JSON-RPC quantities and data.

The HTTP layer is its own. ``http.client`` imports ``email`` (for its header
parser) and ``ssl`` at once: about 40 ms of CPU at every start of ``ledger
verify``, competing with the hash of the file for the cores. A JSON-RPC call
needs far less: send one request, read a status line, headers and a body framed
by ``Content-Length``, by chunked transfer coding, or by the end of the
connection (RFC 9112). :class:`PlainHttp` does that on a socket for ``http://``
URLs; :class:`TlsHttp` hands ``https://`` URLs to ``http.client``, imported only
then.

Both raise :class:`OSError` when the connection fails and :class:`ValueError`
when the answer is not HTTP, and :class:`ServerClosed` (a
``ConnectionResetError``) when a kept-alive connection was closed by the server
before it answered, which :class:`JsonRpc` retries once on a new connection.

**Providers.** Commercial and public endpoints rate-limit, drop connections and
answer slowly (:mod:`ledger.testing.provider` imitates them in the tests).
:class:`JsonRpc` copes, within bounds (:class:`RetryPolicy`):

- HTTP 429 (and a JSON-RPC error that says the request rate was exceeded): the
  request was not processed, so any call is sent again after the server's
  ``Retry-After`` (seconds), or a doubling back-off, each wait capped;
- a dropped connection, an answer cut short, a timeout: calls that only read
  (and ``eth_sendRawTransaction``: the same signed bytes, idempotent by hash;
  the sender treats "already known" as sent) are sent again after a short
  back-off. Calls that change a node's state otherwise (``anvil_mine``,
  ``evm_revert``...) are not; a refused connection (nothing listens) fails at once;
- a JSON-RPC error object in a non-200 answer (QuickNode answers a too-wide
  ``eth_getLogs`` with HTTP 413 and code -32614) is that call's
  :class:`~ledger.errors.RpcError`, not a transport failure.

When the retries run out, :class:`~ledger.errors.ChainUnavailableError` names the
endpoint, what it did, and what to do.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ledger.errors import ChainError, ChainUnavailableError, ConfigError, RpcError

MAX_LINE = 65536
"""Longest status or header line accepted."""

MAX_HEADERS = 100

UNAVAILABLE_HINT = "start one with `ledger chain up`, or set LEDGER_RPC_URL"


def as_int(value: object) -> int:
    """A JSON-RPC quantity (``"0x1a"``) as an int."""
    return int(str(value), 16)


def as_bytes(value: object) -> bytes:
    """JSON-RPC data (``"0x..."``: hashes, topics, call results) as bytes."""
    return bytes.fromhex(str(value).removeprefix("0x"))


TIMEOUT = 10.0

RATE_LIMIT_HINT = (
    "the RPC provider limits requests: try again later, use a plan or endpoint with a "
    "higher limit, or your own node (LEDGER_RPC_URL)"
)

# Calls that only read the chain: safe to send again when an answer was lost.
# eth_sendRawTransaction is too: the same signed bytes are the same transaction
# (idempotent by hash); RegistrySender.broadcast treats "already known" as sent.
IDEMPOTENT = frozenset(
    {
        "eth_blockNumber",
        "eth_call",
        "eth_chainId",
        "eth_estimateGas",
        "eth_feeHistory",
        "eth_gasPrice",
        "eth_maxPriorityFeePerGas",
        "eth_sendRawTransaction",
        "eth_syncing",
        "net_version",
        "web3_clientVersion",
    }
)


def idempotent(method: str) -> bool:
    """Whether ``method`` may be sent again after its answer was lost."""
    return method in IDEMPOTENT or method.startswith("eth_get")


# Infura: "project ID request rate exceeded" (-32005); Alchemy: "...exceeded its compute
# units per second capacity" (429); many: "rate limit(ed)", "Too Many Requests"
_RATE_LIMITED = re.compile(
    r"rate limit|request rate|too many requests|compute units per second", re.I
)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard :class:`JsonRpc` tries before it gives up on a call.

    Waits are bounded one by one (``max_wait``) and in total per call
    (``budget``): a provider that throttles for minutes is reported, not waited out.
    """

    attempts: int = 5
    """Tries of a call that lost its answer (dropped, cut short, timed out)."""
    throttled_attempts: int = 8
    """Tries of a call the server refused for its rate (HTTP 429)."""
    backoff: float = 0.25
    """First wait after a lost answer or a 429 without ``Retry-After``; doubles."""
    max_wait: float = 10.0
    """Longest single wait, whatever ``Retry-After`` asks."""
    budget: float = 60.0
    """Longest total wait for one call."""


NO_RETRY = RetryPolicy(attempts=1, throttled_attempts=1, budget=0.0)
"""Fail at the first lost answer or 429 (tests of the failure itself)."""


class Throttled(OSError):
    """The server answered HTTP 429 (or a rate-limit error): not processed; try later."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class HttpStatusError(ValueError):
    """An HTTP answer other than 200 that carries no JSON-RPC answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds; an HTTP date is ignored)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


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
    is this module's (``http.client`` only for ``https://``).
    """

    def __init__(
        self,
        url: str,
        timeout: float = TIMEOUT,
        retry: RetryPolicy | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._sleep = sleep  # how the waits between tries pass (tests pass a clock's)
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
        answer = self._exchange(request, method, idempotent(method))
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
        answer = self._exchange(request, methods, all(idempotent(m) for m, _ in calls))
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

    def _exchange(self, request: object, what: str, repeatable: bool) -> Any:
        """Post ``request`` and parse the answer, trying again as :attr:`retry` allows
        (a lost answer only when ``repeatable``). The lock is held for each try, not
        for the waits between them."""
        body = json.dumps(request).encode()
        policy = self.retry
        lost = throttled = 0
        waited = 0.0
        while True:
            try:
                with self._lock:
                    try:
                        answer = _loads(self._post(body))
                    except (OSError, ValueError):  # JSONDecodeError is a ValueError
                        self._close()
                        raise
                if not _rate_limited(answer):
                    return answer
                raise Throttled("a rate-limit error", None)
            except Throttled as exc:
                throttled += 1
                wait = exc.retry_after
                if wait is None:
                    wait = policy.backoff * 2 ** (throttled - 1)
                wait = min(wait, policy.max_wait)
                if throttled >= policy.throttled_attempts or waited + wait > policy.budget:
                    raise ChainUnavailableError(
                        f"{self.url} refused {what} for its request rate (HTTP 429) "
                        f"{throttled} times; gave up after waiting {waited:.1f} s",
                        hint=RATE_LIMIT_HINT,
                    ) from exc
            except (OSError, ValueError) as exc:
                lost += 1
                # nothing listens, no such host, or the server refuses the request as
                # such (401, 403, 404...): another try would get the same
                fatal = isinstance(exc, ConnectionRefusedError | socket.gaierror) or (
                    isinstance(exc, HttpStatusError)
                    and 400 <= exc.status < 500
                    and exc.status != 408
                )
                wait = min(policy.backoff * 2 ** (lost - 1), policy.max_wait)
                if (
                    fatal
                    or not repeatable
                    or lost >= policy.attempts
                    or waited + wait > policy.budget
                ):
                    tries = f" after {lost} tries" if lost > 1 else ""
                    raise ChainUnavailableError(
                        f"no chain answers at {self.url} ({what}: {exc}){tries}",
                        hint=UNAVAILABLE_HINT,
                    ) from exc
            self._sleep(wait)
            waited += wait

    def _error(self, method: str, error: object) -> RpcError:
        fields = error if isinstance(error, dict) else {}
        return RpcError(
            f"{method} failed at {self.url}: {fields.get('message', error)}",
            code=fields.get("code"),
            data=fields.get("data"),
            node_message=str(fields.get("message", error)),
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
            if response.status == 429:
                raise Throttled(f"HTTP 429 {response.reason}", _retry_after(response.retry_after))
            if response.status != 200:
                if _is_rpc_answer(response.body):  # e.g. 413 + -32614: the call's own error
                    return response.body
                raise HttpStatusError(response.status, f"HTTP {response.status} {response.reason}")
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

    def chain_id(self) -> int:
        """The node's chain id: the first call of every client, so it fails fast
        (:class:`ChainUnavailableError`) when nothing answers."""
        return as_int(self("eth_chainId"))

    def close(self) -> None:
        """Close the kept-alive connection (the next call opens a new one)."""
        with self._lock:
            self._close()

    def __enter__(self) -> JsonRpc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ServerClosed(ConnectionResetError):
    """The server closed the connection without answering (a stale kept-alive one)."""


class Response(NamedTuple):
    status: int
    reason: str
    body: bytes
    will_close: bool
    """The server ends the connection after this answer: open a new one next time."""
    retry_after: str | None = None
    """The ``Retry-After`` header, if any."""


def _is_rpc_answer(body: bytes) -> bool:
    """Whether a non-200 answer's body is a JSON-RPC error (or batch of answers)."""
    try:
        answer = _loads(body)
    except ValueError:
        return False
    items = answer if isinstance(answer, list) else [answer]
    return bool(items) and all(
        isinstance(i, dict) and ("error" in i or "result" in i) for i in items
    )


def _rate_limited(answer: object) -> bool:
    """Whether a single answer is a JSON-RPC error saying the request rate was exceeded
    (some providers answer so with HTTP 200)."""
    if not isinstance(answer, dict) or not isinstance(answer.get("error"), dict):
        return False
    return bool(_RATE_LIMITED.search(str(answer["error"].get("message", ""))))


class PlainHttp:
    """``POST`` over a plain TCP connection, kept open between requests."""

    def __init__(self, host: str, port: int | None, timeout: float) -> None:
        self.host = host
        self.port = port or 80
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._file: Any = None
        self._host_header = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")

    def post(self, path: str, body: bytes, content_type: str) -> Response:
        fresh = self._sock is None
        if self._sock is None:
            self._sock = socket.create_connection((self.host, self.port), self.timeout)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._file = self._sock.makefile("rb")
        head = (
            f"POST {path} HTTP/1.1\r\n"
            f"Host: {self._host_header}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Accept-Encoding: identity\r\n"
            "\r\n"
        )
        self._sock.sendall(head.encode("ascii") + body)
        status_line = self._file.readline(MAX_LINE + 1)
        if not status_line:
            if fresh:
                raise ConnectionError("the server closed the connection without an answer")
            raise ServerClosed("the server closed the kept-alive connection")
        status, reason, version = _status(status_line)
        while 100 <= status < 200:  # an interim answer (e.g. 100 Continue): the real one follows
            _headers(self._file)
            status, reason, version = _status(self._file.readline(MAX_LINE + 1))
        headers = _headers(self._file)
        connection = headers.get("connection", "").lower()
        will_close = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
        if status in (204, 304):  # never a body, whatever the headers say
            data = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            data = _read_chunked(self._file)
        elif "content-length" in headers:
            length = _length(headers["content-length"])
            data = self._file.read(length)
            if len(data) != length:
                raise ValueError(f"the answer ended after {len(data)} of {length} bytes")
        else:
            data = self._file.read()  # framed by the end of the connection
            will_close = True
        return Response(status, reason, data, will_close, headers.get("retry-after"))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class TlsHttp:
    """``POST`` over HTTPS, through ``http.client`` (and ``ssl``)."""

    def __init__(self, host: str, port: int | None, timeout: float) -> None:
        import http.client

        self._client = http.client
        self._conn = http.client.HTTPSConnection(host, port, timeout=timeout)

    def post(self, path: str, body: bytes, content_type: str) -> Response:
        client = self._client
        try:
            self._conn.request("POST", path, body, {"Content-Type": content_type})
            response = self._conn.getresponse()
            data = response.read()
        except (client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
            raise ServerClosed(str(exc)) from exc
        except client.HTTPException as exc:
            raise ValueError(f"{type(exc).__name__}: {exc}") from exc
        return Response(
            response.status,
            response.reason,
            data,
            response.will_close,
            response.getheader("Retry-After"),
        )

    def close(self) -> None:
        self._conn.close()


def _status(line: bytes) -> tuple[int, str, str]:
    if len(line) > MAX_LINE:
        raise ValueError("the status line is too long")
    text = line.decode("iso-8859-1").rstrip("\r\n")
    version, _, rest = text.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise ValueError(f"not an HTTP/1.x status line: {text[:80]!r}")
    return int(code), reason, version


def _headers(stream: Any) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = stream.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise ValueError("a header line is too long")
        if line in (b"\r\n", b"\n"):
            return headers
        if not line:
            raise ValueError("the answer ended inside its headers")
        name, colon, value = line.decode("iso-8859-1").partition(":")
        if not colon:
            raise ValueError(f"not a header line: {line[:80]!r}")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    raise ValueError(f"more than {MAX_HEADERS} header lines")


def _length(text: str) -> int:
    values = {v.strip() for v in text.split(",")}
    if len(values) != 1 or not (value := values.pop()).isdigit():
        raise ValueError(f"bad Content-Length {text!r}")
    return int(value)


def _read_chunked(stream: Any) -> bytes:
    parts: list[bytes] = []
    while True:
        line = stream.readline(MAX_LINE + 1)
        size_text = line.split(b";", 1)[0].strip()
        if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
            raise ValueError(f"bad chunk size line {line[:80]!r}")
        size = int(size_text, 16)
        if size == 0:
            _headers(stream)  # trailer fields, if any, end with an empty line
            return b"".join(parts)
        data = stream.read(size)
        if len(data) != size or stream.read(2) != b"\r\n":
            raise ValueError("the chunked answer ended early")
        parts.append(data)


def _loads(body: bytes) -> Any:
    """A node's answer as JSON; ValueError for one that is not, or that nests past
    Python's limit (a hostile node must not crash its client)."""
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("an answer nested too deep to be JSON-RPC") from None
