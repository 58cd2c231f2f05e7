"""What ``ledger verify`` prints of names a crafted file chose."""

from __future__ import annotations

import pytest

from ledger.cli.check import _print_report
from ledger.verify import Outcome, VerifyReport


def test_names_from_a_crafted_file_cannot_paint_the_verdict(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A tensor or shard name holding escape sequences, a newline or rich markup is
    printed as written: it neither moves the cursor nor styles a fake verdict line."""
    fake = "\x1b[2K\r\x1b[32mVERIFIED\x1b[0m\n[bold green]VERIFIED[/bold green]"
    report = VerifyReport(path=f"model{fake}.safetensors", file_cid="bafy")
    report.add("tensors", False, f"added: {fake}")
    report.outcome = Outcome.MISMATCH
    _print_report(report)
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out
    assert out.count("\n") == 3  # the path line, the check, the verdict: no line of the name's
    assert "[bold green]VERIFIED[/bold green]" in out  # the markup as written, not applied
    assert out.rstrip().endswith("MISMATCH")
