"""Where a verifier reads documents from: several sources, each trusted for nothing.

A third party verifying a model it received has the chain but not the trainer's
store. :func:`document_sources` gives ``ledger verify`` a read-only
:class:`~ledger.store.ArtifactStore` that asks, in order, the data directory's
embedded store, the configured IPFS node, and an audit API
(``ledger verify FILE --api URL``, which serves ``GET /api/v1/documents/{cid}``).

Every source's bytes are re-hashed against the CID asked for, which names the
digest on chain: the first source whose bytes match answers. A source that
sends other bytes is an :class:`~ledger.errors.IntegrityError` naming it (unless
another source has the genuine bytes); none having the document is
:class:`~ledger.errors.ArtifactNotFoundError`; a source that does not answer is
skipped, and if nothing was found it is the
:class:`~ledger.errors.StoreUnavailableError` reported.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from ledger.errors import (
    ArtifactNotFoundError,
    ConfigError,
    IntegrityError,
    StoreError,
    StoreFullError,
    StoreRefusedError,
    StoreUnavailableError,
)
from ledger.hashing.cid import Cid, bytes_cid
from ledger.store.local import LocalStore

if TYPE_CHECKING:
    from ledger.config import Settings
    from ledger.store import ArtifactStore

__all__ = ["ApiDocuments", "ReadThrough", "document_sources"]

MAX_DOCUMENT = 64 << 20
"""Bytes one document served by an audit API may have (a large model's tensor index
is a few MiB); a longer answer is refused, not read."""

TIMEOUT = 30.0
"""Seconds one request to an audit API may take."""


class ApiDocuments:
    """The documents of an audit API (``GET {url}/api/v1/documents/{cid}``), read only.

    Bytes are re-hashed before anyone sees them. ``LEDGER_API_TOKEN``, when set,
    is sent as the bearer token.
    """

    def __init__(self, url: str, *, token: str | None = None) -> None:
        parsed = urllib.parse.urlsplit(url.strip())
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(
                f"--api {url!r} is not an http(s) URL",
                hint="give the audit API's base URL, e.g. http://127.0.0.1:8000",
            )
        self.url = urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, parsed.path, "", ""))
        self.url = self.url.rstrip("/")
        self.token = token if token is not None else os.environ.get("LEDGER_API_TOKEN") or None
        self._fetched: dict[Cid, bytes | None] = {}

    def __repr__(self) -> str:
        return f"ApiDocuments({self.url!r})"

    def has(self, cid: Cid) -> bool:
        return self._fetch(cid) is not None

    def get_bytes(self, cid: Cid) -> bytes:
        data = self._fetch(cid)
        if data is None:
            raise ArtifactNotFoundError(f"the audit API at {self.url} has no document {cid}")
        actual = bytes_cid(data, cid_version=cid.version)
        if actual != cid:
            raise IntegrityError(
                f"the audit API at {self.url} served other bytes for {cid} (they hash to {actual})",
                hint="the API's copy was changed; ask its operator, or fetch it elsewhere",
            )
        return data

    def put_bytes(self, data: bytes) -> Cid:
        raise StoreError(f"the audit API at {self.url} is read-only")

    def put_file(self, path: Path) -> Cid:
        raise StoreError(f"the audit API at {self.url} is read-only")

    def _fetch(self, cid: Cid) -> bytes | None:
        if cid not in self._fetched:
            self._fetched[cid] = self._get(cid)
        return self._fetched[cid]

    def _get(self, cid: Cid) -> bytes | None:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(f"{self.url}/api/v1/documents/{cid}")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
                data: bytes = answer.read(MAX_DOCUMENT + 1)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise StoreRefusedError(
                f"the audit API at {self.url} answered {exc.code} for document {cid}",
                node_message=str(exc.reason),
                hint="check the URL and, for an API with a token, LEDGER_API_TOKEN",
            ) from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise StoreUnavailableError(
                f"the audit API at {self.url} does not answer: {reason}",
                hint="check the URL, or try again later",
            ) from exc
        if len(data) > MAX_DOCUMENT:
            raise StoreRefusedError(
                f"the audit API at {self.url} sent more than {MAX_DOCUMENT} bytes for {cid}"
            )
        return data


class ReadThrough:
    """Several stores read as one, in order; writes go nowhere (a verifier only reads)."""

    def __init__(self, sources: list[ArtifactStore]) -> None:
        self.sources = sources

    def __repr__(self) -> str:
        return f"ReadThrough({self.sources!r})"

    def has(self, cid: Cid) -> bool:
        away: StoreError | None = None
        for source in self.sources:
            try:
                if source.has(cid):
                    return True
            except (StoreUnavailableError, StoreRefusedError, StoreFullError) as exc:
                away = away or exc
        if away is not None:
            raise away
        return False

    def get_bytes(self, cid: Cid) -> bytes:
        problem: StoreError | None = None
        for source in self.sources:
            try:
                if source.has(cid):
                    return source.get_bytes(cid)
            except IntegrityError as exc:  # another source may hold the genuine bytes
                problem = exc
            except (
                StoreUnavailableError,
                StoreRefusedError,
                StoreFullError,
                ArtifactNotFoundError,
            ) as exc:
                problem = problem if isinstance(problem, IntegrityError) else exc
        raise problem or ArtifactNotFoundError(f"no source has {cid}")

    def put_bytes(self, data: bytes) -> Cid:
        raise StoreError("the verifier's document sources are read-only")

    def put_file(self, path: Path) -> Cid:
        raise StoreError("the verifier's document sources are read-only")


def document_sources(settings: Settings, *, api: str | None = None) -> ArtifactStore:
    """The verifier's documents: the embedded store of the data directory, the
    configured IPFS node, then the audit API at ``api``, in that order."""
    sources: list[ArtifactStore] = [LocalStore(settings.store_dir)]
    if settings.ipfs_api:
        from ledger.store.ipfs import IpfsStore

        sources.append(IpfsStore(settings.ipfs_api))
    if api:
        sources.append(ApiDocuments(api))
    return sources[0] if len(sources) == 1 else ReadThrough(sources)
