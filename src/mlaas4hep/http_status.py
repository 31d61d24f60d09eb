"""The one table from domain errors to HTTP status, shared by the job API and the V2 routes.

Pure data (no web framework): ``api/errors.py`` renders a match as RFC 9457 problem+json,
``serve/http.py`` as the V2 protocol's ``{"error": ...}``; both take the status, the
``WWW-Authenticate`` challenge and ``Retry-After`` from here, so the two cannot drift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlaas4hep.errors import (
    AuthError,
    Conflict,
    DataSourceError,
    ExpressionError,
    InvalidInput,
    Mlaas4hepError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    SpecError,
    Unavailable,
    UnsafeArchiveError,
    UnsupportedEncoding,
)

#: Most specific first: the first ``isinstance`` match decides (status, problem slug).
STATUS_TABLE: tuple[tuple[type[Exception], int, str], ...] = (
    (PermissionDenied, 403, "forbidden"),
    (AuthError, 401, "unauthorized"),
    (NotFound, 404, "not-found"),
    (Conflict, 409, "conflict"),
    (PayloadTooLarge, 413, "payload-too-large"),
    (Unavailable, 503, "unavailable"),
    (UnsupportedEncoding, 415, "unsupported-encoding"),
    (InvalidInput, 400, "invalid-input"),
    (SpecError, 422, "invalid-spec"),
    (ExpressionError, 422, "invalid-expression"),
    (UnsafeArchiveError, 422, "unsafe-archive"),
    (DataSourceError, 422, "data-source"),
    (Mlaas4hepError, 400, "bad-request"),
)


@dataclass(frozen=True)
class HttpStatus:
    """How one error is answered: status, problem slug and extra headers."""

    status: int
    slug: str
    headers: dict[str, str]


def http_status(
    exc: Exception, table: tuple[tuple[type[Exception], int, str], ...] = STATUS_TABLE
) -> HttpStatus:
    """The answer for *exc*; 500 ``internal`` for anything not in *table*.

    401 carries ``WWW-Authenticate: Bearer`` (RFC 6750), 503 ``Retry-After`` in whole
    seconds (RFC 9110 s10.2.3).
    """
    status, slug = next(((s, g) for cls, s, g in table if isinstance(exc, cls)), (500, "internal"))
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="mlaas4hep"'
    if isinstance(exc, Unavailable):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    return HttpStatus(status, slug, headers)
