"""Where ledger finds its data directory, chain, registry and signing key.

Precedence, highest first: explicit arguments, environment variables, the
config file ``<data dir>/config.json`` (written by ``ledger deploy``), defaults.

==========================  =================================================
``LEDGER_HOME``             data directory (default ``.ledger`` in the cwd)
``LEDGER_RPC_URL``          JSON-RPC endpoint (default ``http://127.0.0.1:8545``)
``LEDGER_REGISTRY``         registry contract address
``LEDGER_PRIVATE_KEY``      hex private key of the committer
``LEDGER_KEYSTORE``         path of an encrypted JSON keystore (``ledger key
                            new`` writes one), opened with
``LEDGER_KEYSTORE_PASSWORD``  its password, or the first line of
``LEDGER_KEYSTORE_PASSWORD_FILE``  a file
``LEDGER_RELAYER_KEY``      hex private key of an account that pays for the
                            outbox's transactions: the committer's key signs
                            each call (EIP-712), this one relays it
``LEDGER_MAX_FEE_GWEI``     the most the outbox pays per gas (max fee per gas,
                            in gwei); records wait in the outbox while the
                            chain asks more
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

``LEDGER_PRIVATE_KEY`` wins over ``LEDGER_KEYSTORE`` when both are set (``ledger
key show`` says which one is in use). Anvil's well-known first dev key is used
only when no key is configured and the chain is a local dev chain (chain id 31337).
The key is never logged: the :class:`Secret` wrapper hides it from ``repr`` and
``str``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from ledger.errors import ConfigError, KeystoreError

DEFAULT_RPC_URL = "http://127.0.0.1:8545"
DEV_CHAIN_ID = 31337
DEFAULT_CONFIRMATIONS = 12
"""Blocks on top of a record's block before it counts, off a dev chain: public chains
reorganise a block or two now and then, and rarely more than a few (12 is what
exchanges and indexers commonly wait on Ethereum's proof of work, kept as a margin)."""
# Anvil's first dev account; public knowledge, funded only on local dev chains.
ANVIL_DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
CONFIG_FILE = "config.json"
KEYSTORE_LIMIT = 1 << 20  # bytes: a keystore is about 500; anything larger is not one
GWEI = 10**9


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
    relayer_key: Secret | None = field(default=None, repr=False)
    """The account that pays for the outbox's transactions (the committer signs them)."""
    max_fee_per_gas: int | None = None
    """wei: the most the outbox offers per gas (``LEDGER_MAX_FEE_GWEI``); None: no cap."""
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
        keystore_password=_keystore_password(env),
        relayer_key=Secret(env["LEDGER_RELAYER_KEY"]) if env.get("LEDGER_RELAYER_KEY") else None,
        max_fee_per_gas=_max_fee(env),
    )
    settings = replace(
        settings,
        ipfs_api=_ipfs_api(env, file, base),
        store_weights=_store_weights(env, file, base),
        confirmations=_confirmations(env, file, base),
    )
    return settings.with_overrides(**overrides)


def _keystore_password(env: Mapping[str, str]) -> Secret | None:
    """The keystore's password: ``LEDGER_KEYSTORE_PASSWORD``, else the first line of
    the file ``LEDGER_KEYSTORE_PASSWORD_FILE`` names (a secrets mount, say)."""
    if "LEDGER_KEYSTORE_PASSWORD" in env:
        return Secret(env["LEDGER_KEYSTORE_PASSWORD"])
    path = env.get("LEDGER_KEYSTORE_PASSWORD_FILE")
    return read_password_file(Path(path), "LEDGER_KEYSTORE_PASSWORD_FILE") if path else None


def read_password_file(path: Path, where: str) -> Secret:
    """The first line of a password file (without its line ending)."""
    try:
        with path.open("rb") as handle:
            first = handle.read(KEYSTORE_LIMIT).split(b"\n", 1)[0].rstrip(b"\r")
        return Secret(first.decode())
    except (OSError, UnicodeDecodeError) as exc:
        raise KeystoreError(
            f"cannot read the password file {path} ({where}): {_reason(exc)}",
            hint="give a readable file whose first line is the keystore's password",
        ) from exc


def _max_fee(env: Mapping[str, str]) -> int | None:
    """``LEDGER_MAX_FEE_GWEI`` in wei (None when unset)."""
    text = env.get("LEDGER_MAX_FEE_GWEI", "").strip()
    if not text:
        return None
    try:
        gwei = Decimal(text)
    except InvalidOperation:
        gwei = Decimal("NaN")
    if not gwei.is_finite() or gwei <= 0:
        raise ConfigError(
            f"LEDGER_MAX_FEE_GWEI is {text!r}, not a positive number of gwei",
            hint="e.g. LEDGER_MAX_FEE_GWEI=50 (the most the outbox pays per gas); unset: no cap",
        )
    return int(gwei * GWEI)


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


def key_source(settings: Settings, chain_id: int) -> str:
    """Where :func:`resolve_private_key` takes the key from, in words."""
    if settings.private_key is not None:
        ignored = f" ({settings.keystore} is ignored)" if settings.keystore else ""
        return f"LEDGER_PRIVATE_KEY{ignored}"
    if settings.keystore is not None:
        return f"keystore {settings.keystore}"
    if chain_id == DEV_CHAIN_ID:
        return "Anvil's public dev key (local dev chain only)"
    return "none"


