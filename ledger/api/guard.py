"""Limits that act before any work: the outermost ASGI middleware of the API.

For every request, before a route (or the multipart parser) reads a byte of the
body:

* ``/api/v1/...`` needs the bearer token when one is configured: without it the
  answer is 401 at once (CORS preflights excepted; the routes check it again);
* a body is never read past its limit: ``max_upload`` plus room for the
  multipart framing on ``POST /api/v1/verify`` (for each of up to
  :data:`~ledger.api.folder_upload.MAX_FILES` parts on ``/api/v1/verify/folder``,
  whose route counts the files' own bytes against ``max_upload``), 1 MiB elsewhere. A declared
  ``Content-Length`` over the limit is answered 413 at once; a streamed body
  (chunked) is counted as it arrives and answered 413 as soon as it passes the
  limit, the rest unread;
* at most ``verify_slots`` uploads are verified at a time in this process; one
  more gets 503 with ``Retry-After`` straight away (it does not wait: a waiting
  upload would hold its connection and its spooled bytes).

Every response also carries the security headers (:data:`SECURITY_HEADERS`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ledger.api.deps import token_matches
from ledger.api.folder_upload import MAX_FOLDER_FRAMING
from ledger.config import Secret

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UPLOAD_PATH = "/api/v1/verify"
FOLDER_PATH = "/api/v1/verify/folder"
MULTIPART_SLACK = 64 << 10  # boundaries, part headers and the `run` field around the file
MAX_BODY = 1 << 20  # any other request
RETRY_AFTER = "5"

# The page and /docs load scripts, styles and images from this server only, and
# no other site may frame them.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


class RequestGuard:
    """ASGI middleware; see the module's docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: Secret | None,
        max_upload: int,
        verify_slots: int,
    ) -> None:
        self.app = app
        self.token = token
        self.max_upload = max_upload
        self.verify_slots = verify_slots
        self.verifying = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _with_headers(send)
        path: str = scope["path"]
        method: str = scope["method"]
        headers = dict(scope["headers"])
        if (
            self.token is not None
            and path.startswith("/api/")
            and method != "OPTIONS"
            and not token_matches(headers.get(b"authorization", b"").decode("latin-1"), self.token)
        ):
            given = headers.get(b"authorization", b"").partition(b" ")
            detail = (
                "the bearer token is not the configured one"
                if given[0].lower() == b"bearer" and given[2]
                else "this API needs a bearer token"
            )
            await _problem(
                send,
                401,
                "AuthError",
                detail,
                hint="send Authorization: Bearer <token>",
                extra=[(b"www-authenticate", b"Bearer")],
            )
            return
        upload = method == "POST" and path in (UPLOAD_PATH, FOLDER_PATH)
        slack = MAX_FOLDER_FRAMING if path == FOLDER_PATH else MULTIPART_SLACK
        limit = self.max_upload + slack if upload else MAX_BODY
        declared = headers.get(b"content-length")
        if declared is not None:
            text = declared.decode("latin-1").strip()
            if not text.isdigit():
                await _problem(send, 400, "HTTPError", "Content-Length is not a byte count")
                return
            if int(text) > limit:
                if not upload:
                    await _body_too_large(send)
                elif path == FOLDER_PATH:
                    await self._folder_too_large(send)
                else:
                    await self._too_large(send)
                return
        if upload and self.verifying >= self.verify_slots:
            await _problem(
                send,
                503,
                "BusyError",
                f"{self.verify_slots} uploads are being verified already",
                hint=f"try again in {RETRY_AFTER} s, or send the file's CID to "
                "/api/v1/verify/digest",
                extra=[(b"retry-after", RETRY_AFTER.encode())],
            )
            return
        too_large = self._folder_too_large if path == FOLDER_PATH else self._too_large
        body = _Body(receive, send, limit, too_large if upload else _body_too_large)
        self.verifying += upload
        try:
            await self.app(scope, body.receive, body.send)
        finally:
            self.verifying -= upload

    async def _folder_too_large(self, send: Send) -> None:
        await _problem(
            send,
            413,
            "UploadTooLargeError",
            f"files: the folder is larger than the {self.max_upload} bytes this API accepts",
            hint="verify it locally with `ledger verify FOLDER`",
        )

    async def _too_large(self, send: Send) -> None:
        await _problem(
            send,
            413,
            "UploadTooLargeError",
            f"file: larger than the {self.max_upload} bytes this API accepts",
            hint="verify it locally with `ledger verify FILE`, or send its CID to "
            "/api/v1/verify/digest",
        )


async def _body_too_large(send: Send) -> None:
    await _problem(send, 413, "HTTPError", f"the body is larger than {MAX_BODY} bytes")


def _with_headers(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            given = [(n, v) for n, v in message.get("headers", []) if n not in _OURS]
            message = {**message, "headers": [*given, *SECURITY_HEADERS]}
        await send(message)

    return sending


_OURS = {name for name, _ in SECURITY_HEADERS}


class _Body:
    """The request's ``receive`` counted: once the body passes ``limit`` bytes the
    guard answers (413) itself, the app is told the client went away (it stops
    reading) and whatever the app would still send is dropped."""

    def __init__(
        self, receive: Receive, send: Send, limit: int, too_large: Callable[[Send], Awaitable[None]]
    ) -> None:
        self._receive = receive
        self._send = send
        self.limit = limit
        self.too_large = too_large
        self.seen = 0
        self.answered = False

    async def receive(self) -> Message:
        if self.answered:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.limit:
                self.answered = True
                await self.too_large(self._send)
                return {"type": "http.disconnect"}
        return message

    async def send(self, message: Message) -> None:
        if not self.answered:
            await self._send(message)


async def _problem(
    send: Send,
    status: int,
    title: str,
    detail: str,
    *,
    hint: str | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    kebab = "".join("-" + c.lower() if c.isupper() else c for c in title).lstrip("-")
    kind = f"http-{status}" if title == "HTTPError" else kebab
    body = {"type": f"/problems/{kind}", "title": title, "status": status, "detail": detail}
    if hint:
        body["hint"] = hint
    raw = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(raw)).encode()),
                (b"connection", b"close"),
                *(extra or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": raw})
