"""The error table of the inference routes and the authentication cache."""

from __future__ import annotations

import json

import pytest

from mlaas4hep.auth.principal import Principal
from mlaas4hep.errors import (
    AuthError,
    Conflict,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    SpecError,
    UnsafeArchiveError,
)
from mlaas4hep.serve.errors import InvalidInput, Overloaded
from mlaas4hep.serve.http import AuthCache, error_response


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (AuthError("no token"), 401),
        (PermissionDenied("no"), 403),
        (NotFound("gone"), 404),
        (Conflict("twice"), 409),
        (PayloadTooLarge("big"), 413),
        (Overloaded("busy", retry_after=2.4), 503),
        (InvalidInput("bad"), 400),
        (SpecError("bad"), 422),  # the job API's status: one table serves both APIs
        (UnsafeArchiveError("bad"), 422),
        (RuntimeError("secret internals"), 500),
    ],
)
def test_error_table(exc: Exception, status: int) -> None:
    response = error_response(exc)
    assert response.status_code == status
    body = json.loads(bytes(response.body))
    assert set(body) == {"error"}
    assert ("secret" in body["error"]) is False or status != 500
    challenge = response.headers.get("www-authenticate", "")
    assert challenge.startswith("Bearer") == (status == 401)
    assert (response.headers.get("retry-after") == "3") == (status == 503)  # rounded up


def test_auth_cache_reuses_successes_only() -> None:
    calls: list[str | None] = []

    def authenticate(header: str | None, peer: str | None) -> Principal:
        calls.append(header)
        if header != "Bearer good":
            raise AuthError("bad token")
        return Principal(issuer="i", subject="s")

    cache = AuthCache(authenticate, ttl_s=60, max_entries=4)
    assert cache("Bearer good", "1.2.3.4").subject == "s"
    assert cache("Bearer good", "1.2.3.4").subject == "s"
    assert calls == ["Bearer good"]
    for _ in range(2):
        with pytest.raises(AuthError):
            cache("Bearer bad", None)
    assert calls.count("Bearer bad") == 2
    bounded = AuthCache(lambda h, p: Principal(issuer="i", subject=str(h)), 60, max_entries=4)
    for i in range(10):
        assert bounded(f"Bearer {i}", None).subject == f"Bearer {i}"
    assert len(bounded._entries) <= 4


def test_auth_cache_expires() -> None:
    calls = []

    def authenticate(header: str | None, peer: str | None) -> Principal:
        calls.append(header)
        return Principal(issuer="i", subject="s")

    cache = AuthCache(authenticate, ttl_s=0.0)
    cache("Bearer a", None)
    cache("Bearer a", None)
    assert len(calls) == 2


def test_a_client_that_left_mid_body_is_not_an_internal_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # wrk stopping with requests in flight logged a traceback per request, as a 500.
    from starlette.requests import ClientDisconnect

    with caplog.at_level("INFO", logger="mlaas4hep.serve.http"):
        response = error_response(ClientDisconnect())
    assert response.status_code == 499
    assert not caplog.records
