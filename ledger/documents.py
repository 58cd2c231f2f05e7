"""The JSON documents ledger stores, in canonical form, and their one reader.

Every document ledger stores (run manifest, metrics document, tensor index,
replay report) is
serialized as RFC 8785 canonical JSON (scheme ``jcs-rfc8785``), so the same
content always has the same bytes and therefore the same CID; the chain holds
that CID's sha2-256 digest. :func:`read_document` turns such a digest back into
the document, with one answer for each way that can fail.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import rfc8785

from ledger.errors import (
    ArtifactNotFoundError,
    InputError,
    IntegrityError,
    InvalidDocumentError,
)
from ledger.hashing.cid import Cid
from ledger.hashing.tensors import TENSORS_SCHEME
from ledger.ids import to_hex
from ledger.store import ArtifactStore, find_by_digest

MANIFEST_SCHEMA = "ledger.manifest/v1"
METRICS_SCHEMA = "ledger.metrics/v1"
REPLAY_REPORT_SCHEMA = "ledger.replay-report/v1"
TENSOR_INDEX_SCHEME = TENSORS_SCHEME  # a tensor index names its digest scheme, not a schema
DOCUMENT_SCHEME = "jcs-rfc8785"


class DocumentKind(enum.Enum):
    """What a stored document must say it is: :attr:`field` (``schema``, or
    ``scheme`` for a tensor index) equal to :attr:`expected`; :attr:`what` for messages."""

    MANIFEST = ("manifest", "schema", MANIFEST_SCHEMA)
    METRICS = ("metrics document", "schema", METRICS_SCHEMA)
    TENSOR_INDEX = ("tensor index", "scheme", TENSOR_INDEX_SCHEME)
    REPLAY_REPORT = ("replay report", "schema", REPLAY_REPORT_SCHEMA)

    def __init__(self, what: str, field: str, expected: str) -> None:
        self.what = what
        self.field = field
        self.expected = expected


def canonical_json(document: Mapping[str, Any], *, what: str = "document") -> bytes:
    """RFC 8785 bytes of ``document``; non-finite numbers are refused by path.

    Documents without floats (tensor indexes, most manifests' inner parts) are
    written by the standard library's C encoder, which gives the very same
    bytes for them (see :func:`_plain`); the rest go through ``rfc8785``.
    """
    if _plain(document):
        try:
            return json.dumps(
                document, sort_keys=True, separators=(",", ":"), ensure_ascii=False
            ).encode()
        except UnicodeEncodeError:
            pass  # a lone surrogate: the library below names the problem
    _check_finite(document, what)
    try:
        return bytes(rfc8785.dumps(document))
    except (TypeError, ValueError, rfc8785.CanonicalizationError) as exc:
        raise InputError(
            f"{what} cannot be written as canonical JSON: {exc}",
            hint="use only strings, numbers, booleans, null, lists and string-keyed dicts",
        ) from exc


_SAFE_INTEGER = 2**53  # RFC 8785 numbers are IEEE doubles: integers below this are exact
_BMP_END = "\U00010000"


def _plain(value: Any) -> bool:
    """Whether ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
    writes ``value`` exactly as RFC 8785 does.

    It does for strings (both escape only ``"``, ``\\`` and control characters,
    with the same short forms and lowercase ``\\u00xx``), safe integers, booleans,
    null, lists, and dicts whose keys lie in the Basic Multilingual Plane (where
    sorting by code point equals RFC 8785's sorting by UTF-16 code unit).
    Floats (ECMAScript number formatting) and anything else are not plain.
    """
    kind = type(value)
    if kind is str:
        return True
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or (key and max(key) >= _BMP_END) or not _plain(item):
                return False
        return True
    if kind is list or kind is tuple:
        return all(_plain(item) for item in value)
    if kind is int:
        return bool(-_SAFE_INTEGER < value < _SAFE_INTEGER)
    return value is None or value is True or value is False


def _check_finite(value: Any, path: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"{path} is {value}; canonical JSON has no NaN or infinity")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_finite(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_finite(item, f"{path}[{i}]")


@dataclass(frozen=True)
class Document:
    """A document read from the store: its CID, its bytes and their JSON object."""

    cid: Cid
    data: bytes
    body: dict[str, Any]

    def is_canonical(self) -> bool:
        """Whether the bytes are the document's RFC 8785 form (as ledger writes it)."""
        try:
            return canonical_json(self.body) == self.data
        except InputError:
            return False


def read_document(store: ArtifactStore, digest: bytes, kind: DocumentKind) -> Document:
    """The ``kind`` document whose CID has the sha2-256 ``digest`` (as on chain).

    Every reader of stored documents (verify, the catalogue, the indexer, the
    API) comes here, and each outcome has one answer:

    * **missing**: nothing with this digest is in the store:
      :class:`~ledger.errors.ArtifactNotFoundError` (it may arrive later).
    * **unavailable**: the store does not answer:
      :class:`~ledger.errors.StoreUnavailableError`, raised as the store raised
      it; retrying later may succeed.
    * **invalid**: the stored bytes no longer hash to their CID, are not UTF-8
      JSON, not a JSON object, or its ``kind.field`` is not ``kind.expected``:
      :class:`~ledger.errors.InvalidDocumentError`, naming the CID and why.
      Retrying does not help: the digest on chain names these bytes.

    Other store failures (:class:`~ledger.errors.StoreRefusedError`) pass through;
    all of these are :class:`~ledger.errors.StoreError`. Whether the bytes are
    canonical JSON is not checked here (:meth:`Document.is_canonical`).
    """
    cid = find_by_digest(store, digest)
    if cid is None:
        raise ArtifactNotFoundError(f"no {kind.what} with digest {to_hex(digest)} in the store")
    try:
        data = store.get_bytes(cid)
    except IntegrityError as exc:
        raise InvalidDocumentError(exc.message, cid=str(cid), hint=exc.hint) from exc
    try:
        body = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: arrays nested past Python's limit (a committer's crafted
        # document must not crash whoever reads it: verify, the indexer, the API)
        raise InvalidDocumentError(
            f"{kind.what} {cid} is not a JSON document", cid=str(cid)
        ) from exc
    if not isinstance(body, dict):
        raise InvalidDocumentError(f"{kind.what} {cid} is not a JSON object", cid=str(cid))
    if body.get(kind.field) != kind.expected:
        raise InvalidDocumentError(
            f"{kind.what} {cid} has {kind.field} {body.get(kind.field)!r}, not {kind.expected!r}",
            cid=str(cid),
        )
    return Document(cid, data, body)
