"""A small client for the Kubo RPC API (``/api/v0/...``), as much as the IPFS store needs.

Why not ``ipfshttpclient``: its last release (0.7.0, 2021) refuses every daemon
newer than 0.8 in ``connect()``, reads a whole ``cat`` answer into memory, and
wraps transport failures in its own exception types built on ``requests``. The
store needs six commands (``add``, ``cat``, ``block/stat``, ``pin/add``,
``pin/ls``, ``version``), streaming both ways, one timeout per socket operation
and errors that name the node's address, which ``http.client`` gives in a page
of code.

Every command is a ``POST`` to ``/api/v0/<command>`` with its arguments in the
query string; ``add`` sends the file as one ``multipart/form-data`` part with
chunked transfer encoding, so a file of any size is streamed, never loaded.
Transport failures (refused, reset, timed out, unknown host) become
:class:`~ledger.errors.StoreUnavailableError`; an error answer from the node
(``{"Message": ..., "Type": "error"}``) becomes :class:`~ledger.errors.StoreRefusedError`,
except a node that says its disk or repository is full (Kubo's "maximum storage
limit exceeded", a datastore write that failed with "no space left on device",
js-ipfs's ``ENOSPC``, a quota or I/O error): that is
:class:`~ledger.errors.StoreFullError`, which the outbox retries once there is
room, as it does for a full local disk.
"""

from __future__ import annotations

import http.client
import json
import re
import secrets
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from ledger.errors import (
    ConfigError,
    LedgerError,
    StoreError,
    StoreFullError,
    StoreRefusedError,
    StoreUnavailableError,
)

_API_PREFIX = "/api/v0/"
_FULL_HINT = (
    "free space on the IPFS node's disk (or raise its Datastore.StorageMax, or unpin what "
    "is no longer needed); records wait in the outbox and are stored once there is room "
    "(`ledger sync` finishes them)"
)
# What Kubo and js-ipfs answer when their repository cannot take more: a full disk
# (ENOSPC) or quota (EDQUOT) under the datastore or blockstore, a failing device
# (EIO), Kubo's StorageMax check ("maximum storage limit exceeded"), a file too
# large for the file system (EFBIG). Matched in the node's message, any case.
_FULL_MESSAGE = re.compile(
    r"no space left on device|\benospc\b|disk quota exceeded|\bedquot\b|"
    r"storage limit exceeded|repo(?:sitory)? (?:is )?full|datastore (?:is )?full|"
    r"input/output error|\beio\b|file too large|\befbig\b",
    re.IGNORECASE,
)
_UNAVAILABLE_HINT = (
    "start the IPFS node, or point LEDGER_IPFS_API (or ipfs_api in config.json) at one "
    "that runs; artifacts can be pushed later with `ledger store push`"
)


@dataclass(frozen=True)
class ApiAddress:
    """Where the node's RPC API listens, parsed from a multiaddr or a URL."""

    scheme: str
    host: str
    port: int
    text: str
    """The address as it was configured (shown in every message)."""

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def __str__(self) -> str:
        return self.text if self.text == self.url else f"{self.text} ({self.url})"


def parse_api_address(text: str) -> ApiAddress:
    """``/ip4/127.0.0.1/tcp/5001/http`` (also ``/ip6``, ``/dns``, ``/dns4``, ``/dns6``,
    ``/https``) or ``http://host:port``; anything else is a :class:`ConfigError`."""
    value = text.strip()
    try:
        if value.startswith("/"):
            return _parse_multiaddr(value)
        return _parse_url(value)
    except ValueError as exc:
        raise ConfigError(
            f"IPFS API address {text!r} cannot be used: {exc}",
            hint="give a multiaddr like /ip4/127.0.0.1/tcp/5001/http or a URL like "
            "http://127.0.0.1:5001 in LEDGER_IPFS_API or ipfs_api in config.json",
        ) from None


