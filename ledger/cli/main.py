"""The ``ledger`` console script: starts early work, then runs the CLI.

``ledger verify FILE`` starts hashing the file at once (:mod:`ledger.cli._early`).
With plain arguments (see :func:`ledger.cli._early.plain_verify_arguments`) it then
runs the verify command directly, without loading typer and click while the
file is hashed: the function the typer command calls, so the same report and
exit codes, and errors reported by :func:`ledger.cli.report_error`, as
:func:`ledger.cli.main` reports them. Anything else goes through the full
command line.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] != ["verify"]:
        from ledger.cli.app import main as cli_main

        cli_main()
        return
    # `verify` only reads. Once its report is out, end the process without the
    # interpreter's teardown (module and thread clean-up: a few hundredths of a
    # second, a measurable share of verifying a large file).
    try:
        code = verify(argv)
    except SystemExit as exc:
        code = _exit_status(exc.code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def verify(argv: list[str]) -> int:
    """Run ``ledger verify`` (``argv`` without the program name); returns the exit code."""
    from ledger.cli import _early

    _early.start(argv)
    args = _early.plain_verify_arguments(argv) if _early.started() else None
    if args is None:
        from ledger.cli.app import main as cli_main

        cli_main()
        return 0
    from ledger.cli.verify import verify_command
    from ledger.errors import LedgerError

    try:
        return verify_command(args.path, run=args.run, data_dir=args.data_dir, as_json=args.as_json)
    except LedgerError as exc:
        if os.environ.get("LEDGER_DEBUG"):
            raise
        from ledger.cli.app import report_error

        return report_error(exc)
    except KeyboardInterrupt:
        print("\nAborted!", file=sys.stderr)  # what click says on Ctrl-C
        return 1


def _exit_status(code: object) -> int:
    """The status ``sys.exit(code)`` would give the process."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