def _keyfile() -> Any:
    """eth_keyfile's keyfile functions, imported with the interpreter's recursion limit
    kept: py_ecc (imported under eth_keyfile) raises it to 100,000 as it loads, and
    past the C stack's depth a crafted document nested deep enough crashes the
    process (a segmentation fault) where it would have raised RecursionError."""
    import types

    limit = sys.getrecursionlimit()
    try:
        from eth_keyfile import keyfile
        from eth_keyfile.exceptions import EthKeyfileException
    finally:
        sys.setrecursionlimit(limit)
    return types.SimpleNamespace(
        create_keyfile_json=keyfile.create_keyfile_json,
        decode_keyfile_json=keyfile.decode_keyfile_json,
        exceptions=EthKeyfileException,
    )


def create_keystore(path: Path, password: Secret) -> str:
    """Make a new random key and write it to ``path`` as an encrypted JSON keystore
    (version 3, scrypt with the usual parameters: n=262144, r=8, p=1), mode 0600;
    refuses to overwrite anything. Returns the key's address."""
    import secrets

    create_keyfile_json = _keyfile().create_keyfile_json

    from ledger.chain.sender import address_of

    if not password.reveal():
        raise KeystoreError(
            "refusing to encrypt a key with an empty password",
            hint="type a password, or set LEDGER_KEYSTORE_PASSWORD / --password-file",
        )
    while True:
        raw = secrets.token_bytes(32)
        if 0 < int.from_bytes(raw, "big") < SECP256K1_ORDER:
            break
    secret = Secret("0x" + raw.hex())
    address = address_of(secret)
    document = create_keyfile_json(raw, password.reveal().encode(), kdf="scrypt")
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise KeystoreError(
            f"{path} already exists; ledger never overwrites a keystore",
            hint="choose another file with --out, or move the old one away first",
        ) from exc
    except OSError as exc:
        raise KeystoreError(f"cannot create keystore {path}: {_reason(exc)}") from exc
    try:
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), 0o600)  # whatever the umask
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        path.unlink(missing_ok=True)  # no half-written keystore left behind
        raise KeystoreError(f"cannot write keystore {path}: {_reason(exc)}") from exc
    return address


SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _decrypt_keystore(path: Path, password: Secret | None) -> Secret:
    if password is None:
        raise KeystoreError(
            f"keystore {path} needs a password",
            hint="set LEDGER_KEYSTORE_PASSWORD, or LEDGER_KEYSTORE_PASSWORD_FILE",
        )
    return decrypt_keystore(path, password, where="LEDGER_KEYSTORE_PASSWORD")


def decrypt_keystore(path: Path, password: Secret, *, where: str) -> Secret:
    """The private key in the encrypted keystore ``path`` (``where``: what supplied the
    password, for the hint). Reads at most :data:`KEYSTORE_LIMIT` bytes."""
    keyfile = _keyfile()

    try:
        with path.open("rb") as handle:
            raw = handle.read(KEYSTORE_LIMIT + 1)
    except FileNotFoundError as exc:
        raise KeystoreError(
            f"keystore file {path} does not exist", hint="check LEDGER_KEYSTORE"
        ) from exc
    except OSError as exc:
        raise KeystoreError(
            f"cannot read keystore {path}: {_reason(exc)}",
            hint="check the path and its permissions (LEDGER_KEYSTORE)",
        ) from exc
    try:
        if len(raw) > KEYSTORE_LIMIT:
            raise ValueError("larger than any keystore")
        encrypted = json.loads(raw)
        if not isinstance(encrypted, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise KeystoreError(
            f"{path} is not an encrypted JSON keystore ({exc})",
            hint="make one with `ledger key new`",
        ) from exc
    _check_kdf(path, encrypted)
    try:
        key = keyfile.decode_keyfile_json(encrypted, password.reveal().encode())
    except (keyfile.exceptions, ValueError, KeyError, TypeError) as exc:
        if "MAC mismatch" in str(exc):
            raise KeystoreError(
                f"cannot decrypt keystore {path}: wrong password", hint=f"check {where}"
            ) from exc
        raise KeystoreError(
            f"{path} is not a usable encrypted JSON keystore ({type(exc).__name__}: {exc})",
            hint="make one with `ledger key new`",
        ) from exc
    return Secret("0x" + bytes(key).hex())


SCRYPT_MEMORY_LIMIT = 1 << 30  # bytes (128 * n * r): geth's "standard" keystore needs 256 MiB
PBKDF2_ROUNDS_LIMIT = 10_000_000


def _check_kdf(path: Path, keystore: dict[str, Any]) -> None:
    """Refuse key-derivation parameters that would take more than a gibibyte or minutes
    (a keystore is only a file: one made to exhaust the machine is refused unopened)."""
    crypto = keystore.get("crypto", keystore.get("Crypto"))
    params = crypto.get("kdfparams") if isinstance(crypto, dict) else None
    if not isinstance(params, dict):
        return  # decode_keyfile_json names what is missing
    n, r, p, c = (params.get(k, 1) for k in ("n", "r", "p", "c"))
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (n, r, p, c)):
        raise KeystoreError(f"{path}: the keystore's kdfparams are not positive integers")
    if 128 * n * r > SCRYPT_MEMORY_LIMIT or p > 16 or c > PBKDF2_ROUNDS_LIMIT:
        raise KeystoreError(
            f"{path}: the keystore's key derivation asks for more than ledger allows "
            f"(scrypt n={n}, r={r}, p={p}; pbkdf2 c={c})",
            hint="re-encrypt the key with `ledger key new` defaults (scrypt n=262144, r=8, p=1)",
        )


def _reason(exc: OSError | UnicodeDecodeError) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return "not UTF-8 text"
