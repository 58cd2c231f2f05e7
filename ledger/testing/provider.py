"""A JSON-RPC proxy that behaves like a commercial RPC provider, in front of a real node.

Teams share a chain through providers that cap what a client may ask. This
proxy forwards JSON-RPC (single calls and batches) to a real node (Anvil in
the tests) and applies, each only when configured (:class:`ProviderRules`):

- **a block-range limit on** ``eth_getLogs``, with the error shapes real
  providers answer:

  - ``"quicknode"``: HTTP 413 with ``{"code": -32614, "message": "eth_getLogs
    is limited to a 10,000 range"}`` (as reported from a QuickNode endpoint in
    eternalsafe/wallet issue 57);
  - ``"infura"``: HTTP 200 with ``{"code": -32602, "message": "range 1000000
    exceeds limit of 10000"}`` (Infura's live API, INFURA/infura issue 237);

- **a result-count limit on** ``eth_getLogs``: ``{"code": -32005, "message":
  "query returned more than 10000 results"}`` (Infura's documented constraint;
  the same text in aurora-relayer pull request 327), with ``data: {"from",
  "to"}``: a block range from the requested start that fits the limit, the hint
  some providers add;
- **rate limiting**: a token bucket (``rate`` requests per second, ``burst``
  deep); a request over it is answered HTTP 429 with ``Retry-After`` (whole
  seconds) and a JSON-RPC error body, as providers do under bursts;
- **dropped connections**: with probability ``drop_rate`` a request is
  forwarded to the node (it *was* processed) and then the connection is closed
  without an answer, or half-way through the answer; ``drop_first`` names
  methods whose first answer (outside 429s) is always dropped that way, for
  tests that must see one lost whatever the timing;
- **slow answers**: with probability ``slow_rate`` the answer waits
  ``slow_seconds``.

Random choices come from one ``random.Random(seed)``, drawn in the order
requests arrive: a client that sends one request at a time sees the same
drops and slow answers on every run. The token bucket runs on ``clock`` (a
monotonic clock unless given).

Counters (:attr:`ProviderProxy.calls`, per JSON-RPC method, every call
received, batch members counted one by one; :attr:`ProviderProxy.dropped_calls`,
the same for calls whose answer was dropped; :attr:`ProviderProxy.events`:
``http_requests``, ``batches``, ``refused_range``, ``refused_results``,
``throttled``, ``dropped``, ``slowed``) say what a client did;
``GET /counters`` returns them as JSON for clients in another process.

Run it by hand::

    python -m ledger.testing.provider http://127.0.0.1:8545 --max-log-blocks 50

It prints its URL and serves until interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import socket
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, fields, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from ledger.chain.rpc import PlainHttp, ServerClosed

__all__ = ["ProviderProxy", "ProviderRules", "TokenBucket"]

RangeStyle = Literal["quicknode", "infura"]
MAX_BODY = 16 * 1024 * 1024
"""Largest request body accepted (a provider refuses bigger ones with 413 too)."""

EVENT_NAMES = (
    "http_requests",
    "batches",
    "refused_range",
    "refused_results",
    "throttled",
    "dropped",
    "slowed",
)


@dataclass(frozen=True)
class ProviderRules:
    """How the proxy behaves; every limit is off unless set."""

    max_log_blocks: int | None = None
    """``eth_getLogs`` over more blocks than this (``to - from + 1``) is refused."""
    range_style: RangeStyle = "quicknode"
    """Which provider's refusal a too-wide range gets (see the module docs)."""
    max_log_results: int | None = None
    """``eth_getLogs`` that would return more logs than this is refused (-32005)."""
    rate: float | None = None
    """Requests per second the token bucket refills (None: no rate limit)."""
    burst: int = 10
    """Depth of the token bucket: requests accepted at once after a quiet spell."""
    drop_rate: float = 0.0
    """Probability that a request's connection is dropped after the node processed it."""
    drop_first: tuple[str, ...] = ()
    """Methods whose first answer is dropped (after the node processed the request)."""
    slow_rate: float = 0.0
    """Probability that an answer is delayed by ``slow_seconds``."""
    slow_seconds: float = 0.5
    seed: int = 0


