"""The JSON-RPC client's HTTP/1.1 (``ledger.chain.rpc``) against a real HTTP server.

The server is the standard library's ``http.server`` on 127.0.0.1, answering
as a JSON-RPC node might: with ``Content-Length``, chunked, or framed by the end
of the connection, keeping the connection open or closing it.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ledger.chain import rpc as _http
from ledger.chain.rpc import JsonRpc
from ledger.errors import ChainError, ChainUnavailableError, RpcError
from tests.conftest import free_port


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    ports: set[int] = set()  # noqa: RUF012  client ports seen; one server per test, reset by the fixture
    hits: dict[str, int] = {}  # noqa: RUF012  requests per method; reset by the fixture

    def do_POST(self) -> None:  # the name http.server calls
        Handler.ports.add(self.client_address[1])
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if isinstance(request, list):
            self._batch(request)
            return
        method = request["method"]
        Handler.hits[method] = Handler.hits.get(method, 0) + 1
        if method in ("http_error", "eth_getBusy"):
            self.send_error(503, "busy")
            return
        if method == "eth_getForbidden":
            self.send_error(403, "no API key")
            return
        answer: dict[str, Any] = {"jsonrpc": "2.0", "id": request["id"]}
        if method == "rpc_error":
            answer["error"] = {"code": -32000, "message": "execution reverted", "data": "0x12"}
        else:
            answer["result"] = {"method": method, "params": request["params"], "pad": "x" * 5000}
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if method == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(body), 1000):
                piece = body[start : start + 1000]
                self.wfile.write(f"{len(piece):x};ext=1\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\nX-Trailer: yes\r\n\r\n")
        elif method == "until_close":
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        if method == "then_close":
            self.close_connection = True  # without saying so: the next request must reconnect

    def _batch(self, calls: list[dict[str, Any]]) -> None:
        """Answers a batch in reverse order, as the spec allows; ``skip`` gets no answer,
        ``refuse_batch`` makes the answer one error object for the whole batch."""
        if any(call["method"] == "http_error" for call in calls):
            self.send_error(503, "busy")
            return
        answers: Any = []
        for call in reversed(calls):
            method = call["method"]
            answer: dict[str, Any] = {"jsonrpc": "2.0", "id": call["id"]}
            if method == "skip":
                continue
            if method == "rpc_error":
                answer["error"] = {"code": -32000, "message": "reverted", "data": call["params"]}
            else:
                answer["result"] = {"method": method, "params": call["params"]}
            answers.append(answer)
        if any(call["method"] == "refuse_batch" for call in calls):
            answers = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "no"}}
        body = json.dumps(answers).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Handler.ports = set()
    Handler.hits = {}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/rpc"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_calls_share_one_kept_alive_connection(server: str) -> None:
    rpc = JsonRpc(server)
    for n in range(5):
        assert rpc("eth_blockNumber", n)["params"] == [n]
    assert len(Handler.ports) == 1


@pytest.mark.parametrize("framing", ["chunked", "until_close"])
def test_chunked_and_close_framed_answers_are_read_whole(server: str, framing: str) -> None:
    rpc = JsonRpc(server)
    for _ in range(2):
        answer = rpc(framing, "ünï")
        assert answer["params"] == ["ünï"] and answer["pad"] == "x" * 5000


def test_a_connection_the_server_dropped_is_reopened_once(server: str) -> None:
    rpc = JsonRpc(server)
    assert rpc("then_close")["method"] == "then_close"
    assert rpc("eth_chainId")["method"] == "eth_chainId"
    assert len(Handler.ports) == 2


def test_errors_are_the_ledger_errors(server: str) -> None:
    rpc = JsonRpc(server)
    with pytest.raises(RpcError, match="execution reverted") as raised:
        rpc("rpc_error")
    assert raised.value.code == -32000 and raised.value.data == "0x12"
    with pytest.raises(ChainUnavailableError, match="HTTP 503"):
        rpc("http_error")
    assert rpc("eth_chainId")["method"] == "eth_chainId"  # and the client recovers


def test_a_busy_server_is_asked_again_a_refusing_one_is_not(server: str) -> None:
    """503 (busy) is retried for a read, within the policy; 403 (no key) is final."""
    waits: list[float] = []
    rpc = JsonRpc(server, sleep=waits.append)
    with pytest.raises(ChainUnavailableError, match=r"HTTP 503.*after 5 tries"):
        rpc("eth_getBusy")
    assert Handler.hits["eth_getBusy"] == 5 and len(waits) == 4
    with pytest.raises(ChainUnavailableError, match="HTTP 403"):
        rpc("eth_getForbidden")
    assert Handler.hits["eth_getForbidden"] == 1 and len(waits) == 4
    with pytest.raises(ChainUnavailableError, match="HTTP 503"):
        rpc("http_error")  # not a read: never sent twice
    assert Handler.hits["http_error"] == 1


def test_a_batch_answered_in_reverse_order_is_matched_by_id(server: str) -> None:
    rpc = JsonRpc(server)
    rpc("eth_chainId")  # ids need not start at 1
    calls: list[tuple[str, list[object]]] = [
        ("first", [1]),
        ("rpc_error", ["0xab"]),
        ("third", [3]),
        ("rpc_error", ["0xcd"]),
    ]
    answers = rpc.batch(calls)
    assert len(answers) == 4
    assert answers[0] == {"method": "first", "params": [1]}
    assert answers[2] == {"method": "third", "params": [3]}
    for index, data in ((1, "0xab"), (3, "0xcd")):
        with pytest.raises(RpcError, match=r"rpc_error failed at .*: reverted") as raised:
            answers[index]
        assert raised.value.code == -32000 and raised.value.data == [data]
        error = answers.error(index)
        assert error is not None and error.data == [data]
    assert answers.error(0) is None
    with pytest.raises(RpcError):
        list(answers)  # iterating reads every answer
    assert len(rpc.batch([])) == 0  # nothing to ask: no request
    assert rpc("eth_blockNumber")["method"] == "eth_blockNumber"
    assert len(Handler.ports) == 1  # the batches went over the kept-alive connection


def test_a_batch_refused_whole_or_answered_in_part_is_an_error(server: str) -> None:
    rpc = JsonRpc(server)
    with pytest.raises(RpcError, match="no") as raised:
        rpc.batch([("eth_chainId", []), ("refuse_batch", [])])
    assert raised.value.code == -32600
    with pytest.raises(ChainError, match=r"skip .*no answer"):
        rpc.batch([("eth_chainId", []), ("skip", [])])
    with pytest.raises(ChainUnavailableError, match="HTTP 503"):
        rpc.batch([("eth_chainId", []), ("http_error", [])])
    assert list(rpc.batch([("eth_chainId", [])])) == [{"method": "eth_chainId", "params": []}]


def test_nothing_listening_is_a_chain_unavailable_error() -> None:
    rpc = JsonRpc(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ChainUnavailableError, match="no chain answers"):
        rpc("eth_chainId")
    with pytest.raises(ChainUnavailableError, match=r"no chain answers .*eth_chainId, eth_call"):
        rpc.batch([("eth_chainId", []), ("eth_call", []), ("eth_chainId", [])])


def test_what_is_not_http_is_refused(server: str) -> None:
    with pytest.raises(ValueError, match="status line"):
        _http._status(b"SSH-2.0-OpenSSH\r\n")
    with pytest.raises(ValueError, match="chunk size"):
        _http._read_chunked(io.BytesIO(b"-5\r\nxx"))
    with pytest.raises(ValueError, match="Content-Length"):
        _http._length("12, 13")
