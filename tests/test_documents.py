"""Canonical JSON: the standard library's encoder is taken only where it writes
RFC 8785's bytes; every document ledger stores must hash the same either way."""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import InputError
from ledger.record.manifest import _plain, canonical_json

SAFE = 2**53 - 1

plain_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-SAFE, max_value=SAFE)
    | st.text()  # every code point but lone surrogates: controls, U+2028, astral planes
)
bmp_keys = st.text(alphabet=st.characters(max_codepoint=0xFFFF, exclude_categories=["Cs"]))
plain_documents = st.recursive(
    plain_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(bmp_keys, inner, max_size=5),
    max_leaves=30,
)
any_documents = st.recursive(
    plain_scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(plain_documents)
def test_plain_documents_are_written_as_rfc8785_writes_them(document: Any) -> None:
    assert _plain(document)
    assert canonical_json({"d": document}) == rfc8785.dumps({"d": document})


@settings(max_examples=400, deadline=None)
@given(any_documents)
def test_every_document_hashes_as_rfc8785_says(document: Any) -> None:
    assert canonical_json({"d": document}) == rfc8785.dumps({"d": document})


@pytest.mark.parametrize(
    "document",
    [
        {"\ue000": 1, "\U0001f600": 2},  # UTF-16 order puts the astral key first
        {"x": 1e21, "y": 1e16, "z": 0.1, "w": -0.0, "v": 5e-324},  # ECMAScript number text
        {"big": 2**53 - 1, "neg": -(2**53) + 1},
        {"controls": "\x00\x08\t\n\x0b\x0c\r\x1f\x7f\"\\/"},
    ],
)
def test_the_corner_cases_of_both_writers(document: dict[str, Any]) -> None:
    assert canonical_json(document) == rfc8785.dumps(document)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"step": 2**53}, "cannot be written as canonical JSON"),
        ({"loss": float("nan")}, r"doc\.loss is nan"),
        ({"text": "\ud800"}, "cannot be written as canonical JSON"),
        ({1: "int key"}, "cannot be written as canonical JSON"),
    ],
)
def test_what_neither_writer_takes_is_refused_by_name(
    document: dict[Any, Any], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        canonical_json(document, what="doc")
