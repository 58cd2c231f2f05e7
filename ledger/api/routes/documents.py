"""``/api/v1/documents/{cid}``: a stored document's bytes, for verifiers elsewhere.

A third party verifying a model (``ledger verify FILE --api URL``) has the chain
but not the trainer's store. This route hands out the JSON documents the
chain's digests name (manifests, metrics documents, tensor indexes) exactly as
stored; the verifier re-hashes them against the chain, so it trusts this API
for nothing. Only JSON documents of at most :data:`MAX_DOCUMENT` bytes are
served: weights files and other artifacts are not.
"""

from __future__ import annotations

import json
import os
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import Response

from ledger.api.deps import State
from ledger.api.problems import responses
from ledger.errors import ArtifactNotFoundError, IntegrityError
from ledger.hashing.cid import Cid
from ledger.store.sources import MAX_DOCUMENT

router = APIRouter(tags=["lookup"])


@router.get(
    "/documents/{cid}",
    summary="A stored JSON document's bytes, by CID",
    responses=responses(401, 404, 422, 503),
    response_class=Response,
)
def get_document(
    cid: Annotated[str, Path(max_length=200, description="the document's CID (v0 or v1)")],
    state: State,
) -> Response:
    """The bytes filed under `cid`, re-hashed by the store; re-hash them yourself."""
    parsed = Cid.parse(cid)
    missing = ArtifactNotFoundError(f"no document {parsed} is served here")
    path_for = getattr(state.store, "path_for", None)
    if path_for is not None:  # the embedded store: look at the size before reading
        try:
            if os.stat(path_for(parsed)).st_size > MAX_DOCUMENT:
                raise missing
        except FileNotFoundError as exc:
            raise missing from exc
    elif not state.store.has(parsed):
        raise missing
    try:
        data = state.store.get_bytes(parsed)
    except (IntegrityError, ArtifactNotFoundError) as exc:  # a damaged copy is not served
        raise ArtifactNotFoundError(
            f"no intact copy of document {parsed} is served here: {exc.message}"
        ) from exc
    if len(data) > MAX_DOCUMENT or not _is_json_object(data):
        raise missing
    return Response(data, media_type="application/json")


def _is_json_object(data: bytes) -> bool:
    try:
        return isinstance(json.loads(data), dict)
    except (ValueError, RecursionError):
        return False
