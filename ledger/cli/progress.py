"""A progress bar for hashing large files, shown only to a person at a terminal.

:func:`wants_progress` decides; :func:`hashing_progress` draws (with rich,
imported only when a bar is actually shown) and hands back the callback that
:func:`ledger.hashing.cid.file_cid` calls with the bytes it hashed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from ledger.hashing.cid import Progress

PROGRESS_THRESHOLD = 256 * 1024 * 1024
"""Files larger than this (256 MiB) get a progress bar."""


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
