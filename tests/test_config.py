"""Settings resolution, the config file and the signing key (``ledger.config``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

import ledger.config
from ledger.config import (
    ANVIL_DEV_KEY,
    CONFIG_FILE,
    DEFAULT_RPC_URL,
    DEV_CHAIN_ID,
    Secret,
    Settings,
    load_settings,
    read_config_file,
    resolve_private_key,
    save_deployment,
)
from ledger.errors import ConfigError

# Arbitrary test keys (not funded anywhere).
KEY = "0x" + "4c" * 32
OTHER_KEY = "0x" + "7d" * 32
PASSWORD = "correct horse battery staple"
FILE_REGISTRY = "0x" + "11" * 20
ENV_REGISTRY = "0x" + "22" * 20


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No LEDGER_* variable from the caller's environment; cwd is an empty directory."""
    for name in list(os.environ):
        if name.startswith("LEDGER_"):
            monkeypatch.delenv(name)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)


def write_config(data_dir: Path, content: Any) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / CONFIG_FILE
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def make_keystore(path: Path, key: str = KEY, password: str = PASSWORD) -> Path:
    # pbkdf2 with few iterations keeps the tests fast; see the scrypt test for the default.
    encrypted = Account.encrypt(key, password, kdf="pbkdf2", iterations=16)
    path.write_text(json.dumps(encrypted))
    return path


# -- precedence: arguments > environment > config file > defaults -----------------------


def test_defaults_without_file_or_environment(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "data")
    assert settings.data_dir == tmp_path / "data"
    assert settings.rpc_url == DEFAULT_RPC_URL == "http://127.0.0.1:8545"
    assert settings.registry_address is None
    assert settings.chain_id is None
    assert settings.deploy_block is None
    assert settings.private_key is None
    assert settings.keystore is None
    assert settings.keystore_password is None


