"""Start hashing the file of ``ledger verify FILE`` before anything else loads.

Loading the verifier and connecting to the chain take about a tenth of a
second; hashing a large file takes longer, and the two can overlap.
:func:`start` looks at the raw arguments and, for ``verify`` of a regular file
with no progress bar to draw, hashes it on a daemon thread (so an early exit
never waits for it); :func:`take` hands the running hash to the command.
:func:`plain_verify_arguments` reads arguments simple enough to need no parser,
so the console script can skip the command-line framework altogether; it knows
verify's options from :data:`ledger.cli.options.VERIFY_OPTIONS`, the table the
typer command is built from, and leaves anything else to typer.

While the hash runs, the interpreter hands the GIL over every 0.1 ms instead
of every 5 ms. The hashing threads need the GIL only for a moment per 256 KiB
chunk (``preadv`` and ``hashlib`` release it), but when the main thread is busy
loading modules each of them waits out a whole switch interval to get it back,
and hashing all but stops until the loading is done: with the default, 60 ms of
loading on the main thread delayed the hash of a 1 GiB file by about 50 ms;
with 0.1 ms, by about 15 ms.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any, NamedTuple

from ledger.cli.options import (
    BUNDLE,
    BUNDLE_RPC,
    DATA_DIR,
    JSON,
    VERIFY_API,
    VERIFY_OPTIONS,
    VERIFY_RUN,
    Option,
)

_OPTIONS: dict[str, Option] = {flag: option for option in VERIFY_OPTIONS for flag in option.flags}
"""Every flag of ``ledger verify``, and the option it names."""

SWITCH_INTERVAL = 0.0001
"""Seconds between forced GIL hand-overs while the early hash runs (Python's default: 0.005)."""


class EarlyCid:
    """A file CID being computed on a daemon thread; with ``sha256`` (``verify --bundle``)
    the CID and the file's sha256, from the same read."""

    def __init__(self, path: Path, *, sha256: bool = False) -> None:
        # loaded here: the thread starts hashing at once
        from ledger.hashing.cid import file_cid, file_cid_and_sha256

        self.path = path
        self.with_sha256 = sha256
        self._file_cid: Any = file_cid_and_sha256 if sha256 else file_cid
        self._done = threading.Event()
        self._result: Any = None
        self._error: BaseException | None = None
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch_interval, SWITCH_INTERVAL))
        threading.Thread(target=self._run, name="ledger-early-cid", daemon=True).start()

    def _run(self) -> None:
        try:
            self._result = self._file_cid(self.path)
        except BaseException as exc:  # noqa: BLE001  handed to the caller of result()
            self._error = exc
        finally:
            sys.setswitchinterval(self._switch_interval)
            self._done.set()

    def result(self) -> Any:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._result


_early: EarlyCid | None = None


def start(argv: list[str]) -> None:
    """Begin hashing when ``argv`` is ``verify FILE ...`` and no bar will be drawn."""
    global _early
    if not argv or argv[0] != "verify" or "--help" in argv:
        return
    if not set(JSON.flags) & set(argv) and sys.stdout.isatty():
        return  # the command draws a progress bar while it hashes
    path = _first_argument(argv[1:])
    if path is None or not os.path.isfile(path):
        return
    bundle = any(arg.partition("=")[0] in BUNDLE.flags for arg in argv)
    _early = EarlyCid(Path(path), sha256=bundle)


def started() -> bool:
    """Whether a hash was started and not yet handed out."""
    return _early is not None


def take(path: Path) -> EarlyCid | None:
    """The early hash of ``path``, if one was started (once)."""
    global _early
    early, _early = _early, None
    if early is not None and os.path.abspath(early.path) == os.path.abspath(path):
        return early
    return None


def _first_argument(args: list[str]) -> str | None:
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in _OPTIONS and _OPTIONS[arg].takes_value:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


class VerifyArguments(NamedTuple):
    """``ledger verify PATH [--run ID] [--api URL] [--data-dir DIR] [--json]``, already read."""

    path: Path
    run: str | None
    data_dir: Path | None
    as_json: bool
    api: str | None = None


def plain_verify_arguments(argv: list[str]) -> VerifyArguments | None:
    """The arguments of ``verify`` when every one is plain, else None (the parser decides).

    Plain: one path that does not start with ``-``, and only the options of
    :data:`~ledger.cli.options.VERIFY_OPTIONS`, written out in full: a flag
    alone, an option with a value as ``--option VALUE`` or ``--option=VALUE``,
    the value not starting with ``-``. Anything else, ``--help`` and a misspelt
    option included, goes to the full command line, which explains usage errors.
    ``--data-dir`` left out means ``LEDGER_HOME``, and ``--api`` left out
    ``LEDGER_VERIFY_API``, as for the full command line.
    """
    if argv[:1] != ["verify"]:
        return None
    paths: list[str] = []
    given: dict[Option, str | bool] = {}
    args = iter(argv[1:])
    for arg in args:
        name, equals, value = arg.partition("=")
        option = _OPTIONS.get(name)
        if option is not None and not option.takes_value:
            if equals:
                return None  # e.g. --json=1: the parser's to explain
            given[option] = True
        elif option is not None:
            if not equals:
                value = next(args, "-")
            if value.startswith("-"):
                return None
            given[option] = value
        elif arg.startswith("-") or not arg:
            return None
        else:
            paths.append(arg)
    if len(paths) != 1 or BUNDLE in given or BUNDLE_RPC in given:
        return None  # a bundle is checked by the typer command
    run, data_dir = given.get(VERIFY_RUN), given.get(DATA_DIR)
    api = given.get(VERIFY_API, os.environ.get(VERIFY_API.envvar or "") or None)
    return VerifyArguments(
        path=Path(paths[0]),
        run=run if isinstance(run, str) else None,
        data_dir=Path(data_dir) if isinstance(data_dir, str) else None,
        as_json=given.get(JSON, False) is True,
        api=api if isinstance(api, str) else None,
    )
