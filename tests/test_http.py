"""The JSON-RPC client's HTTP/1.1 (``ledger.chain._http``) against a real HTTP server.

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

from ledger.chain import _http
from ledger.chain.reader import JsonRpc
from ledger.errors import ChainUnavailableError, RpcError
from tests.conftest import free_port


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    ports: set[int] = set()  # noqa: RUF012  client ports seen; one server per test, reset by the fixture

    def do_POST(self) -> None:  # the name http.server calls
        Handler.ports.add(self.client_address[1])
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        method = request["method"]
        if method == "http_error":
            self.send_error(503, "busy")
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

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Handler.ports = set()
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


def test_nothing_listening_is_a_chain_unavailable_error() -> None:
    rpc = JsonRpc(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ChainUnavailableError, match="no chain answers"):
        rpc("eth_chainId")


def test_what_is_not_http_is_refused(server: str) -> None:
    with pytest.raises(ValueError, match="status line"):
        _http._status(b"SSH-2.0-OpenSSH\r\n")
    with pytest.raises(ValueError, match="chunk size"):
        _http._read_chunked(io.BytesIO(b"-5\r\nxx"))
    with pytest.raises(ValueError, match="Content-Length"):
        _http._length("12, 13")
