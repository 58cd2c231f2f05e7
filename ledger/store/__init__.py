"""Content-addressed artifact stores.

An :class:`ArtifactStore` files bytes under their CID (the same CID ``ipfs add``
gives, see :mod:`ledger.hashing.cid`) and re-hashes them on every read, so a
changed byte on disk is an :class:`~ledger.errors.IntegrityError`, never a
silent wrong answer. :class:`LocalStore` is the embedded default: one file per
artifact in ``<data dir>/store``, written to a temporary file, fsynced and
renamed into place, so a crash never leaves a partial artifact under a CID.
:class:`~ledger.store.ipfs.IpfsStore` keeps artifacts in an IPFS node instead;
:func:`open_store` picks one from the settings.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ledger.hashing.cid import DAG_PB, RAW, Cid
from ledger.store.local import LocalStore

if TYPE_CHECKING:
    from ledger.config import Settings

__all__ = [
    "ArtifactStore",
    "LocalStore",
    "candidates_for_digest",
    "find_by_digest",
    "open_store",
    "synced_together",
]


class ArtifactStore(Protocol):
    """What the outbox worker, the verifier and the index need of a store."""

    def put_bytes(self, data: bytes) -> Cid:
        """Store ``data``; returns its CIDv1."""
        ...

    def put_file(self, path: Path) -> Cid:
        """Store a file's bytes; returns its CIDv1."""
        ...

    def get_bytes(self, cid: Cid) -> bytes:
        """The bytes filed under ``cid``, re-hashed; raises if missing or changed."""
        ...

    def has(self, cid: Cid) -> bool:
        """Whether ``cid`` is stored (without re-hashing)."""
        ...


def candidates_for_digest(digest: bytes) -> list[Cid]:
    """The CIDv1s an on-chain sha2-256 digest can stand for (raw leaf or dag-pb root)."""
    return [Cid.from_digest(digest, RAW), Cid.from_digest(digest, DAG_PB)]


def find_by_digest(store: ArtifactStore, digest: bytes) -> Cid | None:
    """The stored CID whose multihash digest is ``digest``, if any."""
    for cid in candidates_for_digest(digest):
        if store.has(cid):
            return cid
    return None


def synced_together(store: ArtifactStore) -> contextlib.AbstractContextManager[None]:
    """``store.synced_together()`` where the store batches its folder syncs
    (:class:`LocalStore`), else nothing."""
    batch = getattr(store, "synced_together", None)
    return batch() if batch is not None else contextlib.nullcontext()


def open_store(settings: Settings) -> ArtifactStore:
    """The store the settings name: the IPFS node at ``settings.ipfs_api`` if one is
    configured (``LEDGER_IPFS_API`` or ``ipfs_api`` in config.json), else the
    embedded :class:`LocalStore` in ``<data dir>/store``, keeping weights files as
    ``settings.store_weights`` says (``copy`` or ``reference``; an IPFS node always
    receives the bytes).

    Opening never contacts the node (a bad address is a ConfigError at once);
    each call does, and raises :class:`~ledger.errors.StoreUnavailableError`
    while the node is down, which callers may retry.
    """
    if settings.ipfs_api:
        from ledger.store.ipfs import IpfsStore

        return IpfsStore(settings.ipfs_api)
    return LocalStore(settings.store_dir, weights=settings.store_weights)