def _parse_multiaddr(value: str) -> ApiAddress:
    parts = value.strip("/").split("/")
    if len(parts) not in (4, 5) or parts[2] != "tcp":
        raise ValueError("expected /<ip4|ip6|dns|dns4|dns6>/<host>/tcp/<port>[/http|/https]")
    protocol, host, _, port_text = parts[:4]
    if protocol not in ("ip4", "ip6", "dns", "dns4", "dns6"):
        raise ValueError(f"unknown address protocol /{protocol}")
    scheme = parts[4] if len(parts) == 5 else "http"
    if scheme not in ("http", "https"):
        raise ValueError(f"unknown transport /{scheme} (use /http or /https)")
    return ApiAddress(scheme, host, _port(port_text), value)


def _parse_url(value: str) -> ApiAddress:
    url = urllib.parse.urlsplit(value)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError("expected an http:// or https:// URL with a host")
    if url.path not in ("", "/") or url.query:
        raise ValueError("give the node's address only (no path such as /api/v0)")
    try:
        port = url.port
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    default = 443 if url.scheme == "https" else 5001
    return ApiAddress(url.scheme, url.hostname, port or default, value)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"port {text!r} is not a number from 1 to 65535")
    return int(text)


Params = list[tuple[str, str]]

FILE_PART = "application/octet-stream"
FOLDER_PART = "application/x-directory"
SYMLINK_PART = "application/symlink"
"""The content types of the parts of an ``add``: a file's bytes, a folder (no body),
a symbolic link (its target as the body), as the Kubo CLI sends them."""

Part = tuple[str | bytes, str, Iterable[bytes | memoryview]]
"""One part of an upload: its name (a path), its content type and its body's chunks."""


