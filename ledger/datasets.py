"""Datasets as a manifest names them: their identities, and the parts they hold.

A run's manifest keeps one fingerprint per data source (``data``, made by
:mod:`ledger.record.data`). This module reads those fingerprints back as
*datasets*, each named by one CID, so that the index, the API, ``ledger data``
and the verifier agree on what "the run trained on D" means:

* a ``file`` or ``folder`` fingerprint is named by its own ``cid`` -- what
  ``ipfs add`` (``-r``) prints for it, so a dataset pushed to any IPFS node
  keeps the name the run recorded;
* any other fingerprint (a list or glob of files, a Hugging Face dataset, an
  array, a torch dataset, a user's own mapping) is named by the CID of its
  fingerprint document: the fingerprint as canonical JSON (RFC 8785), as a
  file ``ipfs add --cid-version=1`` would add.

A fingerprint's top-level ``name`` (``ledger data add --name``; a file's or
folder's own name otherwise) is a label, not content: it never changes the
dataset's CID. A file or folder is named by its CID alone; for the kinds
ledger's fingerprints make (:data:`LEDGER_KINDS`), the document is hashed
without its ``name``, so a run that recorded the data unnamed and the one
``data add --name`` printed name one dataset, and a revocation reaches both.
A mapping of another kind (a user's own fingerprint) is hashed whole: there
the name may be what tells two datasets apart.

Every file or folder *inside* a fingerprint (the entries of a list of files,
the Arrow files of a Hugging Face dataset, the parts of a ``ConcatDataset``)
is a *part*: revoking a part (one poisoned shard) taints every dataset that
holds it, and so every run trained on one of them. Files inside a recorded
folder are not parts: a folder's fingerprint is its CID alone.

A revocation on chain (``revokeArtifact``) names the CID's 32-byte sha2-256
digest: a CIDv0 and a CIDv1 of the same folder are one dataset. Text forms in
the index and the API are the CIDv1 (``b...``) and the digest as ``0x`` hex.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ledger.errors import BadIdError, InputError, LedgerError
from ledger.hashing.cid import Cid, bytes_cid
from ledger.ids import from_hex, to_hex

MAX_PARTS = 10_000
"""Parts kept per dataset (a list of a million files is named by its document CID;
only its first parts can be revoked one by one)."""

MAX_DEPTH = 16
"""How deep fingerprints nest before the rest is not looked into."""

_NAMED_BY_CID = frozenset({"file", "folder"})

LEDGER_KINDS = frozenset(
    {
        "files",
        "bytes",
        "array",
        "list",
        "hf-dataset",
        "hf-dataset-dict",
        "tensor-dataset",
        "subset",
        "concat",
    }
)
"""The document kinds :mod:`ledger.record.data` makes: none has a ``name`` of its
own, so a top-level ``name`` there is a label, left out of the document's CID."""


@dataclass(frozen=True)
class DatasetRef:
    """One dataset (or part of one) a run trained on."""

    key: str
    """The manifest's ``data`` key (``train``, ``eval.0``...)."""
    cid: str
    """Its CIDv1 text."""
    digest: str
    """The CID's sha2-256 digest, ``0x`` hex: what a revocation on chain names."""
    kind: str
    """The fingerprint's kind (``folder``, ``hf-dataset``...); ``unknown`` if it names none."""
    name: str | None = None
    """A file's or folder's name, if the fingerprint gives one."""
    bytes: int | None = None
    """Its size in bytes, if the fingerprint gives it."""
    part_of: str | None = None
    """For a part: the CIDv1 of the dataset that holds it; None for the dataset itself."""


def dataset_cid(fingerprint: Mapping[str, Any]) -> Cid:
    """The CID naming a fingerprint (see the module docstring), as CIDv1."""
    if _named_by_cid(fingerprint) and isinstance(fingerprint.get("cid"), str):
        try:
            return Cid.parse(fingerprint["cid"]).to_v1()
        except LedgerError:
            pass  # not a CID: named by its document like any other fingerprint
    from ledger.documents import canonical_json  # here: documents imports the store

    kind = fingerprint.get("kind")
    if isinstance(kind, str) and kind in LEDGER_KINDS and "name" in fingerprint:
        fingerprint = {k: v for k, v in fingerprint.items() if k != "name"}
    return bytes_cid(canonical_json(fingerprint, what="data fingerprint"))


