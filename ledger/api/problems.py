"""Errors as ``application/problem+json`` (RFC 9457).

A :class:`~ledger.errors.LedgerError` keeps its own ``http_status``; request
validation errors become 422 with every field named; unknown routes and methods
keep Starlette's 404/405. The ``type`` is a stable relative URI naming the
error class, e.g. ``/problems/not-found-error``.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from ledger.errors import LedgerError

MEDIA_TYPE = "application/problem+json"


class FieldProblem(BaseModel):
    field: str = Field(description="Where the bad value is: query.limit, body.cid, ...")
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str = Field(examples=["/problems/input-error"])
    title: str = Field(examples=["InputError"])
    status: int = Field(examples=[422])
    detail: str = Field(examples=["q: unknown filter 'colour'"])
    hint: str | None = Field(default=None, examples=["filters are key:value terms ..."])
    errors: list[FieldProblem] | None = None


def _problem_response(problem: Problem, headers: dict[str, str] | None = None) -> Response:
    from ledger.api.routes._convert import escape_invisible

    return Response(
        escape_invisible(problem.model_dump_json(exclude_none=True)),
        status_code=problem.status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def problem_of(exc: LedgerError) -> Problem:
    name = type(exc).__name__
    return Problem(
        type=f"/problems/{_kebab(name)}",
        title=name,
        status=exc.http_status,
        detail=exc.message,
        hint=exc.hint,
    )


async def _ledger_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, LedgerError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
    return _problem_response(problem_of(exc), headers)


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        FieldProblem(
            field=".".join(str(p) for p in error.get("loc", ())),
            message=str(error.get("msg", "invalid")),
        )
        for error in exc.errors()
    ]
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors) or "the request is invalid"
    return _problem_response(
        Problem(
            type="/problems/validation-error",
            title="ValidationError",
            status=422,
            detail=detail,
            errors=errors,
        )
    )


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _problem_response(
        Problem(
            type=f"/problems/http-{exc.status_code}",
            title="HTTPError",
            status=exc.status_code,
            detail=str(exc.detail),
        ),
        dict(exc.headers) if exc.headers else None,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(LedgerError, _ledger_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem statuses a route can answer."""
    text = {
        400: "Bad request",
        401: "Missing or wrong bearer token",
        404: "Not in the index",
        413: "Upload too large",
        422: "Invalid input: the problem names the field",
        502: "The chain or store answered wrongly",
        503: "The chain, store or index is unavailable",
    }
    return {
        status: {
            "description": text.get(status, "Problem"),
            "model": Problem,
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }
