"""Start hashing the file of ``ledger verify FILE`` before the CLI has even loaded.

Loading the command-line framework takes about a tenth of a second; hashing a
large file takes longer, and the two can overlap. :func:`start` looks at the raw
arguments and, for ``verify`` of a regular file with no progress bar to draw,
hashes it on a daemon thread (so an early exit never waits for it);
:func:`take` hands the running hash to the command.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

_VALUE_OPTIONS = {"--run", "--data-dir"}


class EarlyCid:
    """A file CID being computed on a daemon thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._done = threading.Event()
        self._result: Any = None
        self._error: BaseException | None = None
        threading.Thread(target=self._run, name="ledger-early-cid", daemon=True).start()

    def _run(self) -> None:
        from ledger.hashing.cid import file_cid

        try:
            self._result = file_cid(self.path)
        except BaseException as exc:  # noqa: BLE001  handed to the caller of result()
            self._error = exc
        finally:
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
    if "--json" not in argv and sys.stdout.isatty():
        return  # the command draws a progress bar while it hashes
    path = _first_argument(argv[1:])
    if path is None or not os.path.isfile(path):
        return
    _early = EarlyCid(Path(path))


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
        elif arg in _VALUE_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None
