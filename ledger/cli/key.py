"""``ledger key new|show``: the committer's key as an encrypted keystore.

``ledger key new`` makes a random secp256k1 key and writes it encrypted (JSON
keystore version 3, scrypt; what geth, Foundry's ``cast wallet`` and
eth-account read and write) to a new file of mode 0600, never over an existing
one. ``LEDGER_KEYSTORE`` then names it wherever ``LEDGER_PRIVATE_KEY`` would be
read. ``ledger key show`` prints the address of the key ledger would sign with.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from ledger.cli.options import DATA_DIR, load_settings

app = typer.Typer()
key_app = typer.Typer(
    name="key",
    help="Make or show the committer's key (an encrypted keystore).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(key_app)

PASSWORD_FILE_HELP = (
    "Read the password from the first line of this file (else LEDGER_KEYSTORE_PASSWORD, "
    "else LEDGER_KEYSTORE_PASSWORD_FILE, else a prompt)."
)


def _password(password_file: Path | None, *, confirm: bool) -> object:
    """The password: the file given, the environment, or a prompt (typed twice for a new key)."""
    from ledger.config import Secret, read_password_file

    if password_file is not None:
        return read_password_file(password_file, "--password-file")
    if "LEDGER_KEYSTORE_PASSWORD" in os.environ:
        return Secret(os.environ["LEDGER_KEYSTORE_PASSWORD"])
    if os.environ.get("LEDGER_KEYSTORE_PASSWORD_FILE"):
        path = Path(os.environ["LEDGER_KEYSTORE_PASSWORD_FILE"])
        return read_password_file(path, "LEDGER_KEYSTORE_PASSWORD_FILE")
    typed = typer.prompt("Keystore password", hide_input=True, confirmation_prompt=confirm)
    return Secret(str(typed))


@key_app.command("new")
def key_new(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="The keystore file to write [default: DATA_DIR/key.json]."
        ),
    ] = None,
    password_file: Annotated[Path | None, typer.Option(help=PASSWORD_FILE_HELP)] = None,
    data_dir: Annotated[Path | None, DATA_DIR.typer()] = None,
) -> None:
    """Make a new key and write it encrypted (scrypt) to a new file of mode 0600; prints
    its address. Give the address the committer role (`ledger grant committer ADDRESS`)
    and point LEDGER_KEYSTORE at the file."""
    from ledger.config import Secret, create_keystore

    path = out if out is not None else load_settings(data_dir).data_dir / "key.json"
    if path.exists():  # before asking a password; create_keystore refuses it anyway
        create_keystore(path, Secret("unused"))
    password = _password(password_file, confirm=True)
    assert isinstance(password, Secret)
    path.parent.mkdir(parents=True, exist_ok=True)
    address = create_keystore(path, password)
    typer.echo(address)
    print(
        f"wrote {path} (mode 0600); use it with LEDGER_KEYSTORE={path} and its password "
        "in LEDGER_KEYSTORE_PASSWORD or LEDGER_KEYSTORE_PASSWORD_FILE",
        file=sys.stderr,
    )


@key_app.command("show")
def key_show(
    keystore: Annotated[
        Path | None,
        typer.Option(help="A keystore file to open [default: LEDGER_KEYSTORE]."),
    ] = None,
    password_file: Annotated[Path | None, typer.Option(help=PASSWORD_FILE_HELP)] = None,
    data_dir: Annotated[Path | None, DATA_DIR.typer()] = None,
) -> None:
    """Print the address ledger signs with (stdout), and where its key comes from (stderr).
    A keystore is decrypted to show it, so a wrong password is an error (exit 12)."""
    from ledger.chain.sender import address_of
    from ledger.config import (
        DEV_CHAIN_ID,
        Secret,
        decrypt_keystore,
        key_source,
        resolve_private_key,
    )
    from ledger.errors import ConfigError

    if keystore is not None:
        password = _password(password_file, confirm=False)
        assert isinstance(password, Secret)
        where = "--password-file" if password_file is not None else "the password"
        typer.echo(address_of(decrypt_keystore(keystore, password, where=where)))
        print(f"key: keystore {keystore}", file=sys.stderr)
        return
    settings = load_settings(data_dir)
    if password_file is not None:
        from ledger.config import read_password_file

        settings = settings.with_overrides(
            keystore_password=read_password_file(password_file, "--password-file")
        )
    elif settings.keystore is not None and settings.keystore_password is None:
        password = _password(None, confirm=False)
        settings = settings.with_overrides(keystore_password=password)
    chain_id = settings.chain_id if settings.chain_id is not None else DEV_CHAIN_ID
    try:
        secret = resolve_private_key(settings, chain_id)
    except ConfigError as exc:
        if type(exc) is not ConfigError:
            raise
        raise ConfigError(
            f"no key configured for chain id {chain_id}",
            hint="set LEDGER_KEYSTORE (make one with `ledger key new`) or LEDGER_PRIVATE_KEY",
        ) from exc
    typer.echo(address_of(secret))
    print(f"key: {key_source(settings, chain_id)}", file=sys.stderr)
    if settings.relayer_key is not None:
        print(f"relayer (pays the gas): {address_of(settings.relayer_key)}", file=sys.stderr)
