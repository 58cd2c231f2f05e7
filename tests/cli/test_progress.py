"""When ``ledger verify`` and ``ledger cid`` draw a hashing progress bar."""

from __future__ import annotations

import io

from ledger.cli.progress import PROGRESS_THRESHOLD, wants_progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Closed(io.StringIO):
    def isatty(self) -> bool:
        raise ValueError("I/O operation on closed file")


def test_a_progress_bar_only_for_large_files_on_a_terminal_without_json() -> None:
    big = PROGRESS_THRESHOLD + 1
    assert wants_progress(big, json_output=False, stream=Terminal())
    assert not wants_progress(big, json_output=True, stream=Terminal())  # --json
    assert not wants_progress(big, json_output=False, stream=io.StringIO())  # not a TTY
    assert not wants_progress(PROGRESS_THRESHOLD, json_output=False, stream=Terminal())
    assert not wants_progress(big, json_output=False, stream=Closed())
