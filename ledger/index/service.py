"""Builds an :class:`~ledger.index.indexer.Indexer` from the settings and runs it on a
background thread (as ``ledger serve`` does)."""

from __future__ import annotations

import threading

from sqlalchemy.engine import Engine

from ledger.chain.records import configured_registry
from ledger.chain.rpc import JsonRpc
from ledger.config import Settings
from ledger.index import artifact_store, confirmations_for
from ledger.index.indexer import Indexer


def build_indexer(
    settings: Settings, engine: Engine, *, confirmations: int | None = None
) -> Indexer:
    """The indexer of the registry the settings name (the chain must answer)."""
    address = configured_registry(settings, why="there is nothing to index")
    rpc = JsonRpc(settings.rpc_url)
    chain_id = settings.chain_id if settings.chain_id is not None else int(rpc("eth_chainId"), 16)
    return Indexer(
        engine,
        rpc,
        address,
        artifact_store(settings),
        deploy_block=settings.deploy_block or 0,
        confirmations=confirmations_for(settings, chain_id, confirmations),
    )


class BackgroundIndexer:
    """Runs :meth:`Indexer.follow` on a daemon thread until :meth:`stop`."""

    def __init__(self, indexer: Indexer, *, interval: float = 1.0) -> None:
        self.indexer = indexer
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=indexer.follow,
            args=(self._stop,),
            kwargs={"interval": interval},
            name="ledger-indexer",
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