class KuboRpc:
    """Calls to one node's RPC API; a new connection per call (calls are few and long)."""

    def __init__(self, address: ApiAddress, *, timeout: float) -> None:
        self.address = address
        self.timeout = timeout

    def call(self, command: str, params: Params | None = None) -> Any:
        """Run ``command`` and return its answer decoded from JSON (None if empty)."""
        with self._request(command, params or []) as response:
            body = self._read(response, command)
        return _decode_json(body, command, self.address) if body.strip() else None

    def upload(
        self, command: str, params: Params, name: str, chunks: Iterable[bytes | memoryview]
    ) -> list[Any]:
        """Send ``chunks`` as one file part named ``name``; the answer's JSON lines."""
        return self.upload_parts(command, params, [(name, FILE_PART, chunks)])

    def upload_parts(
        self, command: str, params: Params, parts: Iterable[Part], *, duplex: bool = False
    ) -> list[Any]:
        """Send ``parts`` (name, content type, chunks), one after the other, as the
        ``multipart/form-data`` body that ``ipfs add -r`` sends; the answer's JSON lines.

        A part's name is its path below the first part's (``root/sub/file``, raw
        bytes allowed), percent-encoded here as the Kubo CLI does. Parts and their
        chunks are read as they are sent, so memory does not grow with the upload.

        ``duplex``: read the answer while the body is still being sent (over
        plain HTTP; see :meth:`_duplex`). Kubo answers one line per entry as it
        is added; a client that reads only once it has sent everything stalls
        both sides once those lines fill the socket buffers (a few thousand
        entries), so a folder is sent this way.
        """
        boundary = "ledger-" + secrets.token_hex(16)

        def body() -> Iterator[bytes | memoryview]:
            for name, content_type, chunks in parts:
                quoted = urllib.parse.quote(name, safe="")
                yield (
                    f"--{boundary}\r\n"
                    f'Content-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
                    f"Content-Type: {content_type}\r\n\r\n"
                ).encode()
                for chunk in chunks:
                    if chunk:  # an empty piece would end the chunked body early
                        yield chunk
                yield b"\r\n"
            yield f"--{boundary}--\r\n".encode()

        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        if duplex and self.address.scheme == "http":
            text = self._duplex(command, params, body(), headers)
        else:
            with self._request(command, params, body(), headers) as response:
                text = self._read(response, command)
        return [
            _decode_json(line, command, self.address) for line in text.splitlines() if line.strip()
        ]

    @contextmanager
    def stream(self, command: str, params: Params) -> Iterator[Iterator[bytes]]:
        """Run ``command`` and yield an iterator over its answer's bytes, as they come."""
        with self._request(command, params) as response:
            if response.status != 200:
                self._read(response, command)  # raises with the node's message

            def pieces() -> Iterator[bytes]:
                while True:
                    piece = self._guard(lambda: response.read1(1 << 20), command)
                    if not piece:
                        break
                    yield piece
                _raise_trailer_error(response, command, self.address)

            yield pieces()

    # -- internals ------------------------------------------------------------------

    @contextmanager
    def _request(
        self,
        command: str,
        params: Params,
        body: Iterable[bytes | memoryview] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Iterator[http.client.HTTPResponse]:
        address = self.address
        connection_type = (
            http.client.HTTPSConnection if address.scheme == "https" else http.client.HTTPConnection
        )
        connection = connection_type(address.host, address.port, timeout=self.timeout)
        path = _API_PREFIX + command + ("?" + urllib.parse.urlencode(params) if params else "")
        try:

            def send() -> http.client.HTTPResponse:
                try:
                    connection.request("POST", path, body=body, headers=headers or {})
                except (BrokenPipeError, ConnectionResetError):
                    if body is None:
                        raise
                    # A node that refuses an upload may answer and close before it has
                    # read the body: its answer says why, so read it if it is there.
                    return _early_answer(connection)
                return connection.getresponse()

            response = self._guard(send, command)
            yield response
        finally:
            connection.close()

    def _guard(self, action: Any, command: str) -> Any:
        """Run ``action``; a transport failure becomes StoreUnavailableError."""
        try:
            return action()
        except TimeoutError as exc:  # socket.timeout is TimeoutError
            raise StoreUnavailableError(
                f"the IPFS node at {self.address} did not answer `{command}` within "
                f"{self.timeout:g} s",
                hint=_UNAVAILABLE_HINT,
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise StoreUnavailableError(
                f"the IPFS node at {self.address} does not answer ({reason})",
                hint=_UNAVAILABLE_HINT,
            ) from exc

    def _duplex(
        self,
        command: str,
        params: Params,
        body: Iterable[bytes | memoryview],
        headers: dict[str, str],
    ) -> bytes:
        """POST ``body`` (chunked) from a thread while this one reads the answer.

        The socket itself has no timeout here (a read may wait while a large file
        is sent); a watchdog ends the exchange once neither side has moved for
        :attr:`timeout` seconds, as the per-operation timeout does elsewhere. An
        error raised by ``body`` (a file that cannot be read) is raised as it is;
        a node that answers with an error before it has read everything is heard.
        ``http.client`` is used below its ``request()``: it has no full-duplex
        mode, and a second HTTP library would add a dependency for one call.
        """
        connection = http.client.HTTPConnection(
            self.address.host, self.address.port, timeout=self.timeout
        )
        path = _API_PREFIX + command + ("?" + urllib.parse.urlencode(params) if params else "")
        moved = [time.monotonic()]
        failed: list[BaseException] = []
        finished = threading.Event()
        timed_out = threading.Event()

        def abort() -> None:
            with suppress(OSError):
                if connection.sock is not None:
                    connection.sock.shutdown(socket.SHUT_RDWR)

        def send() -> None:
            sock = connection.sock
            assert sock is not None
            try:
                for piece in body:
                    sock.sendall(b"%x\r\n" % len(piece))
                    sock.sendall(piece)
                    sock.sendall(b"\r\n")
                    moved[0] = time.monotonic()
                sock.sendall(b"0\r\n\r\n")
            except (LedgerError, OSError, ValueError) as exc:  # raised by the reading thread
                failed.append(exc)
                if not isinstance(exc, OSError):
                    abort()

        def watch() -> None:
            while not finished.wait(min(1.0, self.timeout / 4)):
                if time.monotonic() - moved[0] > self.timeout:
                    timed_out.set()
                    abort()
                    return

        def start() -> None:
            connection.connect()
            assert connection.sock is not None
            connection.sock.settimeout(None)  # the watchdog bounds silence instead
            connection.putrequest("POST", path, skip_accept_encoding=True)
            for key, value in {**headers, "Transfer-Encoding": "chunked"}.items():
                connection.putheader(key, value)
            connection.endheaders()

        sender = threading.Thread(target=send, name="ledger-ipfs-upload", daemon=True)
        watchdog = threading.Thread(target=watch, name="ledger-ipfs-watchdog", daemon=True)
        try:
            self._guard(start, command)
            sender.start()
            watchdog.start()
            response: http.client.HTTPResponse | None = None
            pieces: list[bytes] = []
            try:
                response = connection.getresponse()
                while piece := response.read1(1 << 16):
                    pieces.append(piece)
                    moved[0] = time.monotonic()
            except (OSError, http.client.HTTPException) as exc:
                if response is None or response.status == 200:
                    sender.join(self.timeout)
                    raise self._duplex_failure(command, failed, timed_out, exc) from exc
            sender.join(self.timeout)
            answer = b"".join(pieces)
            if response.status == 200 and failed:  # the node took a body cut short
                raise self._duplex_failure(command, failed, timed_out, failed[0])
            return self._checked(response, answer, command)
        finally:
            finished.set()
            connection.close()

    def _duplex_failure(
        self,
        command: str,
        failed: list[BaseException],
        timed_out: threading.Event,
        exc: BaseException,
    ) -> BaseException:
        """What to raise when a duplex exchange broke: the body's own error first."""
        for error in failed:
            if not isinstance(error, OSError):
                return error
        if timed_out.is_set():
            return StoreUnavailableError(
                f"the IPFS node at {self.address} did not answer `{command}` within "
                f"{self.timeout:g} s",
                hint=_UNAVAILABLE_HINT,
            )
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return StoreUnavailableError(
            f"the IPFS node at {self.address} does not answer ({reason})",
            hint=_UNAVAILABLE_HINT,
        )

    def _read(self, response: http.client.HTTPResponse, command: str) -> bytes:
        body: bytes = self._guard(response.read, command)
        return self._checked(response, body, command)

    def _checked(self, response: http.client.HTTPResponse, body: bytes, command: str) -> bytes:
        """``body`` if the answer is a success; the node's error otherwise."""
        if response.status != 200:
            raise _node_error(body, response.status, command, self.address)
        _raise_trailer_error(response, command, self.address)
        if b'"Type":"error"' in body.replace(b" ", b""):
            for line in body.splitlines():
                document = _decode_json(line, command, self.address) if line.strip() else None
                if isinstance(document, dict) and document.get("Type") == "error":
                    raise _node_error(line, response.status, command, self.address)
        return body


def _early_answer(connection: http.client.HTTPConnection) -> http.client.HTTPResponse:
    """The answer a node sent before closing on an upload; re-raises if there is none."""
    try:
        return connection.getresponse()
    except (OSError, http.client.HTTPException):
        raise ConnectionResetError("the node closed the connection during the upload") from None


def _raise_trailer_error(
    response: http.client.HTTPResponse, command: str, address: ApiAddress
) -> None:
    """Kubo reports an error that happens mid-stream in the X-Stream-Error header."""
    error = response.getheader("X-Stream-Error")
    if error:
        if _FULL_MESSAGE.search(error):
            raise StoreFullError(
                f"the IPFS node at {address} is full, it failed `{command}`: {error}",
                hint=_FULL_HINT,
            )
        raise StoreRefusedError(
            f"the IPFS node at {address} failed `{command}`: {error}", node_message=error
        )


def _node_error(
    body: bytes, status: int, command: str, address: ApiAddress
) -> StoreRefusedError | StoreFullError:
    try:
        document = json.loads(body)
        message = str(document.get("Message") or document) if isinstance(document, dict) else ""
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        message = ""
    if not message:
        message = body.decode("utf-8", "replace").strip()[:300] or f"HTTP {status}"
    if _FULL_MESSAGE.search(message):
        return StoreFullError(
            f"the IPFS node at {address} is full, it refused `{command}`: {message}",
            hint=_FULL_HINT,
        )
    return StoreRefusedError(
        f"the IPFS node at {address} refused `{command}`: {message}", node_message=message
    )


def _decode_json(body: bytes | str, command: str, address: ApiAddress) -> Any:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise StoreError(
            f"the IPFS node at {address} answered `{command}` with something that is not JSON",
            hint="check that the address is a Kubo RPC API (port 5001 by default), not a gateway",
        ) from exc