def test_the_config_file_overrides_defaults(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_config(
        data,
        {
            "rpc_url": "http://file:8545",
            "registry_address": FILE_REGISTRY,
            "chain_id": 5,
            "deploy_block": 42,
        },
    )
    settings = load_settings(data)
    assert settings.rpc_url == "http://file:8545"
    assert settings.registry_address == FILE_REGISTRY
    assert settings.chain_id == 5
    assert settings.deploy_block == 42


def test_the_environment_overrides_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    write_config(data, {"rpc_url": "http://file:8545", "registry_address": FILE_REGISTRY})
    monkeypatch.setenv("LEDGER_RPC_URL", "http://env:8545")
    monkeypatch.setenv("LEDGER_REGISTRY", ENV_REGISTRY)
    settings = load_settings(data)
    assert settings.rpc_url == "http://env:8545"
    assert settings.registry_address == ENV_REGISTRY


def test_the_environment_overrides_defaults_without_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_RPC_URL", "http://env:8545")
    monkeypatch.setenv("LEDGER_REGISTRY", ENV_REGISTRY)
    settings = load_settings(tmp_path / "data")
    assert settings.rpc_url == "http://env:8545"
    assert settings.registry_address == ENV_REGISTRY


def test_one_variable_does_not_hide_the_file_for_the_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    write_config(data, {"rpc_url": "http://file:8545", "registry_address": FILE_REGISTRY})
    monkeypatch.setenv("LEDGER_RPC_URL", "http://env:8545")
    settings = load_settings(data)
    assert settings.rpc_url == "http://env:8545"
    assert settings.registry_address == FILE_REGISTRY


def test_explicit_arguments_override_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    write_config(data, {"rpc_url": "http://file:8545"})
    monkeypatch.setenv("LEDGER_RPC_URL", "http://env:8545")
    monkeypatch.setenv("LEDGER_REGISTRY", ENV_REGISTRY)
    settings = load_settings(data, rpc_url="http://arg:8545", registry_address=None)
    assert settings.rpc_url == "http://arg:8545"
    assert settings.registry_address == ENV_REGISTRY  # a None argument overrides nothing


def test_ledger_home_picks_the_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    write_config(home, {"registry_address": FILE_REGISTRY})
    monkeypatch.setenv("LEDGER_HOME", str(home))
    settings = load_settings()
    assert settings.data_dir == home
    assert settings.registry_address == FILE_REGISTRY


def test_without_ledger_home_the_data_directory_is_dot_ledger() -> None:
    settings = load_settings()
    assert settings.data_dir == Path(".ledger")
    assert settings.config_path == Path(".ledger") / "config.json"
    assert settings.store_dir == Path(".ledger") / "store"


# -- save_deployment ----------------------------------------------------------------


def test_save_deployment_writes_a_readable_config(tmp_path: Path) -> None:
    data = tmp_path / "new" / "data"
    settings = Settings(data_dir=data, rpc_url="http://node:8545")
    path = save_deployment(settings, address=FILE_REGISTRY, chain_id=31337, block=7)
    assert path == data / CONFIG_FILE
    assert json.loads(path.read_text()) == {
        "rpc_url": "http://node:8545",
        "registry_address": FILE_REGISTRY,
        "chain_id": 31337,
        "deploy_block": 7,
    }
    loaded = load_settings(data)
    assert (loaded.rpc_url, loaded.registry_address, loaded.chain_id, loaded.deploy_block) == (
        "http://node:8545",
        FILE_REGISTRY,
        31337,
        7,
    )
    assert sorted(p.name for p in data.iterdir()) == [CONFIG_FILE]  # no temp file left


def test_save_deployment_keeps_other_fields(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_config(
        data,
        {
            "ipfs_api": "/ip4/127.0.0.1/tcp/5001",
            "labels": {"team": "forecast"},
            "registry_address": "0x" + "99" * 20,
            "chain_id": 1,
        },
    )
    save_deployment(Settings(data_dir=data), address=FILE_REGISTRY, chain_id=31337, block=3)
    saved = read_config_file(data)
    assert saved["ipfs_api"] == "/ip4/127.0.0.1/tcp/5001"
    assert saved["labels"] == {"team": "forecast"}
    assert saved["registry_address"] == FILE_REGISTRY
    assert saved["chain_id"] == 31337
    assert saved["deploy_block"] == 3
    assert saved["rpc_url"] == DEFAULT_RPC_URL


def test_save_deployment_never_leaves_a_half_written_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    original = write_config(data, {"registry_address": FILE_REGISTRY, "chain_id": 1}).read_text()

    def disk_full(fd: int) -> None:  # the new file is written but cannot be flushed
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch, pytest.raises(ConfigError, match="No space left"):
        patch.setattr(ledger.config.os, "fsync", disk_full)
        save_deployment(Settings(data_dir=data), address=ENV_REGISTRY, chain_id=2, block=9)
    assert (data / CONFIG_FILE).read_text() == original
    assert load_settings(data).registry_address == FILE_REGISTRY
    assert sorted(p.name for p in data.iterdir()) == [CONFIG_FILE]  # no temp file left


def test_save_deployment_crash_before_rename_keeps_the_old_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    original = write_config(data, {"registry_address": FILE_REGISTRY}).read_text()

    def crash(src: Any, dst: Any) -> None:
        raise OSError(5, "Input/output error")

    with monkeypatch.context() as patch, pytest.raises(ConfigError, match="Input/output"):
        patch.setattr(ledger.config.os, "replace", crash)
        save_deployment(Settings(data_dir=data), address=ENV_REGISTRY, chain_id=2, block=9)
    assert (data / CONFIG_FILE).read_text() == original
    assert sorted(p.name for p in data.iterdir()) == [CONFIG_FILE]


def test_save_deployment_refuses_to_overwrite_a_malformed_config(tmp_path: Path) -> None:
    data = tmp_path / "data"
    path = write_config(data, "{not json")
    with pytest.raises(ConfigError):
        save_deployment(Settings(data_dir=data), address=FILE_REGISTRY, chain_id=1, block=1)
    assert path.read_text() == "{not json"


# -- malformed config files ----------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("{not json", id="bad-json"),
        pytest.param("", id="empty"),
        pytest.param('["rpc_url", "http://x"]', id="list"),
        pytest.param('"a string"', id="string"),
        pytest.param('{"chain_id": "31337"}', id="chain_id-string"),
        pytest.param('{"chain_id": 1.5}', id="chain_id-float"),
        pytest.param('{"chain_id": true}', id="chain_id-bool"),
        pytest.param('{"deploy_block": [1]}', id="deploy_block-list"),
    ],
)
def test_a_malformed_config_file_is_a_config_error_naming_it(tmp_path: Path, content: str) -> None:
    data = tmp_path / "data"
    path = write_config(data, content)
    with pytest.raises(ConfigError) as info:
        load_settings(data)
    assert str(path) in str(info.value)


