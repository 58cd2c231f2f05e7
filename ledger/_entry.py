"""The ``ledger`` console script: starts early work, then runs the CLI."""

from __future__ import annotations

import sys


def main() -> None:
    from ledger import _early

    _early.start(sys.argv[1:])
    from ledger.cli import main as cli_main

    cli_main()
