"""What the commands share, declared once: options, the run id, settings, JSON output.

An :class:`Option` is plain data (its flags, help and environment variable);
:meth:`Option.typer` turns it into typer's parameter where a command declares
it, e.g. ``data_dir: Annotated[Path | None, DATA_DIR.typer()] = None``. This
module never imports typer itself, so the console script's fast path for
``ledger verify`` (:mod:`ledger.cli.main`) reads :data:`VERIFY_OPTIONS`, the
same table the typer command is built from, without loading the framework.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Option:
    """One command-line option: its flags, help text and environment variable."""

    flags: tuple[str, ...]
    help: str
    envvar: str | None = None
    takes_value: bool = True
    """False for a flag (a ``bool`` parameter): present or not, no value follows."""

    def typer(self, **settings: Any) -> Any:
        """typer's ``Option`` for this option; ``settings`` add or override (e.g. ``min``)."""
        import typer

        declared: dict[str, Any] = {"help": self.help, "envvar": self.envvar}
        return typer.Option(*self.flags, **(declared | settings))


@dataclass(frozen=True)
class Argument:
    """One positional argument: its help text."""

    help: str

    def typer(self, **settings: Any) -> Any:
        """typer's ``Argument`` for this argument; ``settings`` adds to it (e.g. ``min``)."""
        import typer

        return typer.Argument(help=self.help, **settings)


DATA_DIR = Option(("--data-dir",), "Data directory [default: .ledger]", envvar="LEDGER_HOME")
JSON = Option(("--json",), "Print one JSON document.", takes_value=False)
PORT = Option(("--port",), "Port on 127.0.0.1.")
RUN_ID = Argument("Run id.")

# -- ledger verify --------------------------------------------------------------

VERIFY_PATH = Argument("Model file, or Hugging Face model folder.")
VERIFY_RUN = Option(("--run",), "Run id (or a unique prefix) the file should belong to.")
VERIFY_API = Option(
    ("--api",),
    "Audit API (ledger serve) to fetch the run's documents from when the store lacks them; "
    "they are re-hashed against the chain.",
    envvar="LEDGER_VERIFY_API",
)
BUNDLE = Option(
    ("--bundle",),
    "Provenance bundle (ledger export) to check the file against, with no store or "
    "configuration: exit 7 proven as of the bundle's block.",
)
BUNDLE_RPC = Option(
    ("--rpc",),
    "With --bundle: a node trusted only to say the bundle's blocks are canonical and the "
    "runs are not revoked now (repeatable; all must agree).",
)
VERIFY_OPTIONS = (VERIFY_RUN, VERIFY_API, DATA_DIR, JSON, BUNDLE, BUNDLE_RPC)
"""Every option of ``ledger verify``: its typer command and the fast path read this table."""


def load_settings(data_dir: Path | None, **overrides: Any) -> Any:
    """:func:`ledger.config.load_settings`, imported when a command first needs it."""
    from ledger import config

    return config.load_settings(data_dir, **overrides)


def print_json(document: Any) -> None:
    """One JSON document on stdout, as every ``--json`` command prints it."""
    import json

    sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()