def test_a_non_integer_field_is_named(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_config(data, {"chain_id": "31337"})
    with pytest.raises(ConfigError, match="chain_id"):
        load_settings(data)


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = data / CONFIG_FILE
    path.write_bytes(b'\xff\xfe{"chain_id": 1}')
    with pytest.raises(ConfigError) as info:
        load_settings(data)
    assert str(path) in str(info.value)


# -- the signing key -------------------------------------------------------------------


def test_the_anvil_dev_key_is_used_only_on_the_dev_chain(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "data")
    key = resolve_private_key(settings, DEV_CHAIN_ID)
    assert DEV_CHAIN_ID == 31337
    assert key.reveal() == ANVIL_DEV_KEY
    # Anvil's (and Hardhat's) well-known first account
    assert Account.from_key(key.reveal()).address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


@pytest.mark.parametrize("chain_id", [1, 5, 11155111, 31338])
def test_other_chains_need_a_configured_key(tmp_path: Path, chain_id: int) -> None:
    settings = load_settings(tmp_path / "data")
    with pytest.raises(ConfigError) as info:
        resolve_private_key(settings, chain_id)
    assert str(chain_id) in info.value.message
    assert info.value.hint is not None
    assert "LEDGER_PRIVATE_KEY" in info.value.hint
    assert ANVIL_DEV_KEY not in str(info.value)


def test_a_configured_key_wins_everywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_PRIVATE_KEY", KEY)
    settings = load_settings(tmp_path / "data")
    assert isinstance(settings.private_key, Secret)
    assert resolve_private_key(settings, 1).reveal() == KEY
    assert resolve_private_key(settings, DEV_CHAIN_ID).reveal() == KEY


def test_a_keystore_is_decrypted_with_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keystore = make_keystore(tmp_path / "key.json")
    monkeypatch.setenv("LEDGER_KEYSTORE", str(keystore))
    monkeypatch.setenv("LEDGER_KEYSTORE_PASSWORD", PASSWORD)
    settings = load_settings(tmp_path / "data")
    assert settings.keystore == keystore
    secret = resolve_private_key(settings, 1)
    assert isinstance(secret, Secret)
    assert secret.reveal() == KEY
    assert resolve_private_key(settings, DEV_CHAIN_ID).reveal() == KEY  # not the dev key


def test_a_keystore_made_with_default_parameters(tmp_path: Path) -> None:
    path = tmp_path / "scrypt.json"
    path.write_text(json.dumps(Account.encrypt(OTHER_KEY, "pw")))
    settings = Settings(data_dir=tmp_path, keystore=path, keystore_password=Secret("pw"))
    assert resolve_private_key(settings, 1).reveal() == OTHER_KEY


def test_the_private_key_variable_wins_over_a_keystore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_KEYSTORE", str(make_keystore(tmp_path / "key.json")))
    monkeypatch.setenv("LEDGER_KEYSTORE_PASSWORD", PASSWORD)
    monkeypatch.setenv("LEDGER_PRIVATE_KEY", OTHER_KEY)
    assert resolve_private_key(load_settings(tmp_path / "data"), 1).reveal() == OTHER_KEY


@pytest.mark.parametrize("password", ["wrong", ""])
def test_a_wrong_keystore_password_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    keystore = make_keystore(tmp_path / "key.json")
    monkeypatch.setenv("LEDGER_KEYSTORE", str(keystore))
    monkeypatch.setenv("LEDGER_KEYSTORE_PASSWORD", password)
    with pytest.raises(ConfigError) as info:
        resolve_private_key(load_settings(tmp_path / "data"), 1)
    assert str(keystore) in str(info.value)
    assert info.value.hint is not None
    assert "LEDGER_KEYSTORE_PASSWORD" in info.value.hint
    assert KEY not in str(info.value)
    assert KEY[2:] not in str(info.value)


def test_a_keystore_without_a_password_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keystore = make_keystore(tmp_path / "key.json")
    monkeypatch.setenv("LEDGER_KEYSTORE", str(keystore))
    settings = load_settings(tmp_path / "data")
    assert settings.keystore_password is None
    with pytest.raises(ConfigError) as info:
        resolve_private_key(settings, DEV_CHAIN_ID)  # no silent fallback to the dev key
    assert str(keystore) in str(info.value)
    assert "LEDGER_KEYSTORE_PASSWORD" in str(info.value)


def test_a_missing_keystore_file_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nowhere.json"
    monkeypatch.setenv("LEDGER_KEYSTORE", str(missing))
    monkeypatch.setenv("LEDGER_KEYSTORE_PASSWORD", PASSWORD)
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_private_key(load_settings(tmp_path / "data"), 1)


def test_a_keystore_that_is_not_json_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    path.write_text("not a keystore")
    settings = Settings(data_dir=tmp_path, keystore=path, keystore_password=Secret(PASSWORD))
    with pytest.raises(ConfigError):
        resolve_private_key(settings, 1)


# -- Secret never shows its value ------------------------------------------------------


def test_a_secret_hides_its_value_in_every_rendering() -> None:
    secret = Secret(KEY)
    assert secret.reveal() == KEY
    renderings = [
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        f"{secret!s}",
        "%s" % (secret,),  # noqa: UP031
        "%r" % (secret,),  # noqa: UP031
        "{}".format(secret),  # noqa: UP032
        repr([secret]),
        repr({"key": secret}),
        str((secret,)),
    ]
    for text in renderings:
        assert KEY not in text
        assert KEY[2:] not in text
        assert "***" in text


def test_settings_repr_hides_the_key_and_the_password(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        registry_address=FILE_REGISTRY,
        private_key=Secret(KEY),
        keystore=tmp_path / "k.json",
        keystore_password=Secret(PASSWORD),
    )
    for text in (repr(settings), str(settings), f"{settings}", repr([settings])):
        assert KEY not in text
        assert KEY[2:] not in text
        assert PASSWORD not in text
        assert FILE_REGISTRY in text  # the repr is still useful
    assert settings.private_key is not None
    assert settings.private_key.reveal() == KEY


def test_settings_loaded_from_the_environment_hide_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_PRIVATE_KEY", KEY)
    monkeypatch.setenv("LEDGER_KEYSTORE_PASSWORD", PASSWORD)
    settings = load_settings(tmp_path / "data")
    assert KEY not in repr(settings)
    assert PASSWORD not in repr(settings)
    assert KEY not in repr(settings.with_overrides(rpc_url="http://x:1"))


# -- fee cap and relayer ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "wei"), [("50", 50 * 10**9), ("0.5", 5 * 10**8), (" 12.25 ", 12_250_000_000)]
)
def test_the_fee_cap_is_read_in_gwei(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, wei: int
) -> None:
    monkeypatch.setenv("LEDGER_MAX_FEE_GWEI", text)
    assert load_settings(tmp_path).max_fee_per_gas == wei


