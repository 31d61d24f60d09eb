"""The one table from domain errors to HTTP, and RFC 9457 problem+json responses.

Clients never see a traceback: unexpected exceptions become a 500 problem carrying a
reference id that is also logged with the traceback. 401 answers carry
``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from mlaas4hep.errors import Mlaas4hepError
from mlaas4hep.http_status import STATUS_TABLE, http_status
from mlaas4hep.jobs.store import IdempotencyKeyReused

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "urn:mlaas4hep:problem:"
CHALLENGE = 'Bearer realm="mlaas4hep"'

#: The shared table (``http_status.py``) plus the one error only the job API raises.
ERROR_TABLE: tuple[tuple[type[Exception], int, str], ...] = (
    (IdempotencyKeyReused, 422, "idempotency-key-reused"),
    *STATUS_TABLE,
)

#: Errors raised before a route runs: request validation (answered by :func:`install`'s
#: handler) and a malformed multipart body (Starlette answers 400 itself).
_INVALID_REQUEST = (422, "invalid-request")
FRAMEWORK_ERRORS: tuple[tuple[type[Exception], int, str], ...] = (
    (RequestValidationError, *_INVALID_REQUEST),
    (MultiPartException, 400, "400"),
)

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    500: "Internal server error",
    503: "Service unavailable",
}


def status_of(exc: Exception) -> tuple[int, str]:
    """The HTTP status and problem slug for a domain error."""
    answer = http_status(exc, ERROR_TABLE)
    return answer.status, answer.slug


def problem(
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A problem+json response."""
    body: dict[str, Any] = {
        "type": TYPE_BASE + (slug or str(status)),
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "instance": instance,
        **extra,
    }
    headers = dict(headers or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", CHALLENGE)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    answer = http_status(exc, ERROR_TABLE)
    return problem(
        answer.status, str(exc), slug=answer.slug, instance=request.url.path, headers=answer.headers
    )


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "Error")
    headers = dict(exc.headers or {})
    return problem(exc.status_code, detail, instance=request.url.path, headers=headers)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": ".".join(str(p) for p in e.get("loc", ())), "msg": str(e.get("msg", ""))}
        for e in exc.errors()
    ]
    listed = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
    status, slug = _INVALID_REQUEST
    return problem(
        status,
        f"invalid request: {listed}",
        slug=slug,
        instance=request.url.path,
        errors=errors,
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    ref = uuid.uuid4().hex[:12]
    log.error("unhandled error %s on %s %s", ref, request.method, request.url.path, exc_info=exc)
    detail = f"internal error (reference {ref}); the server log has the details"
    return problem(500, detail, slug="internal", instance=request.url.path)


def install(app: FastAPI) -> None:
    """Register the handlers on *app*."""
    app.add_exception_handler(Mlaas4hepError, _domain)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(Exception, _unexpected)


#: One documented cause of an error answer: the error class and when a route raises it.
Cause = tuple[type[Exception], str]


def status_of_class(cls: type[Exception]) -> int:
    """The HTTP status the table gives errors of class *cls* (500 when none matches)."""
    table = (*ERROR_TABLE, *FRAMEWORK_ERRORS)
    return next((status for kind, status, _ in table if issubclass(cls, kind)), 500)


def problem_responses(*causes: Cause) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for one route: the problem+json answers its *causes* produce.

    Each cause's status comes from the error table (so the document cannot disagree with
    the handlers); causes sharing a status share one entry whose description lists when.
    401 documents its ``WWW-Authenticate`` challenge, 503 its ``Retry-After``.
    """
    whens: dict[int, list[str]] = {}
    for cls, when in causes:
        whens.setdefault(status_of_class(cls), []).append(when)
    responses: dict[int | str, dict[str, Any]] = {}
    for status in sorted(whens):
        entry: dict[str, Any] = {
            "description": f"{_TITLES.get(status, 'Error')}: {'; '.join(whens[status])}",
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        if status in _HEADERS:
            entry["headers"] = _HEADERS[status]
        responses[status] = entry
    return responses


_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "the RFC 6750 challenge: " + CHALLENGE,
            "schema": {"type": "string"},
        }
    },
    503: {
        "Retry-After": {
            "description": "seconds to wait before retrying",
            "schema": {"type": "integer", "minimum": 1},
        }
    },
}
