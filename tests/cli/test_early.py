"""``ledger verify FILE`` starts hashing before the CLI loads, and only then."""

from __future__ import annotations

import io
from pathlib import Path

import click
import pytest

from ledger.cli import _early
from ledger.cli.options import VERIFY_OPTIONS
from ledger.hashing.cid import file_cid


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _no_leftover() -> None:
    _early._early = None


def test_verify_of_a_file_in_json_mode_is_hashed_early(tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"w" * 700_000)
    _early.start(["verify", "--run", "0x" + "ab" * 32, str(model), "--json"])
    early = _early.take(model)
    assert early is not None
    assert early.result() == file_cid(model)
    assert _early.take(model) is None  # handed out once


@pytest.mark.parametrize(
    "argv",
    [
        ["cid", "FILE"],
        ["verify", "--help"],
        ["verify", "--data-dir", "FILE"],  # FILE is the option's value, not the model
        ["verify", "missing.pt", "--json"],
        ["verify", "DIR", "--json"],
    ],
)
def test_nothing_starts_early_otherwise(tmp_path: Path, argv: list[str]) -> None:
    (tmp_path / "FILE").write_bytes(b"x")
    (tmp_path / "DIR").mkdir()
    resolved = [str(tmp_path / a) if a in ("FILE", "DIR") else a for a in argv]
    _early.start(resolved)
    assert _early._early is None


def test_no_early_hash_when_a_progress_bar_will_be_drawn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"w")
    monkeypatch.setattr("sys.stdout", FakeTty())
    _early.start(["verify", str(model)])
    assert _early._early is None


def test_an_early_hash_of_another_path_is_not_used(tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"w")
    _early.start(["verify", str(model), "--json"])
    assert _early.take(tmp_path / "other.pt") is None


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["verify", "m.pt"], ("m.pt", None, None, False)),
        (["verify", "m.pt", "--json"], ("m.pt", None, None, True)),
        (["verify", "--json", "--run", "0xab", "m.pt"], ("m.pt", "0xab", None, True)),
        (["verify", "m.pt", "--data-dir", "d", "--run=0xab"], ("m.pt", "0xab", "d", False)),
        (["verify", "m.pt", "--run", ""], ("m.pt", "", None, False)),
        (["verify", "m.pt", "--api", "http://h:8000"], ("m.pt", None, None, False)),
    ],
)
def test_plain_verify_arguments_are_read_without_a_parser(
    argv: list[str], expected: tuple[str, str | None, str | None, bool]
) -> None:
    args = _early.plain_verify_arguments(argv)
    assert args is not None
    path, run, data_dir, as_json = expected
    assert args.path == Path(path) and args.run == run and args.as_json is as_json
    assert args.data_dir == (Path(data_dir) if data_dir is not None else None)


@pytest.mark.parametrize(
    "argv",
    [
        ["cid", "m.pt"],
        ["verify"],
        ["verify", "--help"],
        ["verify", "m.pt", "--help"],
        ["verify", "m.pt", "other.pt"],
        ["verify", "m.pt", "--jsn"],  # misspelt: the parser explains it
        ["verify", "m.pt", "--run"],  # no value
        ["verify", "m.pt", "--run", "--json"],
        ["verify", "--", "m.pt"],
        ["verify", "-j", "m.pt"],
        ["verify", ""],
    ],
)
def test_anything_else_is_left_to_the_parser(argv: list[str]) -> None:
    assert _early.plain_verify_arguments(argv) is None


# -- one table of options: the early path reads what typer reads ---------------------------


def typer_verify() -> click.Command:
    """``ledger verify`` as typer builds it for click."""
    from typer.main import get_command

    from ledger.cli.app import app

    group = get_command(app)
    assert isinstance(group, click.Group)
    return group.commands["verify"]


def test_the_early_path_and_typer_accept_exactly_the_same_option_names() -> None:
    typer_options = {
        name: param.is_flag
        for param in typer_verify().params
        if isinstance(param, click.Option)
        for name in param.opts + param.secondary_opts
    }
    early_options = {
        name: not option.takes_value for option in VERIFY_OPTIONS for name in option.flags
    }
    assert typer_options == early_options  # the names, and which of them are flags
    assert {"--run", "--api", "--data-dir", "--json"} <= set(early_options)


@pytest.mark.parametrize(
    "args",
    [
        ["m.pt"],
        ["m.pt", "--json"],
        ["--json", "--run", "0xab", "m.pt"],
        ["m.pt", "--data-dir", "d", "--run=0xab"],
        ["--data-dir=d", "m.pt", "--json", "--run", ""],
        ["m.pt", "--api", "http://127.0.0.1:8000"],
    ],
)
def test_the_early_path_reads_plain_arguments_as_typer_does(
    args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LEDGER_HOME", raising=False)
    monkeypatch.delenv("LEDGER_VERIFY_API", raising=False)
    early = _early.plain_verify_arguments(["verify", *args])
    assert early is not None
    parsed = typer_verify().make_context("verify", list(args)).params
    # click hands typer strings, which typer then turns into Paths
    assert parsed == {
        "path": str(early.path),
        "run": early.run,
        "data_dir": None if early.data_dir is None else str(early.data_dir),
        "as_json": early.as_json,
        "api": early.api,
        "bundle": None,  # --bundle and --rpc go to the typer command
        "rpc": (),
    }


def test_every_option_typer_accepts_is_read_early() -> None:
    for param in typer_verify().params:
        if not isinstance(param, click.Option):
            continue
        for name in param.opts:
            if name in ("--bundle", "--rpc"):  # a bundle is checked by the typer command
                continue
            argv = ["verify", "m.pt", name] + ([] if param.is_flag else ["value"])
            assert _early.plain_verify_arguments(argv) is not None, name
