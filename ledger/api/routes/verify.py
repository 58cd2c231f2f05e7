"""``/api/v1/verify``: a file, a folder or a digest re-checked against the chain.

The index is not consulted: the answer is the :class:`~ledger.verify.Verifier`'s,
reading the registry over JSON-RPC and the documents from the store, exactly as
``ledger verify`` does. An upload is streamed to a temporary file (never
unpickled; tensors are read only as ``ledger verify`` reads them) and deleted.
A folder (``/api/v1/verify/folder``) is written file by file into a fresh
temporary folder (:mod:`ledger.api.folder_upload` checks every path) and
verified as ``ledger verify FOLDER`` verifies it, then deleted.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from ledger.api.deps import State
from ledger.api.folder_upload import MAX_FILES, UploadTooLargeError, receive_folder
from ledger.api.problems import responses
from ledger.api.routes._convert import answer
from ledger.api.schemas import CheckOut, ClaimOut, VerifyDigest, VerifyOut
from ledger.errors import InputError
from ledger.hashing.cid import Cid
from ledger.ids import Digest32, RunId
from ledger.verify import Verifier, VerifyReport

router = APIRouter(tags=["verify"])
CHUNK = 1 << 20


def _suffix(filename: str | None) -> str:
    """The upload's extension if it is a plain one (it tells the format apart), else none."""
    match = _SUFFIX.search(filename or "")
    return match.group(0).lower() if match else ""


_SUFFIX = re.compile(r"\.[A-Za-z0-9_-]{1,15}\Z")


def _shown(text: str, secret: str, shown: str) -> str:
    """``text`` without the server's temporary path: the client's name stands in."""
    return text.replace(secret, shown)


def _out(report: VerifyReport, hide: tuple[str, str] | None = None) -> VerifyOut:
    def clean(text: str) -> str:
        return _shown(text, *hide) if hide else text

    return VerifyOut(
        outcome=report.outcome.value,
        file_cid=report.file_cid,
        run_id=report.run_id,
        matched_by=report.matched_by,
        step=report.step,
        is_final=report.is_final,
        tensor_root=report.tensor_root,
        checks=[
            CheckOut(name=c.name, ok=c.ok, unchecked=c.unchecked, detail=clean(c.detail))
            for c in report.checks
        ],
        origin=None if report.origin is None else ClaimOut(**report.origin),
        claimants=[ClaimOut(**claim) for claim in report.claimants],
    )


def _expected(run: str | None) -> bytes | None:
    return RunId.parse(run, field="run") if run else None


@router.post(
    "/verify/digest",
    response_model=VerifyOut,
    summary="Verify a file CID, CID digest or tensor root against the chain",
    responses=responses(401, 422, 502, 503),
)
def verify_digest(body: VerifyDigest, state: State) -> Response:
    given = [k for k in ("cid", "digest", "tensor_root") if getattr(body, k)]
    if len(given) != 1:
        raise InputError(
            "body: give exactly one of cid, digest, tensor_root",
            hint='e.g. {"cid": "bafkrei..."}',
        )
    expected = _expected(body.run)
    verifier = Verifier(state.reader(), state.store)
    if body.cid:
        report = verifier.verify_cid(Cid.parse(body.cid), expected_run=expected)
    elif body.digest:
        digest = Digest32.parse(body.digest, field="body.digest")
        report = verifier.verify_cid(Cid.from_digest(digest, 0x55), expected_run=expected)
    else:
        assert body.tensor_root is not None
        root = Digest32.parse(body.tensor_root, field="body.tensor_root")
        report = verifier.verify_tensor_root(root, expected_run=expected)
    return answer(_out(report))


@router.post(
    "/verify",
    response_model=VerifyOut,
    summary="Upload a weights file and verify it against the chain",
    responses=responses(401, 413, 422, 502, 503),
)
async def verify_upload(
    state: State,
    file: Annotated[UploadFile, File(description="the weights file (.pt, .safetensors, ...)")],
    run: Annotated[str | None, Form(max_length=66, description="run it should belong to")] = None,
) -> Response:
    expected = _expected(run)
    suffix = _suffix(file.filename)
    with tempfile.TemporaryDirectory(prefix="ledger-verify-") as folder:
        target = Path(folder) / f"upload{suffix}"
        size = 0
        with open(target, "wb") as handle:
            while chunk := await file.read(CHUNK):
                size += len(chunk)
                if size > state.max_upload:
                    raise UploadTooLargeError(
                        f"file: larger than the {state.max_upload} bytes this API accepts",
                        hint="verify it locally with `ledger verify FILE`, or send its CID to "
                        "/api/v1/verify/digest",
                    )
                handle.write(chunk)
        if size == 0:
            raise InputError("file: the upload is empty")
        verifier = Verifier(state.reader(), state.store)

        def check() -> VerifyReport:
            return verifier.verify_file(target, expected_run=expected)

        shown = "the upload" + (f" ({suffix} file)" if suffix else "")
        try:
            report = await run_in_threadpool(check)
        except InputError as exc:  # e.g. a hostile file: named as the client knows it
            raise InputError(
                _shown(exc.message, str(target), shown),
                hint=_shown(exc.hint, str(target), shown) if exc.hint else None,
            ) from None
        return answer(_out(report, (str(target), shown)))


_FOLDER_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["files"],
                "properties": {
                    "files": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": "the folder's files, one part each, its filename the "
                        "file's path inside the folder (e.g. 'config.json', "
                        "'shards/1.safetensors'; '/' separates folders). Paths that all "
                        "start with one folder's name (a browser's webkitRelativePath) "
                        "are taken inside that folder.",
                    },
                    "run": {"type": "string", "maxLength": 66},
                },
            }
        }
    },
}


@router.post(
    "/verify/folder",
    response_model=VerifyOut,
    summary="Upload a model folder (its files, by path) and verify it like `ledger verify FOLDER`",
    description=f"At most {MAX_FILES} files, and in all no more bytes than a single upload. "
    "A path that is absolute, holds '..', '.', an empty component, NUL, control characters "
    "or a backslash, is given twice, or is a file where another path needs a folder is "
    "rejected (422, naming the part).",
    responses=responses(401, 413, 422, 502, 503),
    openapi_extra={"requestBody": _FOLDER_BODY},
)
async def verify_folder(request: Request, state: State) -> Response:
    with tempfile.TemporaryDirectory(prefix="ledger-verify-") as temp:
        root = Path(temp) / "folder"
        root.mkdir()
        upload = await receive_folder(
            request.stream(), request.headers.get("content-type"), root, state.max_upload
        )
        expected = _expected(upload.fields.get("run"))
        verifier = Verifier(state.reader(), state.store)
        entries = list(root.iterdir())
        if len(entries) == 1 and entries[0].is_dir():  # nothing here makes a symlink
            # every path starts with one folder's name (webkitRelativePath as the
            # browser gives it): that folder is the model folder; a model folder is
            # never one subfolder alone (`ledger verify` would find no weights in it)
            root = entries[0]

        def check() -> VerifyReport:
            return verifier.verify_file(root, expected_run=expected)

        shown = "the folder"
        try:
            report = await run_in_threadpool(check)
        except InputError as exc:  # e.g. a hostile file: named as the client knows it
            raise InputError(
                _shown(exc.message, str(root), shown),
                hint=_shown(exc.hint, str(root), shown) if exc.hint else None,
            ) from None
        return answer(_out(report, (str(root), shown)))
