"""The ``ledger`` console script, and the one place errors become exit codes.

``ledger verify FILE`` starts hashing the file at once (:mod:`ledger.cli._early`).
With plain arguments (:func:`ledger.cli._early.plain_verify_arguments`, which
knows verify's options from the table its typer command is built from) it then
runs the command's body directly, without loading typer and click while the
file is hashed: the function the typer command calls, so the same report and
exit codes. Anything else goes through the typer app (:func:`run_app`).

Either way an error of the :mod:`ledger.errors` tree becomes one red line on
stderr and the error's exit code (:func:`report_error`); no traceback unless
``LEDGER_DEBUG=1``.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from ledger.errors import LedgerError


def main() -> None:
    """Console entry point (``ledger``, ``python -m ledger``)."""
    argv = sys.argv[1:]
    if argv[:1] != ["verify"]:
        run_app(argv)
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


def run_app(argv: list[str]) -> NoReturn:
    """The full command line: typer parses ``argv`` and runs the command; ends the process."""
    from ledger.cli.app import app

    try:
        app(argv)  # standalone: ends the process itself (usage errors, typer.Exit, success)
    except LedgerError as exc:
        sys.exit(report_error(exc))
    raise AssertionError("the typer app returned instead of ending the process")


def verify(argv: list[str]) -> int:
    """Run ``ledger verify`` (``argv`` without the program name); returns the exit code."""
    from ledger.cli import _early

    _early.start(argv)
    args = _early.plain_verify_arguments(argv) if _early.started() else None
    if args is None:
        run_app(argv)
    from ledger.cli.check import check_file

    try:
        return check_file(
            args.path, run=args.run, data_dir=args.data_dir, as_json=args.as_json, api=args.api
        )
    except LedgerError as exc:
        return report_error(exc)
    except KeyboardInterrupt:
        print("\nAborted!", file=sys.stderr)  # what click says on Ctrl-C
        return 1


def report_error(exc: LedgerError) -> int:
    """Say what went wrong in one red line on stderr; returns the error's exit code.

    With ``LEDGER_DEBUG`` set, raises ``exc`` instead, traceback and all.
    """
    if os.environ.get("LEDGER_DEBUG"):
        raise exc
    import click  # not typer: the fast path of `ledger verify` reports errors too

    click.secho(f"error: {exc}", fg="red", err=True)
    return exc.exit_code


def _exit_status(code: object) -> int:
    """The status ``sys.exit(code)`` would give the process."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1
