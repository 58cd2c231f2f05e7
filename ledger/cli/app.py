"""The ``ledger`` typer app: every command group's ``app``, added one way.

Each module of :mod:`ledger.cli` that defines commands exposes a ``typer.Typer``
named ``app``. A group without a name (``ledger verify``, ``ledger runs``...)
adds its commands to the top level; a named one (``ledger store``) adds a
subcommand group. Heavy modules (web3, torch, rich) are imported inside the
commands that need them, so ``ledger --help`` and ``ledger cid`` start fast;
help is plain text (typer's rich help would import rich and markdown-it on
every start). The console script (:mod:`ledger.cli.main`) runs this app and
turns errors of the :mod:`ledger.errors` tree into exit codes.
"""

from __future__ import annotations

import typer

from ledger.cli import audit, bundle, chain, data, key, outbox, replay, runs, store, verify

app = typer.Typer(
    name="ledger",
    help="Tamper-evident provenance for machine-learning training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
for group in (chain, key, verify, bundle, replay, runs, data, outbox, audit, store):
    app.add_typer(group.app)
