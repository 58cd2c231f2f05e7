"""Run ids, digests and relation labels (``ledger.ids``): one parser, one error."""

from __future__ import annotations

import pytest

from ledger.errors import BadIdError, InputError
from ledger.ids import Digest32, Relation, RunId, from_hex, label, to_hex

RAW = bytes(range(32))
TEXT = "0x" + RAW.hex()


@pytest.mark.parametrize(
    "given", [TEXT, TEXT.upper().replace("0X", "0x"), RAW.hex(), f"  {TEXT}\n", "0X" + RAW.hex()]
)
def test_a_run_id_is_read_in_any_case_with_or_without_0x(given: str) -> None:
    run_id = RunId.parse(given, field="run")
    assert run_id == RAW
    assert isinstance(run_id, bytes)
    assert str(run_id) == TEXT == run_id.hex0x == to_hex(run_id)
    assert hash(run_id) == hash(RAW)  # a dict keyed by plain bytes finds it
    assert {RAW: "x"}[run_id] == "x"


@pytest.mark.parametrize("given", ["0x12", TEXT + "00", TEXT[:-1] + "g", "", "0x", TEXT[:-1]])
def test_a_bad_run_id_names_its_field_and_what_is_valid(given: str) -> None:
    with pytest.raises(BadIdError) as info:
        RunId.parse(given, field="query.parent")
    error = info.value
    assert isinstance(error, InputError)
    assert isinstance(error, ValueError)
    assert error.field == "query.parent"
    assert error.exit_code == 11
    assert error.http_status == 422
    assert str(error).startswith(f"query.parent: {given!r} is not 32 bytes of hex")
    assert error.hint is not None
    assert "run id" in error.hint
    assert "64 hex digits" in error.hint


def test_bytes_are_taken_as_they_are_when_32_long() -> None:
    assert Digest32.parse(RAW, field="root") == RAW
    with pytest.raises(BadIdError, match="root: 31 bytes given"):
        Digest32.parse(RAW[:31], field="root")
    with pytest.raises(BadIdError):
        RunId(b"short")


def test_from_hex_reads_other_sizes_and_any_length() -> None:
    assert from_hex("0x" + "ab" * 20, field="address", size=20) == b"\xab" * 20
    assert from_hex("abcd", field="note", size=None) == b"\xab\xcd"
    with pytest.raises(BadIdError, match="note: 'abc' is not hex"):
        from_hex("abc", field="note", size=None)
    with pytest.raises(BadIdError, match="not 20 bytes of hex"):
        from_hex("0x" + "ab" * 32, field="address", size=20)


def test_to_hex_ignores_a_subclass_hex_with_its_own_prefix() -> None:
    class PrefixedHex(bytes):  # as web3's HexBytes before 1.0 wrote it
        def hex(self, *args: object) -> str:
            return "0x" + super().hex()

    assert to_hex(PrefixedHex(RAW)) == TEXT


def test_repr_names_the_type() -> None:
    assert repr(RunId(RAW)) == f"RunId({TEXT!r})"
    assert repr(Digest32(RAW)) == f"Digest32({TEXT!r})"


@pytest.mark.parametrize(
    ("code", "text"),
    [(1, "fine-tune"), (2, "distillation"), (6, "sweep-trial"), (7, "other"), (0, "none")],
)
def test_relation_labels_and_their_parse_agree(code: int, text: str) -> None:
    assert label(code) == text == Relation(code).label
    if code:
        assert Relation.parse(text) is Relation(code)
        assert Relation.parse(text.upper().replace("-", "_")) is Relation(code)
        assert Relation.parse(Relation(code)) is Relation(code)


def test_an_unknown_relation_code_has_one_label_distinct_from_other() -> None:
    assert label(42) == "relation-42"
    assert label(42) != label(Relation.OTHER)


@pytest.mark.parametrize("text", ["none", "cousin", ""])
def test_an_unknown_relation_label_is_an_input_error_listing_the_labels(text: str) -> None:
    with pytest.raises(InputError) as info:
        Relation.parse(text)
    assert "fine-tune" in str(info.value)
    assert "none," not in str(info.value)