@pytest.mark.parametrize("text", ["0", "-1", "fifty", "nan", "inf", "1e400x"])
def test_a_fee_cap_that_is_not_a_positive_number_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv("LEDGER_MAX_FEE_GWEI", text)
    with pytest.raises(ConfigError, match="LEDGER_MAX_FEE_GWEI"):
        load_settings(tmp_path)


def test_no_fee_cap_and_no_relayer_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("LEDGER_MAX_FEE_GWEI", "LEDGER_RELAYER_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(tmp_path)
    assert settings.max_fee_per_gas is None and settings.relayer_key is None


def test_the_relayer_key_is_a_secret_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ledger.chain.sender import Signer

    monkeypatch.setenv("LEDGER_RELAYER_KEY", OTHER_KEY)
    settings = load_settings(tmp_path)
    assert settings.relayer_key is not None and settings.relayer_key.reveal() == OTHER_KEY
    assert OTHER_KEY[2:] not in repr(settings)
    with pytest.raises(ConfigError, match="LEDGER_RELAYER_KEY") as info:
        Signer(Secret("0x1234"), what="LEDGER_RELAYER_KEY")
    assert "1234" not in str(info.value)


def test_reading_a_keystore_keeps_the_recursion_limit() -> None:
    """py_ecc (under eth_keyfile) raises the interpreter's recursion limit to 100,000
    as it loads; a process that then parses a crafted document nested deep would
    crash (a segmentation fault) instead of raising RecursionError."""
    import subprocess
    import sys

    script = (
        "import json, sys; from ledger.config import _keyfile; _keyfile(); "
        "print(sys.getrecursionlimit());\n"
        "try: json.loads('[' * 200000 + ']' * 200000)\n"
        "except RecursionError: print('refused')"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.split() == ["1000", "refused"]
