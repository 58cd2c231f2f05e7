"""A response cache for the index's read routes, invalidated by the index itself.

Every transaction of the indexer that changes what the index says (new events,
a rollback past a reorg or chain reset, documents read from the store) also
raises ``index_state.generation`` (:mod:`ledger.index.indexer`). The cache is
an ASGI middleware in each server process: for a ``GET`` under
``/api/v1/runs``, ``/api/v1/lookup`` or ``/api/v1/taint`` it reads the
generation (one primary-key read on the index database, on every request) and
answers from memory only when its copy was made at that same generation. So a
cached answer never outlives a new block with registry events, a rollback or
a document the indexer has read: the first request after the commit is
answered by the route again. The generation is read before the route runs, so
a copy can only be newer than its key, never older. Requests for a question
that is being answered wait for that answer instead of asking the database too.

Only ``200`` answers are kept (problems are always answered afresh), and only
for requests that pass the bearer check when a token is configured. Every kept
route's ``200`` carries a strong ``ETag`` (a digest of the body) and
``Cache-Control: no-cache``; ``If-None-Match`` with the current tag gets
``304``. ``X-Ledger-Cache: hit`` or ``miss`` says how it was answered.
``/api/v1/verify`` is never cached: it re-checks the chain on every call.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import QueuePool, StaticPool

from ledger.api.deps import token_matches
from ledger.config import Secret

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Key = tuple[str, bytes]  # path, query string

CACHED = ("/api/v1/runs", "/api/v1/lookup", "/api/v1/taint")
DEFAULT_ENTRIES = 4096
MAX_BYTES = 64 << 20  # per server process
MAX_ENTRY_BYTES = 1 << 20
GENERATION_SQL = "SELECT generation FROM index_state WHERE id = 1"


class IndexGeneration:
    """The index's current generation, read on a connection of its own.

    Not from the routes' pool: the read happens on the event loop, and a pool
    whose connections are all lent to route threads would block it (and those
    threads wait on the loop to give their connections back).
    """

    def __init__(self, engine: Engine) -> None:
        self._shared = engine
        if isinstance(engine.pool, StaticPool):  # one shared in-memory database
            self.engine = engine
        else:
            connect_args = {"check_same_thread": False} if engine.dialect.name == "sqlite" else {}
            self.engine = create_engine(
                engine.url,
                poolclass=QueuePool,
                pool_size=1,
                max_overflow=0,
                connect_args=connect_args,
                isolation_level="AUTOCOMMIT",
            )

    def read(self) -> int | None:
        """The generation, or None when the database does not answer (then: no caching)."""
        try:
            with self.engine.connect() as connection:
                value = connection.exec_driver_sql(GENERATION_SQL).scalar()
        except SQLAlchemyError:
            return None
        return None if value is None else int(value)

    def close(self) -> None:
        if self.engine is not self._shared:
            self.engine.dispose()


@dataclass(frozen=True)
class _Entry:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    etag: bytes


class ResponseCache:
    """ASGI middleware; see the module's docstring."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        generation: IndexGeneration,
        token: Secret | None = None,
        entries: int = DEFAULT_ENTRIES,
    ) -> None:
        self.app = app
        self.generation = generation
        self.token = token
        self.max_entries = entries
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        self._filling: dict[Key, asyncio.Future[_Entry | None]] = {}
        self._at: int | None = None  # the generation the entries were made at
        self._bytes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.max_entries <= 0
            or scope["type"] != "http"
            or scope["method"] != "GET"
            or not scope["path"].startswith(CACHED)
        ):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.token is not None and not _authorized(headers, self.token):
            await self.app(scope, receive, send)  # the route answers 401
            return
        generation = self.generation.read()
        if generation is None:
            await self.app(scope, receive, send)  # the route reports the database
            return
        if generation != self._at:
            self._entries.clear()
            self._filling.clear()
            self._bytes = 0
            self._at = generation
        key = (scope["path"], scope["query_string"])
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            await _answer(entry, headers, send, b"hit")
            return
        filling = self._filling.get(key)
        if filling is not None:  # the same question is being answered: wait for that answer
            entry = await asyncio.shield(filling)
            if entry is not None:
                await _answer(entry, headers, send, b"hit")
            else:  # it was not a 200: ask the route again
                await self.app(scope, receive, send)
            return
        filling = asyncio.get_running_loop().create_future()
        self._filling[key] = filling
        entry = None
        try:
            entry = await self._fill(scope, receive, send, headers)
        finally:
            filling.set_result(entry)
            if self._filling.get(key) is filling:
                del self._filling[key]
        if entry is not None and generation == self._at:
            self._keep(key, entry)

    async def _fill(
        self, scope: Scope, receive: Receive, send: Send, request_headers: dict[bytes, bytes]
    ) -> _Entry | None:
        """Runs the route; a 200 is buffered, tagged, answered and returned to be kept."""
        start: Message | None = None
        chunks: list[bytes] = []
        made: list[_Entry] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                if message["status"] != 200:
                    await send(message)  # problems pass through as they are
                    return
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            given = start.get("headers", [])
            if any(n == b"cache-control" and b"no-store" in v for n, v in given):
                # e.g. the store was away: answered as the route made it, not kept
                await send({**start, "headers": [*given, (b"x-ledger-cache", b"miss")]})
                await send({"type": "http.response.body", "body": body})
                return
            entry = _Entry(
                200,
                [(n, v) for n, v in given if n not in (b"etag", b"cache-control")],
                body,
                _etag(body),
            )
            made.append(entry)
            await _answer(entry, request_headers, send, b"miss")

        await self.app(scope, receive, capture)
        return made[0] if made else None

    def _keep(self, key: Key, entry: _Entry) -> None:
        size = len(entry.body) + len(key[0]) + len(key[1])
        if size > MAX_ENTRY_BYTES:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(old.body) + len(key[0]) + len(key[1])
        self._entries[key] = entry
        self._bytes += size
        while len(self._entries) > self.max_entries or self._bytes > MAX_BYTES:
            old_key, old = self._entries.popitem(last=False)
            self._bytes -= len(old.body) + len(old_key[0]) + len(old_key[1])


def _etag(body: bytes) -> bytes:
    return b'"' + hashlib.blake2b(body, digest_size=12).hexdigest().encode() + b'"'


async def _answer(
    entry: _Entry, request_headers: dict[bytes, bytes], send: Send, how: bytes
) -> None:
    extra = [(b"etag", entry.etag), (b"cache-control", b"no-cache"), (b"x-ledger-cache", how)]
    wanted = request_headers.get(b"if-none-match")
    if wanted is not None and _matches(wanted, entry.etag):
        await send({"type": "http.response.start", "status": 304, "headers": extra})
        await send({"type": "http.response.body", "body": b""})
        return
    await send(
        {"type": "http.response.start", "status": entry.status, "headers": entry.headers + extra}
    )
    await send({"type": "http.response.body", "body": entry.body})


def _matches(if_none_match: bytes, etag: bytes) -> bool:
    tags = [t.strip().removeprefix(b"W/") for t in if_none_match.split(b",")]
    return b"*" in tags or etag in tags


def _authorized(headers: dict[bytes, bytes], token: Secret) -> bool:
    return token_matches(headers.get(b"authorization", b"").decode("latin-1"), token)
