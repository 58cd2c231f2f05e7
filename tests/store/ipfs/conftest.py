"""Fixtures for the IPFS store: one real js-ipfs node per session, and fresh ones.

``ipfs_node`` is shared by the session (starting js-ipfs costs seconds); tests
on it only add content, under data they make unique, and never stop it.
``own_node`` is a node of the test's own, for tests that stop and restart it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.store.ipfs import IpfsStore
from tests.store.ipfs.node import IpfsNode


@pytest.fixture(scope="session")
def ipfs_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpfsNode]:
    node = IpfsNode(tmp_path_factory.mktemp("ipfs"))
    node.start()
    yield node
    node.stop()


@pytest.fixture
def own_node(tmp_path: Path) -> Iterator[IpfsNode]:
    node = IpfsNode(tmp_path / "own-ipfs")
    node.start()
    yield node
    node.stop()


@pytest.fixture
def ipfs(ipfs_node: IpfsNode) -> IpfsStore:
    """The store over the session node (short look-up timeout: the node is offline)."""
    return IpfsStore(ipfs_node.api, find_timeout=2)
