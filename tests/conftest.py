"""Shared fixtures: one real Anvil per test session, a fresh EVM snapshot per test.

``chain`` gives each test the deployed registry with its state reverted
afterwards (``evm_snapshot`` / ``evm_revert``), so tests never see each
other's runs. Nothing here mocks the chain or the store.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from ledger.chain.anvil import AnvilProcess, free_port, rpc_call
from ledger.config import ANVIL_DEV_KEY, Settings, save_deployment
from ledger.store import LocalStore
from tests.chain.web3_registry import Registry, connect_web3

# The index and API fixtures (an index database per test on SQLite and PostgreSQL).
pytest_plugins = ["tests.index_fixtures"]

# py_ecc, under eth_account, raises the recursion limit to 100,000 as it loads: past
# the C stack's depth, the tests' crafted documents nested a hundred thousand deep
# would crash the test process instead of raising RecursionError as they do in
# ledger's own processes (ledger.config._keyfile keeps the limit).
sys.setrecursionlimit(1000)

# Outbox workers of in-process tests end with the test session, not a minute later
# (tests/outbox/test_resident.py covers the resident worker).
os.environ.setdefault("LEDGER_OUTBOX_KEEP", "0")

# Anvil's 2nd and 3rd well-known dev keys (public; funded on every Anvil).
OTHER_KEYS = (
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
)


@dataclass
class Chain:
    """The per-test view of the session chain."""

    rpc_url: str
    w3: Web3
    admin: LocalAccount
    alice: LocalAccount
    bob: LocalAccount
    registry: Registry
    deploy_block: int

    def as_(self, account: LocalAccount) -> Registry:
        """The same registry, signing as ``account``."""
        return Registry(self.w3, self.registry.address, account, self.deploy_block)

    def settings(self, data_dir: Path) -> Settings:
        """Settings for a data directory that points at this chain and registry."""
        settings = Settings(data_dir=data_dir, rpc_url=self.rpc_url)
        save_deployment(
            settings,
            address=self.registry.address,
            chain_id=self.w3.eth.chain_id,
            block=self.deploy_block,
        )
        return Settings(
            data_dir=data_dir,
            rpc_url=self.rpc_url,
            registry_address=self.registry.address,
            chain_id=self.w3.eth.chain_id,
            deploy_block=self.deploy_block,
        )


@pytest.fixture(scope="session")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnvilProcess]:
    process = AnvilProcess(tmp_path_factory.mktemp("anvil"), port=free_port())
    process.start(persist=False)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def _session_chain(anvil: AnvilProcess) -> Chain:
    w3 = connect_web3(anvil.rpc_url)
    admin = cast(LocalAccount, Account.from_key(ANVIL_DEV_KEY))
    alice, bob = (cast(LocalAccount, Account.from_key(k)) for k in OTHER_KEYS)
    registry, tx = Registry.deploy(w3, admin)
    return Chain(anvil.rpc_url, w3, admin, alice, bob, registry, tx.block_number)


@pytest.fixture
def chain(_session_chain: Chain) -> Iterator[Chain]:
    snapshot = rpc_call(_session_chain.rpc_url, "evm_snapshot")
    yield _session_chain
    assert rpc_call(_session_chain.rpc_url, "evm_revert", [snapshot]) is True


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")
