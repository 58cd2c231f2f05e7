"""A progress bar for hashing large files, shown only to a person at a terminal.

:func:`progress_bar` is what the commands use: the callback that
:func:`ledger.hashing.cid.file_cid` calls with the bytes it hashed, or None
when no bar is wanted. :func:`wants_progress` decides; :func:`hashing_progress`
draws (with rich, imported only when a bar is actually shown).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from ledger.hashing.cid import Progress

PROGRESS_THRESHOLD = 256 * 1024 * 1024
"""Files larger than this (256 MiB) get a progress bar."""


@contextmanager
def progress_bar(path: Path, *, json_output: bool) -> Iterator[Any]:
    """A callback that draws a hashing bar on stdout, or None when no bar is wanted."""
    size = file_size(path)
    if not wants_progress(size, json_output=json_output, stream=sys.stdout):
        yield None
        return
    with hashing_progress(path, size, sys.stdout) as progress:
        yield progress


def wants_progress(size: int, *, json_output: bool, stream: TextIO) -> bool:
    """A bar for a file of ``size`` bytes: only above the threshold, only when
    ``stream`` is a terminal, never for ``--json`` output (it is for programs)."""
    if json_output or size <= PROGRESS_THRESHOLD:
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def file_size(path: Path) -> int:
    """The size of a regular file, 0 for anything else (no bar then)."""
    try:
        return os.stat(path).st_size if path.is_file() else 0
    except OSError:
        return 0


@contextmanager
def hashing_progress(path: Path, size: int, stream: TextIO) -> Iterator[Progress]:
    """Draw a bar on ``stream`` while the caller hashes ``path``; yields the callback."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.progress import (
        Progress as Bar,
    )

    console = Console(file=stream)
    with Bar(
        TextColumn("hashing {task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(path.name, total=size)

        def advance(done: int) -> None:
            bar.advance(task, done)

        yield advance