def run_datasets(manifest: Mapping[str, Any]) -> list[DatasetRef]:
    """The datasets a manifest's ``data`` names, each followed by its parts.

    A malformed ``data`` (not a mapping, an entry that is not one) yields what
    can be read; nothing here raises for a hostile manifest.
    """
    data = manifest.get("data")
    if not isinstance(data, Mapping):
        return []
    found: list[DatasetRef] = []
    for key, fingerprint in data.items():
        if not isinstance(fingerprint, Mapping):
            continue
        try:
            cid = dataset_cid(fingerprint)
        except (InputError, RecursionError):  # not canonical JSON: no name can be derived
            continue
        whole = _ref(str(key), cid, fingerprint, None)
        found.append(whole)
        seen = {whole.digest}
        for part in _parts(fingerprint, 0):
            if len(seen) > MAX_PARTS:
                break
            try:
                part_cid = Cid.parse(str(part["cid"])).to_v1()
            except LedgerError:
                continue
            ref = _ref(str(key), part_cid, part, whole.cid)
            if ref.digest not in seen:
                seen.add(ref.digest)
                found.append(ref)
    return found


def _ref(key: str, cid: Cid, fingerprint: Mapping[str, Any], part_of: str | None) -> DatasetRef:
    kind = fingerprint.get("kind")
    name = fingerprint.get("name")
    size = fingerprint.get("bytes")
    return DatasetRef(
        key=key,
        cid=str(cid),
        digest=to_hex(cid.digest),
        kind=kind if isinstance(kind, str) else "unknown",
        name=name if isinstance(name, str) else None,
        bytes=size if isinstance(size, int) and not isinstance(size, bool) else None,
        part_of=part_of,
    )


def _named_by_cid(fingerprint: Mapping[str, Any]) -> bool:
    """A file or folder fingerprint (a ``kind`` of any other type is none: a hostile
    manifest may put a list there)."""
    kind = fingerprint.get("kind")
    return isinstance(kind, str) and kind in _NAMED_BY_CID


def _parts(value: Any, depth: int) -> Iterator[Mapping[str, Any]]:
    """Every file or folder fingerprint inside ``value`` (not ``value`` itself)."""
    if depth > MAX_DEPTH:
        return
    children: list[Any] = []
    if isinstance(value, Mapping):
        children = list(value.values())
    elif isinstance(value, list):
        children = value
    for child in children:
        if isinstance(child, Mapping) and _named_by_cid(child) and "cid" in child:
            yield child
        if isinstance(child, (Mapping, list)):
            yield from _parts(child, depth + 1)


def parse_dataset(text: str, *, field: str = "dataset") -> Cid:
    """A dataset named by its CID (``Qm...``, ``b...``, ``z...``) or by its digest
    (``0x`` and 64 hex digits), as CIDv1; a :class:`~ledger.errors.BadIdError`
    naming ``field`` otherwise. A digest alone does not say the codec: it is
    taken as a dag-pb CID (a folder, or a file of more than one block), which
    names the same digest on chain and in the index whatever the codec."""
    raw = text.strip() if isinstance(text, str) else ""
    hint = "give the dataset's CID (what `ledger data add` prints) or its 0x digest"
    if not raw or len(raw) > 200:
        raise BadIdError(f"{field}: {text!r} is not a CID or a digest", field=field, hint=hint)
    if raw[:2] in ("0x", "0X"):
        digest = from_hex(raw, field=field, kind="dataset digest")
        return Cid.from_digest(digest, 0x70)
    try:
        return Cid.parse(raw).to_v1()
    except LedgerError as exc:
        raise BadIdError(
            f"{field}: {text!r} is not a CID ({exc.message})", field=field, hint=hint
        ) from exc
