"""Where ledger finds its data directory, chain, registry and signing key.

Precedence, highest first: explicit arguments, environment variables, the
config file ``<data dir>/config.json`` (written by ``ledger deploy``), defaults.

==========================  =================================================
``LEDGER_HOME``             data directory (default ``.ledger`` in the cwd)
``LEDGER_RPC_URL``          JSON-RPC endpoint (default ``http://127.0.0.1:8545``)
``LEDGER_REGISTRY``         registry contract address
``LEDGER_PRIVATE_KEY``      hex private key of the committer
``LEDGER_KEYSTORE``         path of an encrypted JSON keystore (with
``LEDGER_KEYSTORE_PASSWORD``  its password)
``LEDGER_IPFS_API``         RPC API of an IPFS node (``/ip4/127.0.0.1/tcp/5001/http``
                            or ``http://host:5001``); artifacts go there
                            instead of the embedded store (config key
                            ``ipfs_api``)
``LEDGER_STORE_WEIGHTS``    ``copy`` (default) or ``reference``: whether the
                            embedded store keeps a copy of each weights file
                            or records where it lives (config key
                            ``store_weights``; see :mod:`ledger.store.local`)
``LEDGER_CONFIRMATIONS``    blocks a record's block must have on top of it
                            before the outbox calls it confirmed and the index
                            reads it (config key ``confirmations``; default 0
                            on a local dev chain, 12 elsewhere; see
                            :func:`confirmation_depth`)
==========================  =================================================

``copy`` is the default because a record is worth what its bytes are: replaying
a run, ``ledger store push`` and a later re-check need the weights, and training
scripts delete and overwrite their checkpoints. On a filesystem that clones
(btrfs, XFS) a copy takes no new space. ``reference`` writes no checkpoint byte
twice, for runs whose checkpoints outgrow the disk, at the price of a record
that is only as durable as the files left where training wrote them.

Anvil's well-known first dev key is used only when no key is configured and the
chain is a local dev chain (chain id 31337). The key is never logged: the
:class:`Secret` wrapper hides it from ``repr`` and ``str``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ledger.errors import ConfigError

DEFAULT_RPC_URL = "http://127.0.0.1:8545"
DEV_CHAIN_ID = 31337
DEFAULT_CONFIRMATIONS = 12
"""Blocks on top of a record's block before it counts, off a dev chain: public chains
reorganise a block or two now and then, and rarely more than a few (12 is what
exchanges and indexers commonly wait on Ethereum's proof of work, kept as a margin)."""
# Anvil's first dev account; public knowledge, funded only on local dev chains.
ANVIL_DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
CONFIG_FILE = "config.json"


class Secret:
    """A string that does not show itself in logs, reprs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True)
class Settings:
    """Resolved configuration; build it with :func:`load_settings`."""

    data_dir: Path
    rpc_url: str = DEFAULT_RPC_URL
    registry_address: str | None = None
    chain_id: int | None = None
    deploy_block: int | None = None
    private_key: Secret | None = field(default=None, repr=False)
    keystore: Path | None = None
    keystore_password: Secret | None = field(default=None, repr=False)
    ipfs_api: str | None = None
    store_weights: str = "copy"
    """``copy`` or ``reference``: how the embedded store keeps weights files."""
    confirmations: int | None = None
    """The configured confirmation depth; None: by chain (:func:`confirmation_depth`)."""

    @property
    def config_path(self) -> Path:
        return self.data_dir / CONFIG_FILE

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    @property
    def chain_dir(self) -> Path:
        return self.data_dir / "chain"

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def default_data_dir() -> Path:
    return Path(os.environ.get("LEDGER_HOME") or ".ledger")


def read_config_file(data_dir: Path) -> dict[str, Any]:
    path = data_dir / CONFIG_FILE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read the config file {path}: {exc}",
            hint="fix or delete it and run `ledger deploy` again",
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return data


def load_settings(data_dir: Path | str | None = None, **overrides: Any) -> Settings:
    """Resolve the settings from arguments, environment and the config file."""
    base = Path(data_dir) if data_dir is not None else default_data_dir()
    file = read_config_file(base)
    env = os.environ
    keystore = env.get("LEDGER_KEYSTORE")
    settings = Settings(
        data_dir=base,
        rpc_url=env.get("LEDGER_RPC_URL") or file.get("rpc_url") or DEFAULT_RPC_URL,
        registry_address=env.get("LEDGER_REGISTRY") or file.get("registry_address"),
        chain_id=_int_or_none(file.get("chain_id"), "chain_id", base),
        deploy_block=_int_or_none(file.get("deploy_block"), "deploy_block", base),
        private_key=Secret(env["LEDGER_PRIVATE_KEY"]) if env.get("LEDGER_PRIVATE_KEY") else None,
        keystore=Path(keystore) if keystore else None,
        keystore_password=(
            Secret(env["LEDGER_KEYSTORE_PASSWORD"]) if "LEDGER_KEYSTORE_PASSWORD" in env else None
        ),
    )
    settings = replace(
        settings,
        ipfs_api=_ipfs_api(env, file, base),
        store_weights=_store_weights(env, file, base),
        confirmations=_confirmations(env, file, base),
    )
    return settings.with_overrides(**overrides)


def confirmation_depth(settings: Settings, chain_id: int) -> int:
    """Blocks that must be mined on top of a record's block before the outbox marks
    it confirmed and the audit index reads it: the one depth both honour.

    ``LEDGER_CONFIRMATIONS`` (or ``confirmations`` in the config file), else 0 on a
    local dev chain (chain id 31337: one block per transaction, nothing to wait
    for) and :data:`DEFAULT_CONFIRMATIONS` elsewhere.
    """
    if settings.confirmations is not None:
        return settings.confirmations
    return 0 if chain_id == DEV_CHAIN_ID else DEFAULT_CONFIRMATIONS


MAX_CONFIRMATIONS = 10_000  # blocks; more is surely a typo (days on any chain)


def _confirmations(env: Mapping[str, str], file: dict[str, Any], data_dir: Path) -> int | None:
    """The configured confirmation depth (env wins over the file; the index's older
    ``LEDGER_INDEX_CONFIRMATIONS`` is read as the same setting)."""
    value: Any
    for name in ("LEDGER_CONFIRMATIONS", "LEDGER_INDEX_CONFIRMATIONS"):
        if env.get(name, "").strip():
            text = env[name].strip()
            where = f"{name}={text!r}"
            try:
                value = int(text)
            except ValueError:
                value = None
            break
    else:
        value = file.get("confirmations")
        if value is None:
            return None
        where = f"field 'confirmations' in {data_dir / CONFIG_FILE} ({value!r})"
        if isinstance(value, bool) or not isinstance(value, int):
            value = None
    if value is None or not 0 <= value <= MAX_CONFIRMATIONS:
        raise ConfigError(
            f"{where} is not a whole number of blocks from 0 to {MAX_CONFIRMATIONS}",
            hint="e.g. 0 on a local dev chain, 12 (the default elsewhere) on a public chain",
        )
    return int(value)


def _ipfs_api(env: Mapping[str, str], file: dict[str, Any], data_dir: Path) -> str | None:
    """The IPFS node's API address, if one is configured (env wins over the file)."""
    if env.get("LEDGER_IPFS_API"):
        return env["LEDGER_IPFS_API"]
    value = file.get("ipfs_api")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(
            f"field 'ipfs_api' in {data_dir / CONFIG_FILE} must be a string",
            hint='e.g. "/ip4/127.0.0.1/tcp/5001/http" or "http://127.0.0.1:5001"',
        )
    return value


STORE_WEIGHTS_MODES = ("copy", "reference")


def _store_weights(env: Mapping[str, str], file: dict[str, Any], data_dir: Path) -> str:
    """How the embedded store keeps weights files (env wins over the file)."""
    if env.get("LEDGER_STORE_WEIGHTS"):
        value: Any = env["LEDGER_STORE_WEIGHTS"].strip().lower()
        where = "LEDGER_STORE_WEIGHTS"
    else:
        value = file.get("store_weights", "copy")
        where = f"field 'store_weights' in {data_dir / CONFIG_FILE}"
    if value not in STORE_WEIGHTS_MODES:
        raise ConfigError(
            f"{where} is {value!r}, not copy or reference",
            hint="copy keeps the bytes of every weights file in the store (the default);"
            " reference records where each file lives",
        )
    return str(value)


def _int_or_none(value: Any, name: str, data_dir: Path) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ConfigError(f"field {name!r} in {data_dir / CONFIG_FILE} must be an integer")


def save_deployment(settings: Settings, *, address: str, chain_id: int, block: int) -> Path:
    """Record a deployment in the config file, keeping its other fields."""
    return _update_config(
        settings,
        rpc_url=settings.rpc_url,
        registry_address=address,
        chain_id=chain_id,
        deploy_block=block,
    )


def save_rpc_url(settings: Settings, url: str) -> Path:
    """Record the chain's URL in the config file (``ledger chain up``), keeping its
    other fields, so the next command of this data directory talks to that chain."""
    return _update_config(settings, rpc_url=url)


def _update_config(settings: Settings, **fields: Any) -> Path:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    data = read_config_file(settings.data_dir)
    data.update(fields)
    path = settings.config_path
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ConfigError(f"cannot write the config file {path}: {exc}") from exc
    return path


def resolve_private_key(settings: Settings, chain_id: int) -> Secret:
    """The committer's key: configured, from the keystore, or Anvil's on a dev chain."""
    if settings.private_key is not None:
        return settings.private_key
    if settings.keystore is not None:
        return _decrypt_keystore(settings.keystore, settings.keystore_password)
    if chain_id == DEV_CHAIN_ID:
        return Secret(ANVIL_DEV_KEY)
    raise ConfigError(
        f"no signing key configured for chain id {chain_id}",
        hint="set LEDGER_PRIVATE_KEY, or LEDGER_KEYSTORE and LEDGER_KEYSTORE_PASSWORD; "
        "the dev key is only used on a local chain (id 31337)",
    )


def _decrypt_keystore(path: Path, password: Secret | None) -> Secret:
    from eth_keyfile.keyfile import decode_keyfile_json

    if password is None:
        raise ConfigError(f"keystore {path} needs a password", hint="set LEDGER_KEYSTORE_PASSWORD")
    try:
        encrypted = json.loads(path.read_text())
        key = decode_keyfile_json(encrypted, password.reveal().encode())
    except FileNotFoundError as exc:
        raise ConfigError(f"keystore file {path} does not exist") from exc
    except (ValueError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"cannot decrypt keystore {path}", hint="check LEDGER_KEYSTORE_PASSWORD"
        ) from exc
    return Secret("0x" + bytes(key).hex())
