"""``ledger chain up|down|status`` (a local Anvil dev chain) and ``ledger deploy``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ledger.cli.options import DATA_DIR, JSON, PORT, load_settings, print_json

app = typer.Typer()
chain_app = typer.Typer(
    name="chain", help="Run a local Anvil dev chain.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(chain_app)


DEFAULT_PORT = 8545


def _anvil(data_dir: Path | None, port: int | None) -> Any:
    """The data directory's local chain; without ``--port``, the one it runs (its pid
    file says where), else the port of its configured URL when that is local, else 8545."""
    import urllib.parse

    from ledger.chain.anvil import AnvilProcess

    settings = load_settings(data_dir)
    anvil = AnvilProcess(settings.chain_dir, port=port or DEFAULT_PORT)
    if port is None:
        running = anvil.recorded()
        url = running[1] if running is not None and running[1] else settings.rpc_url
        parts = urllib.parse.urlsplit(url)
        if parts.hostname in ("127.0.0.1", "localhost") and parts.port:
            anvil.port = parts.port
    return anvil


@chain_app.command("up")
def chain_up(
    data_dir: Annotated[Path | None, DATA_DIR.typer()] = None,
    port: Annotated[int | None, PORT.typer()] = None,
) -> None:
    """Start a local Anvil with persistent state in the data directory, and record its
    URL in the data directory's config (the next commands use it). Without --port: the
    port of the configured URL when it is local, else 8545."""
    from ledger.config import read_config_file, save_rpc_url

    settings = load_settings(data_dir)
    anvil = _anvil(data_dir, port)
    pid = anvil.start()
    if read_config_file(settings.data_dir).get("rpc_url") != anvil.rpc_url:
        save_rpc_url(settings, anvil.rpc_url)
    typer.echo(f"anvil running at {anvil.rpc_url} (pid {pid}, state in {anvil.state_file})")


@chain_app.command("down")
def chain_down(
    data_dir: Annotated[Path | None, DATA_DIR.typer()] = None,
    port: Annotated[int | None, PORT.typer()] = None,
) -> None:
    """Stop the local Anvil cleanly (its state is saved)."""
    anvil = _anvil(data_dir, port)
    typer.echo("anvil stopped" if anvil.stop() else "anvil was not running")


@chain_app.command("status")
def chain_status(
    data_dir: Annotated[Path | None, DATA_DIR.typer()] = None,
    port: Annotated[int | None, PORT.typer()] = None,
    as_json: Annotated[bool, JSON.typer()] = False,
) -> None:
    """Show whether the local chain answers, its chain id and block height."""
    status = _anvil(data_dir, port).status()
    if as_json:
        print_json(status.__dict__)
    elif status.running:
        typer.echo(
            f"running at {status.rpc_url}: chain id {status.chain_id}, "
            f"block {status.block_number}, pid {status.pid}"
        )
    else:
        typer.echo(f"not running at {status.rpc_url}")
    if not status.running:
        raise typer.Exit(1)


@app.command()
def deploy(
    data_dir: Annotated[Path | None, DATA_DIR.typer()] = None,
    rpc_url: Annotated[str | None, typer.Option(envvar="LEDGER_RPC_URL")] = None,
) -> None:
    """Deploy the registry and record its address in the data directory's config."""
    from ledger.chain.admin import deploy_registry
    from ledger.config import save_deployment

    settings = load_settings(data_dir, rpc_url=rpc_url)
    registry, tx = deploy_registry(settings)
    chain_id = registry.chain_id
    path = save_deployment(
        settings, address=registry.address, chain_id=chain_id, block=tx.block_number
    )
    typer.echo(
        f"registry {registry.address} on chain {chain_id} (block {tx.block_number}, "
        f"gas {tx.gas_used}); admin and committer {registry.signer.address}; saved to {path}"
    )


ROLES = ("committer", "admin")


def _role_change(
    role: str, address: str, data_dir: Path | None, rpc_url: str | None, grant: bool
) -> None:
    from ledger.chain.admin import RegistryAdmin
    from ledger.chain.records import ADMIN_ROLE, COMMITTER_ROLE, checksum_address
    from ledger.errors import InputError, MissingRoleError

    if role not in ROLES:
        raise InputError(f"unknown role {role!r}", hint=f"use one of: {', '.join(ROLES)}")
    try:
        account = checksum_address(address)
    except ValueError as exc:
        raise InputError(
            f"ADDRESS {address!r} is not an address", hint="give 0x and 40 hex digits"
        ) from exc
    registry = RegistryAdmin.connect(load_settings(data_dir, rpc_url=rpc_url))
    me = registry.signer.address
    if not registry.is_admin(me):
        raise MissingRoleError(
            f"key {me} is not an admin of the registry {registry.address}; only an admin "
            "grants or revokes roles",
            hint="run this with the admin's key (LEDGER_PRIVATE_KEY or LEDGER_KEYSTORE)",
        )
    role_id = COMMITTER_ROLE if role == "committer" else ADMIN_ROLE
    tx = (registry.grant_role if grant else registry.revoke_role)(role_id, account)
    if tx is None:
        state = "already holds" if grant else "does not hold"
        typer.echo(f"{account} {state} role {role} on {registry.address}: nothing sent")
        return
    done = "granted to" if grant else "revoked from"
    typer.echo(f"role {role} {done} {account} on {registry.address} (block {tx.block_number})")


@app.command()
def grant(
    role: Annotated[str, typer.Argument(help="committer (records runs) or admin.")],
    address: Annotated[str, typer.Argument(help="The account (0x...).")],
    data_dir: Annotated[Path | None, DATA_DIR.typer()] = None,
    rpc_url: Annotated[str | None, typer.Option(envvar="LEDGER_RPC_URL")] = None,
) -> None:
    """Grant a registry role to an account (the key must be an admin's)."""
    _role_change(role, address, data_dir, rpc_url, grant=True)


@app.command("revoke-role")
def revoke_role(
    role: Annotated[str, typer.Argument(help="committer or admin.")],
    address: Annotated[str, typer.Argument(help="The account (0x...).")],
    data_dir: Annotated[Path | None, DATA_DIR.typer()] = None,
    rpc_url: Annotated[str | None, typer.Option(envvar="LEDGER_RPC_URL")] = None,
) -> None:
    """Revoke a registry role from an account (its past records stay on chain)."""
    _role_change(role, address, data_dir, rpc_url, grant=False)
