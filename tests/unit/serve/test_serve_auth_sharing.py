"""Concurrent cache misses for the same credentials share one token verification."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from starlette.requests import Request

from mlaas4hep.auth.principal import Principal
from mlaas4hep.errors import AuthError
from mlaas4hep.serve.http import AuthCache, principal_dependency


def _request(token: str, peer: str = "10.0.0.1") -> Request:
    headers = [(b"authorization", f"Bearer {token}".encode())]
    return Request({"type": "http", "headers": headers, "client": (peer, 1234)})


class SlowIssuer:
    """Verifies tokens slowly (like an ES256 check under load), counting the calls."""

    def __init__(self) -> None:
        self.calls: list[str | None] = []
        self.lock = threading.Lock()

    def __call__(self, header: str | None, peer: str | None) -> Principal:
        with self.lock:
            self.calls.append(header)
        time.sleep(0.05)
        if header != "Bearer good":
            raise AuthError("the token is not valid")
        return Principal(issuer="i", subject="alice")


def test_concurrent_misses_verify_once() -> None:
    issuer = SlowIssuer()
    dependency = principal_dependency(AuthCache(issuer, ttl_s=60))

    async def burst() -> list[Principal]:
        return await asyncio.gather(*(dependency(_request("good")) for _ in range(20)))

    principals = asyncio.run(burst())
    assert {p.subject for p in principals} == {"alice"}
    assert issuer.calls == ["Bearer good"]


def test_a_failed_check_fails_every_waiter_and_is_not_kept() -> None:
    issuer = SlowIssuer()
    dependency = principal_dependency(AuthCache(issuer, ttl_s=60))

    async def burst() -> list[object]:
        requests = [dependency(_request("bad")) for _ in range(5)]
        return await asyncio.gather(*requests, return_exceptions=True)

    assert all(isinstance(r, AuthError) for r in asyncio.run(burst()))
    assert len(issuer.calls) == 1
    assert all(isinstance(r, AuthError) for r in asyncio.run(burst()))
    assert len(issuer.calls) == 2  # failures are never cached nor shared later


def test_different_credentials_are_checked_apart() -> None:
    issuer = SlowIssuer()
    dependency = principal_dependency(AuthCache(issuer, ttl_s=60))

    async def mixed() -> list[object]:
        requests = [dependency(_request("good", peer)) for peer in ("10.0.0.1", "10.0.0.2")]
        requests.append(dependency(_request("bad")))
        return await asyncio.gather(*requests, return_exceptions=True)

    results = asyncio.run(mixed())
    assert [type(r).__name__ for r in results] == ["Principal", "Principal", "AuthError"]
    assert len(issuer.calls) == 3


def test_a_caller_that_goes_away_does_not_cancel_the_others() -> None:
    issuer = SlowIssuer()
    dependency = principal_dependency(AuthCache(issuer, ttl_s=60))

    async def scenario() -> Principal:
        first = asyncio.ensure_future(dependency(_request("good")))
        second = asyncio.ensure_future(dependency(_request("good")))
        await asyncio.sleep(0.01)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        return await second

    assert asyncio.run(scenario()).subject == "alice"
    assert issuer.calls == ["Bearer good"]


def test_without_a_cache_every_request_is_checked() -> None:
    issuer = SlowIssuer()
    dependency = principal_dependency(issuer)

    async def burst() -> list[Principal]:
        return await asyncio.gather(*(dependency(_request("good")) for _ in range(3)))

    assert len(asyncio.run(burst())) == 3
    assert len(issuer.calls) == 3
