"""Limits before work, over real HTTP (uvicorn on a port, raw sockets): the token
check, the upload limit and the verify slots answer before the body is read."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ledger.config import Secret, Settings
from ledger.index.indexer import Indexer
from tests.conftest import Chain, free_port

TOKEN = "a-long-enough-test-token"
BOUNDARY = "ledgerboundary"
WAIT = 20.0  # seconds a socket waits for an answer that should come at once


@pytest.fixture
def index_url(tmp_path: Path) -> str:  # the limits do not depend on the index
    return f"sqlite:///{tmp_path / 'index.sqlite'}"


@pytest.fixture
def serve(settings: Settings, indexer: Indexer, chain: Chain) -> Iterator[Callable[..., object]]:
    import uvicorn

    from ledger.api.app import ApiConfig, create_app

    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**config: object) -> tuple[str, int]:
        app = create_app(
            settings,
            ApiConfig(follow=False).with_(**config),
            engine=indexer.engine,
            indexer=indexer,
        )
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        servers.append((server, thread))
        return "127.0.0.1", port

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def connection(address: tuple[str, int]) -> Iterator[socket.socket]:
    sock = socket.create_connection(address, timeout=WAIT)
    try:
        yield sock
    finally:
        sock.close()


def head(
    path: str, length: int | None, *, token: str | None = None, chunked: bool = False
) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: test",
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
    ]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def multipart(data: bytes, name: str = "model.bin") -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the answer (read until the server closes or the body ends)."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed without an answer: {raw!r}"
        raw += chunk
    top, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = top.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body


def test_no_token_is_refused_before_the_body_is_sent(serve: Callable[..., tuple[str, int]]) -> None:
    address = serve(token=Secret(TOKEN))
    with connection(address) as sock:
        sock.sendall(head("/api/v1/verify", 512 << 20))  # 512 MiB announced, none sent
        status, headers, body = answer(sock)
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    assert headers["content-type"] == "application/problem+json" and b"bearer" in body
    with connection(address) as sock:
        sock.sendall(head("/api/v1/verify", 512 << 20, token="wrong-token-of-some-size"))
        assert answer(sock)[0] == 401


def test_an_announced_oversize_upload_is_refused_before_it_is_sent(
    serve: Callable[..., tuple[str, int]],
) -> None:
    address = serve(token=Secret(TOKEN), max_upload=1000)
    with connection(address) as sock:
        sock.sendall(head("/api/v1/verify", 512 << 20, token=TOKEN))
        status, headers, body = answer(sock)
    assert status == 413 and b"1000 bytes" in body
    assert headers["content-type"] == "application/problem+json"
    with connection(address) as sock:  # other routes take small bodies only
        sock.sendall(
            b"POST /api/v1/verify/digest HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: 10000000\r\n\r\n"
        )
        assert answer(sock)[0] == 413


def test_a_streamed_oversize_upload_is_cut_off_where_it_passes_the_limit(
    serve: Callable[..., tuple[str, int]],
) -> None:
    address = serve(max_upload=100_000)
    start = multipart(b"\x00" * 400_000)[:300_000]  # the part never ends
    with connection(address) as sock:
        sock.sendall(head("/api/v1/verify", None, chunked=True))
        for at in range(0, len(start), 50_000):
            piece = start[at : at + 50_000]
            try:
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            except OSError:
                break  # the server answered and closed: fine
        status, _, body = answer(sock)  # no final chunk: only the limit can end this
    assert status == 413 and b"100000 bytes" in body


def test_concurrent_verifies_are_bounded_with_retry_after(
    serve: Callable[..., tuple[str, int]],
) -> None:
    address = serve(verify_slots=1)
    small = multipart(b"not a model at all\n" * 8)
    holder = socket.create_connection(address, timeout=WAIT)
    try:
        holder.sendall(head("/api/v1/verify", len(small)) + small[:40])  # holds the one slot
        busy = None
        for _ in range(100):
            with connection(address) as sock:
                sock.sendall(head("/api/v1/verify", len(small)) + small)
                status, headers, body = answer(sock)
            if status == 503:
                busy = headers, body
                break
            assert status == 200
            time.sleep(0.05)  # the holder's request has not reached the app yet
        assert busy is not None, "a second upload was verified while the slot was taken"
        assert busy[0]["retry-after"].isdigit() and b"try again" in busy[1]
        holder.sendall(small[40:])
        status, _, body = answer(holder)
        assert status == 200 and b'"outcome":"unknown"' in body
    finally:
        holder.close()
    with connection(address) as sock:  # the slot is free again
        sock.sendall(head("/api/v1/verify", len(small)) + small)
        assert answer(sock)[0] == 200


def folder_part(data: bytes, path: str) -> bytes:
    return multipart(data, path).replace(b'name="file";', b'name="files";', 1)


def test_a_folder_upload_is_bounded_like_a_file(serve: Callable[..., tuple[str, int]]) -> None:
    """The folder route shares the verify slots, and a streamed folder is cut off at
    the byte limit (its files' bytes, counted as they arrive)."""
    address = serve(verify_slots=1, max_upload=100_000)
    small = folder_part(b"not a model at all\n" * 8, "model/notes.txt")
    holder = socket.create_connection(address, timeout=WAIT)
    try:
        holder.sendall(head("/api/v1/verify/folder", len(small)) + small[:40])
        busy = None
        for _ in range(100):
            with connection(address) as sock:
                single = multipart(b"x" * 10)
                sock.sendall(head("/api/v1/verify", len(single)) + single)
                status, headers, body = answer(sock)
            if status == 503:
                busy = headers
                break
            assert status == 200
            time.sleep(0.05)  # the holder's request has not reached the app yet
        assert busy is not None, "a file was verified while a folder held the slot"
        holder.sendall(small[40:])
        status, _, body = answer(holder)
        assert status == 422 and b"without model weights" in body
    finally:
        holder.close()
    start = folder_part(b"\x00" * 400_000, "model/model.safetensors")[:300_000]
    with connection(address) as sock:
        sock.sendall(head("/api/v1/verify/folder", None, chunked=True))
        for at in range(0, len(start), 50_000):
            piece = start[at : at + 50_000]
            try:
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            except OSError:
                break  # the server answered and closed: fine
        status, _, body = answer(sock)  # no final chunk: only the limit can end this
    assert status == 413 and b"100000 bytes" in body
