"""The ``ledger`` console script: starts early work, then runs the CLI."""

from __future__ import annotations

import os
import sys


def main() -> None:
    from ledger import _early

    argv = sys.argv[1:]
    _early.start(argv)
    from ledger.cli import main as cli_main

    if argv[:1] != ["verify"]:
        cli_main()
        return
    # `verify` only reads. Once its report is out, end the process without the
    # interpreter's teardown (module and thread clean-up: a few hundredths of a
    # second, a measurable share of verifying a large file).
    try:
        cli_main()
        code = 0
    except SystemExit as exc:
        code = _exit_status(exc.code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _exit_status(code: object) -> int:
    """The status ``sys.exit(code)`` would give the process."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
