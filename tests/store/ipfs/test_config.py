"""Choosing the store from the configuration, and reading the node's address."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ledger.config import load_settings
from ledger.errors import ConfigError
from ledger.store import LocalStore, open_store
from ledger.store._kubo import parse_api_address
from ledger.store.ipfs import IpfsStore


@pytest.fixture(autouse=True)
def _no_ledger_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEDGER_IPFS_API", raising=False)


def test_embedded_store_by_default(tmp_path: Path) -> None:
    settings = load_settings(tmp_path)
    assert settings.ipfs_api is None
    store = open_store(settings)
    assert isinstance(store, LocalStore) and store.root == tmp_path / "store"


def test_env_selects_the_ipfs_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_IPFS_API", "/ip4/127.0.0.1/tcp/5001/http")
    store = open_store(load_settings(tmp_path))
    assert isinstance(store, IpfsStore)
    assert store.address.url == "http://127.0.0.1:5001"


def test_config_file_selects_the_ipfs_node_and_env_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"ipfs_api": "http://kubo:5001"}))
    store = open_store(load_settings(tmp_path))
    assert isinstance(store, IpfsStore) and store.address.host == "kubo"
    monkeypatch.setenv("LEDGER_IPFS_API", "/dns4/other/tcp/5001/http")
    assert load_settings(tmp_path).ipfs_api == "/dns4/other/tcp/5001/http"


def test_a_config_value_of_the_wrong_type_names_the_field(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"ipfs_api": 5001}))
    with pytest.raises(ConfigError, match="ipfs_api"):
        load_settings(tmp_path)


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("/ip4/127.0.0.1/tcp/5001/http", "http://127.0.0.1:5001"),
        ("/ip4/10.0.0.2/tcp/5001", "http://10.0.0.2:5001"),
        ("/ip6/::1/tcp/5001/http", "http://[::1]:5001"),
        ("/dns4/kubo/tcp/5001/http", "http://kubo:5001"),
        ("/dns/ipfs.example/tcp/443/https", "https://ipfs.example:443"),
        ("http://127.0.0.1:5002", "http://127.0.0.1:5002"),
        ("http://kubo/", "http://kubo:5001"),
    ],
)
def test_api_addresses(text: str, url: str) -> None:
    assert parse_api_address(text).url == url


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("/ip4/127.0.0.1/udp/5001/http", "tcp"),
        ("/ip4/127.0.0.1/tcp/99999/http", "port"),
        ("/ip4/127.0.0.1/tcp/5001/ws", "transport"),
        ("/unix/run/api.sock", "expected"),
        ("/ip9/127.0.0.1/tcp/5001", "protocol"),
        ("ftp://host:21", "http"),
        ("http://127.0.0.1:5001/api/v0", "path"),
        ("127.0.0.1:5001", "http"),
    ],
)
def test_bad_api_addresses_are_config_errors(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as caught:
        open_store(load_settings(Path("unused"), ipfs_api=text))
    assert text in str(caught.value) and caught.value.exit_code == 10