class TokenBucket:
    """``rate`` tokens a second, at most ``burst``; a request takes one."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = float(burst)
        self.last = clock()

    def take(self) -> float | None:
        """None when a token was taken; otherwise the seconds until one is there."""
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / self.rate


class _Refusal(Exception):
    """A JSON-RPC error the proxy answers instead of the node."""

    def __init__(self, code: int, message: str, data: object = None, status: int = 200) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.status = status

    def error(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class ProviderProxy:
    """A provider-like JSON-RPC endpoint in front of ``upstream`` (an ``http://`` URL).

    Use it as a context manager, or :meth:`start` and :meth:`stop`. Change its
    behaviour at any time with :meth:`configure`; read what clients did from
    :attr:`calls` and :attr:`events` (and zero them with :meth:`reset_counters`).
    """

    def __init__(
        self,
        upstream: str,
        rules: ProviderRules | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
        upstream_timeout: float = 60.0,
    ) -> None:
        parts = urllib.parse.urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the proxy forwards to http:// URLs only, not {upstream!r}")
        self.upstream = upstream
        self._up_host = parts.hostname
        self._up_port = parts.port or 80
        self._up_path = parts.path or "/"
        self._up_timeout = upstream_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._rules = rules or ProviderRules()
        self._random = random.Random(self._rules.seed)
        self._bucket = self._new_bucket()
        self._calls: Counter[str] = Counter()
        self._events: Counter[str] = Counter()
        self._dropped: Counter[str] = Counter()
        self._dropped_first: set[str] = set()
        self._local = threading.local()
        self._server = _Server((host, port), _Handler)
        self._server.proxy = self
        self._thread: threading.Thread | None = None

    # -- life -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> ProviderProxy:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, name="provider-proxy", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every connection (clients see them dropped)."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.close_connections()
        self._server.server_close()

    def __enter__(self) -> ProviderProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- rules and counters -----------------------------------------------------------

    @property
    def rules(self) -> ProviderRules:
        return self._rules

    def configure(self, **changes: Any) -> None:
        """Change some rules (names of :class:`ProviderRules`); the token bucket
        starts full again, and a new ``seed`` restarts the random choices."""
        with self._lock:
            self._rules = replace(self._rules, **changes)
            if "seed" in changes:
                self._random = random.Random(self._rules.seed)
            if "drop_first" in changes:
                self._dropped_first.clear()
            self._bucket = self._new_bucket()

    @contextmanager
    def rules_set(self, **changes: Any) -> Iterator[ProviderProxy]:
        """:meth:`configure` for the ``with`` block, then the rules from before."""
        before = {f.name: getattr(self._rules, f.name) for f in fields(ProviderRules)}
        self.configure(**changes)
        try:
            yield self
        finally:
            self.configure(**before)

    @property
    def calls(self) -> Counter[str]:
        """JSON-RPC calls received, per method (a copy)."""
        with self._lock:
            return Counter(self._calls)

    @property
    def events(self) -> Counter[str]:
        """What the proxy did to requests (a copy; see the module docs)."""
        with self._lock:
            return Counter(self._events)

    @property
    def dropped_calls(self) -> Counter[str]:
        """Calls whose answer a dropped connection lost, per method (a copy)."""
        with self._lock:
            return Counter(self._dropped)

    def total_calls(self) -> int:
        return sum(self.calls.values())

    def reset_counters(self) -> None:
        with self._lock:
            self._calls.clear()
            self._events.clear()
            self._dropped.clear()

    def counters(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {
                "calls": dict(self._calls),
                "dropped_calls": dict(self._dropped),
                "events": {name: self._events[name] for name in EVENT_NAMES},
            }

    def _new_bucket(self) -> TokenBucket | None:
        rules = self._rules
        return None if rules.rate is None else TokenBucket(rules.rate, rules.burst, self._clock)

    # -- one request ------------------------------------------------------------------

    def _admit(self, request: object) -> tuple[float | None, bool, bool]:
        """Counts the request; decides (retry-after or None, drop it, slow it)."""
        with self._lock:
            self._events["http_requests"] += 1
            items = request if isinstance(request, list) else [request]
            if isinstance(request, list):
                self._events["batches"] += 1
            methods = []
            for item in items:
                method = item.get("method") if isinstance(item, dict) else None
                methods.append(method if isinstance(method, str) else "?")
            self._calls.update(methods)
            # draw both choices for every request, so the sequence does not depend
            # on which rules are on
            drop = self._random.random() < self._rules.drop_rate
            slow = self._random.random() < self._rules.slow_rate
            wait = self._bucket.take() if self._bucket is not None else None
            if wait is not None:
                self._events["throttled"] += 1
                return wait, False, False
            first = {m for m in methods if m in self._rules.drop_first} - self._dropped_first
            if first:
                self._dropped_first |= first
                drop = True
            if drop:
                self._events["dropped"] += 1
                self._dropped.update(methods)
            if slow:
                self._events["slowed"] += 1
            return None, drop, slow

    def _drop_half(self) -> bool:
        """Whether a dropped answer is cut half-way (else never started); seeded too."""
        with self._lock:
            return self._random.random() < 0.5

    def _handle(self, request: Any) -> tuple[int, Any]:
        """The status and the JSON answer to a parsed request."""
        single = not isinstance(request, list)
        items: list[Any] = [request] if single else request
        if not items:
            return 200, _error_answer(None, -32600, "empty batch")
        answers: list[Any] = [None] * len(items)
        forward: list[int] = []
        status = 200
        for n, item in enumerate(items):
            if not isinstance(item, dict):
                answers[n] = _error_answer(None, -32600, "invalid request")
                continue
            if item.get("method") == "eth_getLogs":
                try:
                    self._check_range(item)
                except _Refusal as refusal:
                    answers[n] = {"jsonrpc": "2.0", "id": item.get("id"), "error": refusal.error()}
                    if single:
                        status = refusal.status
                    continue
            forward.append(n)
        if forward:
            sent = [items[n] for n in forward]
            got = self._upstream(sent if not single else sent[0])
            got_list = got if isinstance(got, list) else [got]
            by_id = {a.get("id"): a for a in got_list if isinstance(a, dict)}
            for n in forward:
                item = items[n]
                answer = by_id.get(item.get("id"))
                if answer is None and len(got_list) == len(forward) == 1:
                    answer = got_list[0]
                if item.get("method") == "eth_getLogs" and isinstance(answer, dict):
                    answer = self._check_results(item, answer)
                answers[n] = answer
        return status, answers[0] if single else [a for a in answers if a is not None]

    def _check_range(self, item: dict[str, Any]) -> None:
        limit = self._rules.max_log_blocks
        if limit is None:
            return
        span = self._span(item)
        if span is None:
            return
        start, end = span
        width = end - start + 1
        if width <= limit:
            return
        with self._lock:
            self._events["refused_range"] += 1
        if self._rules.range_style == "infura":
            raise _Refusal(-32602, f"range {width} exceeds limit of {limit}")
        raise _Refusal(-32614, f"eth_getLogs is limited to a {limit:,} range", status=413)

    def _check_results(self, item: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
        limit = self._rules.max_log_results
        logs = answer.get("result")
        if limit is None or not isinstance(logs, list) or len(logs) <= limit:
            return answer
        with self._lock:
            self._events["refused_results"] += 1
        span = self._span(item)
        data = None
        if span is not None:
            start = span[0]
            # the last block before the one holding the (limit + 1)th log: what fits
            over = int(str(logs[limit].get("blockNumber", hex(start))), 16)
            data = {"from": hex(start), "to": hex(max(start, over - 1))}
        refusal = _Refusal(-32005, f"query returned more than {limit} results", data)
        return {"jsonrpc": "2.0", "id": item.get("id"), "error": refusal.error()}

    def _span(self, item: dict[str, Any]) -> tuple[int, int] | None:
        """The block numbers an ``eth_getLogs`` call covers (None: by block hash, or
        not understood: the node answers it)."""
        params = item.get("params")
        query = params[0] if isinstance(params, list) and params else None
        if not isinstance(query, dict) or "blockHash" in query:
            return None
        try:
            bounds = [self._block(query.get(key, "latest")) for key in ("fromBlock", "toBlock")]
        except ValueError:
            return None
        return bounds[0], bounds[1]

    def _block(self, tag: object) -> int:
        if isinstance(tag, int):
            return tag
        if not isinstance(tag, str):
            raise ValueError(tag)
        if tag == "earliest":
            return 0
        if tag in ("latest", "pending", "safe", "finalized"):
            head = self._upstream(
                {"jsonrpc": "2.0", "id": 0, "method": "eth_blockNumber", "params": []}
            )
            return int(str(head["result"]), 16)
        return int(tag, 16)

    def _upstream(self, request: object) -> Any:
        body = json.dumps(request).encode()
        for attempt in (1, 2):
            conn: PlainHttp | None = getattr(self._local, "conn", None)
            if conn is None:
                conn = PlainHttp(self._up_host, self._up_port, self._up_timeout)
                self._local.conn = conn
            try:
                response = conn.post(self._up_path, body, "application/json")
            except (ServerClosed, BrokenPipeError):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
                continue
            if response.will_close:
                conn.close()
                self._local.conn = None
            return json.loads(response.body)
        raise AssertionError("unreachable")


def _error_answer(id_: object, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "error": {"code": code, "message": message}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: ProviderProxy

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self.open: set[socket.socket] = set()
        self.open_lock = threading.Lock()
        super().__init__(address, handler)

    def close_connections(self) -> None:
        with self.open_lock:
            for sock in self.open:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self.open.clear()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 120

    def setup(self) -> None:
        super().setup()
        # headers and body go out as two writes: without this, Nagle's algorithm holds
        # the body until the client's delayed ACK (~40 ms a request)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.open_lock:
            self.server.open.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.open_lock:
                self.server.open.discard(self.connection)

    def handle(self) -> None:
        # the client may go away (it timed out waiting for a slow answer)
        with suppress(BrokenPipeError, ConnectionResetError, TimeoutError):
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the counters say what happened."""

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/counters":
            self._send(200, self.server.proxy.counters())
        else:
            self._send(404, {"error": "POST JSON-RPC to /, or GET /counters"})

    def do_POST(self) -> None:
        proxy = self.server.proxy
        length_text = self.headers.get("Content-Length", "")
        if not length_text.isdigit() or int(length_text) > MAX_BODY:
            status = 413 if length_text.isdigit() else 411
            self._send(status, _error_answer(None, -32600, "request body missing or too large"))
            self.close_connection = True
            return
        body = self.rfile.read(int(length_text))
        try:
            request = json.loads(body)
        except ValueError:
            self._send(200, _error_answer(None, -32700, "parse error"))
            return
        wait, drop, slow = proxy._admit(request)
        if wait is not None:
            retry_after = str(max(1, math.ceil(wait)))
            self._send(
                429,
                _error_answer(None, -32005, "Too Many Requests: request rate exceeded"),
                {"Retry-After": retry_after},
            )
            return
        try:
            status, answer = proxy._handle(request)
        except (OSError, ValueError) as exc:  # the node is gone or answered nonsense
            self._send(502, _error_answer(None, -32603, f"upstream failed: {exc}"))
            self.close_connection = True
            return
        if slow:
            time.sleep(proxy.rules.slow_seconds)
        data = json.dumps(answer).encode()
        if drop:
            self.close_connection = True
            if len(data) > 1 and proxy._drop_half():
                self._head(status, len(data))
                self.wfile.write(data[: len(data) // 2])
            return  # no answer (or half of one): the connection closes
        self._head(status, len(data))
        self.wfile.write(data)

    def _send(self, status: int, answer: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(answer).encode()
        self._head(status, len(data), headers)
        self.wfile.write(data)

    def _head(self, status: int, length: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(length))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ledger.testing.provider",
        description="A provider-like JSON-RPC proxy in front of a node.",
    )
    parser.add_argument("upstream", help="the node's http:// URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-log-blocks", type=int)
    parser.add_argument("--range-style", choices=["quicknode", "infura"], default="quicknode")
    parser.add_argument("--max-log-results", type=int)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--drop-rate", type=float, default=0.0)
    parser.add_argument("--drop-first", action="append", default=[], metavar="METHOD")
    parser.add_argument("--slow-rate", type=float, default=0.0)
    parser.add_argument("--slow-seconds", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rules = ProviderRules(
        max_log_blocks=args.max_log_blocks,
        range_style=args.range_style,
        max_log_results=args.max_log_results,
        rate=args.rate,
        burst=args.burst,
        drop_rate=args.drop_rate,
        drop_first=tuple(args.drop_first),
        slow_rate=args.slow_rate,
        slow_seconds=args.slow_seconds,
        seed=args.seed,
    )
    proxy = ProviderProxy(args.upstream, rules, host=args.host, port=args.port)
    print(proxy.url, flush=True)
    try:
        proxy._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        proxy._server.server_close()


if __name__ == "__main__":
    main()
