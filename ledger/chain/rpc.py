"""HTTP/1.1 POST on one kept-alive connection, for the JSON-RPC client.

``http.client`` imports ``email`` (for its header parser) and ``ssl`` at once:
about 40 ms of CPU at every start of ``ledger verify``, competing with the hash
of the file for the cores. A JSON-RPC call needs far less: send one request,
read a status line, headers and a body framed by ``Content-Length``, by
chunked transfer coding, or by the end of the connection (RFC 9112).
:class:`PlainHttp` does that on a socket for ``http://`` URLs;
:class:`TlsHttp` hands ``https://`` URLs to ``http.client``, imported only then.

Both raise :class:`OSError` when the connection fails and :class:`ValueError`
when the answer is not HTTP, and :class:`ServerClosed` (a
``ConnectionResetError``) when a kept-alive connection was closed by the server
before it answered, which the caller may retry once on a new connection.
"""

from __future__ import annotations

import socket
from typing import Any, NamedTuple

MAX_LINE = 65536
"""Longest status or header line accepted."""

MAX_HEADERS = 100


class ServerClosed(ConnectionResetError):
    """The server closed the connection without answering (a stale kept-alive one)."""


class Response(NamedTuple):
    status: int
    reason: str
    body: bytes
    will_close: bool
    """The server ends the connection after this answer: open a new one next time."""


class PlainHttp:
    """``POST`` over a plain TCP connection, kept open between requests."""

    def __init__(self, host: str, port: int | None, timeout: float) -> None:
        self.host = host
        self.port = port or 80
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._file: Any = None
        self._host_header = (f"[{host}]" if ":" in host else host) + (
            f":{port}" if port else ""
        )

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
        return Response(status, reason, data, will_close)

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
        return Response(response.status, response.reason, data, response.will_close)

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
