"""Canonical JSON: the standard library's encoder is taken only where it writes
RFC 8785's bytes; every document ledger stores must hash the same either way.
And the one reader of stored documents, against a real LocalStore (and an IPFS
address nobody answers at)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.documents import (
    MANIFEST_SCHEMA,
    METRICS_SCHEMA,
    DocumentKind,
    _plain,
    canonical_json,
    read_document,
)
from ledger.errors import (
    ArtifactNotFoundError,
    InputError,
    IntegrityError,
    InvalidDocumentError,
    StoreError,
    StoreUnavailableError,
)
from ledger.hashing.cid import bytes_cid
from ledger.hashing.tensors import TENSORS_SCHEME
from ledger.store import LocalStore
from ledger.store.ipfs import IpfsStore
from tests.conftest import free_port

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
        {"controls": '\x00\x08\t\n\x0b\x0c\r\x1f\x7f"\\/'},
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


# -- canonical JSON (RFC 8785) --------------------------------------------------------


def test_canonical_json_sorts_keys_and_drops_whitespace() -> None:
    doc = {"b": [1, 2, {"z": None, "y": True}], "a": "x", "c": {"k": False}}
    assert canonical_json(doc) == b'{"a":"x","b":[1,2,{"y":true,"z":null}],"c":{"k":false}}'


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1"),
        (-0.0, "0"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1e-7, "1e-7"),
        (0.1, "0.1"),
        (4.50, "4.5"),
        (2e-3, "0.002"),
        (333333333.33333329, "333333333.3333333"),
        (-5, "-5"),
        (9007199254740991, "9007199254740991"),
    ],
)
def test_canonical_json_writes_numbers_as_ecmascript_does(value: float, text: str) -> None:
    assert canonical_json({"n": value}) == b'{"n":' + text.encode() + b"}"


def test_canonical_json_matches_the_rfc_8785_example() -> None:
    # RFC 8785 section 3.2.2 (input) and 3.2.3 (output), as JSON text.
    source = (
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    ).encode()
    assert canonical_json(json.loads(source)) == expected


def test_canonical_json_sorts_keys_by_utf16_code_units() -> None:
    # U+10000 is D800 DC00 in UTF-16, so it sorts before U+FB33 (RFC 8785 section 3.2.3);
    # code point or UTF-8 order would put it last.
    out = canonical_json({"\ufb33": 1, "\U00010000": 2, "a": 0})
    assert out == '{"a":0,"\U00010000":2,"\ufb33":1}'.encode()


def test_canonical_json_is_stable_across_insertion_order() -> None:
    one = {"x": 1, "y": {"b": 2, "a": [3, {"q": 1, "p": 2}]}}
    two = {"y": {"a": [3, {"p": 2, "q": 1}], "b": 2}, "x": 1}
    assert list(one) != list(two)
    assert canonical_json(one) == canonical_json(two)
    assert json.loads(canonical_json(one)) == one


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ({"lr": float("nan")}, "manifest.lr"),
        ({"config": {"lr": float("nan")}}, "manifest.config.lr"),
        ({"config": {"lr": float("inf")}}, "manifest.config.lr"),
        ({"config": {"sched": [0.1, {"gamma": float("-inf")}]}}, "manifest.config.sched[1].gamma"),
        ({"metrics": (1.0, float("nan"))}, "manifest.metrics[1]"),
    ],
)
def test_non_finite_numbers_are_refused_by_path(document: dict[str, Any], path: str) -> None:
    with pytest.raises(InputError) as info:
        canonical_json(document, what="manifest")
    assert str(info.value).startswith(path + " is ")


def test_non_string_keys_are_an_input_error() -> None:
    with pytest.raises(InputError, match="canonical JSON"):
        canonical_json({"a": {1: "x"}})


# -- reading a stored document by its digest ----------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


MANIFEST_DOC = {"schema": MANIFEST_SCHEMA, "name": "run", "config": {"lr": 0.1}}


def test_a_stored_document_is_read_by_its_digest(store: LocalStore) -> None:
    data = canonical_json(MANIFEST_DOC)
    cid = store.put_bytes(data)
    document = read_document(store, cid.digest, DocumentKind.MANIFEST)
    assert document.body == MANIFEST_DOC
    assert document.cid == cid
    assert document.data == data
    assert document.is_canonical()


def test_a_tensor_index_is_known_by_its_scheme(store: LocalStore) -> None:
    index = {"scheme": TENSORS_SCHEME, "root": "00" * 32, "tensors": {}}
    cid = store.put_bytes(canonical_json(index))
    assert read_document(store, cid.digest, DocumentKind.TENSOR_INDEX).body == index
    with pytest.raises(InvalidDocumentError, match="scheme"):
        manifest = store.put_bytes(canonical_json(MANIFEST_DOC))
        read_document(store, manifest.digest, DocumentKind.TENSOR_INDEX)


def test_json_that_is_not_canonical_is_read_and_said_so(store: LocalStore) -> None:
    data = json.dumps(MANIFEST_DOC, indent=1).encode()
    document = read_document(store, store.put_bytes(data).digest, DocumentKind.MANIFEST)
    assert document.body == MANIFEST_DOC
    assert not document.is_canonical()


def test_a_document_not_in_the_store_is_missing(store: LocalStore) -> None:
    digest = bytes_cid(canonical_json(MANIFEST_DOC)).digest
    with pytest.raises(ArtifactNotFoundError) as info:
        read_document(store, digest, DocumentKind.MANIFEST)
    assert "0x" + digest.hex() in str(info.value)
    assert "manifest" in str(info.value)
    assert not isinstance(info.value, InvalidDocumentError)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"{not json", "not a JSON document"),
        (b"\xff\xfe{}", "not a JSON document"),
        (b"[1, 2]", "not a JSON object"),
        (b'"a string"', "not a JSON object"),
        # a committer's crafted document, nested past Python's limit
        (b"[" * 100_000 + b"]" * 100_000, "not a JSON document"),
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "not a JSON document"),
    ],
)
def test_bytes_that_are_not_a_json_object_are_invalid(
    store: LocalStore, data: bytes, why: str
) -> None:
    cid = store.put_bytes(data)
    with pytest.raises(InvalidDocumentError, match=why) as info:
        read_document(store, cid.digest, DocumentKind.METRICS)
    assert info.value.cid == str(cid)
    assert str(cid) in str(info.value)


@pytest.mark.parametrize("schema", [METRICS_SCHEMA, None, "ledger.manifest/v2"])
def test_a_document_with_another_schema_is_invalid(store: LocalStore, schema: str | None) -> None:
    document: dict[str, Any] = {"name": "run"}
    if schema is not None:
        document["schema"] = schema
    cid = store.put_bytes(canonical_json(document))
    with pytest.raises(InvalidDocumentError) as info:
        read_document(store, cid.digest, DocumentKind.MANIFEST)
    assert repr(schema) in str(info.value)
    assert repr(MANIFEST_SCHEMA) in str(info.value)
    assert info.value.cid == str(cid)


def test_changed_bytes_in_the_store_are_invalid(store: LocalStore) -> None:
    cid = store.put_bytes(canonical_json(MANIFEST_DOC))
    changed = canonical_json({**MANIFEST_DOC, "name": "RUN"})
    store.path_for(cid).write_bytes(changed)  # still a good manifest, but not these bytes
    with pytest.raises(InvalidDocumentError) as info:
        read_document(store, cid.digest, DocumentKind.MANIFEST)
    assert isinstance(info.value.__cause__, IntegrityError)
    assert info.value.cid == str(cid)
    assert str(cid) in str(info.value)


def test_a_store_that_does_not_answer_is_unavailable_not_missing() -> None:
    store = IpfsStore(f"/ip4/127.0.0.1/tcp/{free_port()}/http", timeout=2)
    with pytest.raises(StoreUnavailableError) as info:
        read_document(store, bytes_cid(b"anything").digest, DocumentKind.MANIFEST)
    assert not isinstance(info.value, (ArtifactNotFoundError, InvalidDocumentError))
    assert isinstance(info.value, StoreError)
