from __future__ import annotations

import threading
import time

import httpx
import pytest

from mlaas4hep.auth.jwks import IssuerKeys, KeyFetchError
from mlaas4hep.errors import AuthError

from .conftest import ISSUER, FakeIssuer


class Clock:
    """A fake monotonic clock; ``sleep`` advances it and records the waits."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s


def keys(fake: FakeIssuer, clock: Clock, **kw: float) -> IssuerKeys:
    client = httpx.Client(transport=fake.transport)
    url = ISSUER + "/.well-known/openid-configuration"
    return IssuerKeys(ISSUER, url, client, clock=clock, sleep=clock.sleep, **kw)


def test_keys_are_cached(fake_issuer: FakeIssuer) -> None:
    clock = Clock()
    k = keys(fake_issuer, clock)
    for _ in range(5):
        k.key_for("rsa-1", "RS256")
    assert fake_issuer.fetches == 1


def test_rotation_is_picked_up_at_once_even_right_after_a_fetch(fake_issuer: FakeIssuer) -> None:
    """No blind spot: a new kid seen 0.1 s after a fetch waits < 1 s, then succeeds."""
    clock = Clock()
    k = keys(fake_issuer, clock, min_refresh_s=1.0)
    k.key_for("rsa-1", "RS256")
    fake_issuer.published = [fake_issuer.jwk("rsa-2")]  # the issuer rotated
    clock.t += 0.1
    assert k.key_for("rsa-2", "RS256").key_id == "rsa-2"
    assert fake_issuer.fetches == 2
    assert clock.sleeps == [pytest.approx(0.9)]


def test_unknown_kid_flood_is_rate_limited(fake_issuer: FakeIssuer) -> None:
    clock = Clock()
    k = keys(fake_issuer, clock, min_refresh_s=2.0)
    k.key_for("rsa-1", "RS256")
    for i in range(10):
        with pytest.raises(AuthError, match="unknown key"):
            k.key_for(f"rogue-{i}", "RS256")
    # one fetch per 2 s of (fake) time, never more
    assert fake_issuer.fetches == 11
    assert sum(clock.sleeps) == pytest.approx(20.0)


def test_waiters_share_one_fetch(fake_issuer: FakeIssuer) -> None:
    """Unknown-kid requests queued behind a slow fetch are answered by the next one."""
    client = httpx.Client(transport=fake_issuer.transport)
    url = ISSUER + "/.well-known/openid-configuration"
    k = IssuerKeys(ISSUER, url, client, min_refresh_s=0.0)
    k.key_for("rsa-1", "RS256")
    fake_issuer.published = [fake_issuer.jwk("rsa-2")]
    real = k._fetch_keys
    gate, entered = threading.Event(), threading.Event()

    def slow() -> dict[str, dict[str, object]]:
        entered.set()
        gate.wait(5)
        return real()

    k._fetch_keys = slow  # type: ignore[method-assign]
    found: list[str | None] = []

    def ask() -> None:
        found.append(k.key_for("rsa-2", "RS256").key_id)

    first = threading.Thread(target=ask)
    first.start()
    entered.wait(5)  # a fetch is in flight; everyone below arrives during it
    others = [threading.Thread(target=ask) for _ in range(7)]
    for t in others:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in [first, *others]:
        t.join(5)
    assert found == ["rsa-2"] * 8
    # the in-flight one, plus one that started after all the others had arrived
    assert fake_issuer.fetches == 3  # (the first fetch at the top of the test included)


def test_ttl_expiry_refetches(fake_issuer: FakeIssuer) -> None:
    clock = Clock()
    k = keys(fake_issuer, clock, ttl_s=60)
    k.key_for("rsa-1", "RS256")
    clock.t += 61
    k.key_for("rsa-1", "RS256")
    assert fake_issuer.fetches == 2


def test_stale_keys_are_kept_when_the_issuer_is_down(fake_issuer: FakeIssuer) -> None:
    clock = Clock()
    k = keys(fake_issuer, clock, ttl_s=60)
    k.key_for("rsa-1", "RS256")
    fake_issuer.down = True
    clock.t += 61
    assert k.key_for("rsa-1", "RS256").key_id == "rsa-1"
    attempts = k.fetch_count
    clock.t += 1
    k.key_for("rsa-1", "RS256")  # no new attempt on every request while it is down
    assert k.fetch_count == attempts


def test_first_fetch_failure_is_an_auth_error(fake_issuer: FakeIssuer) -> None:
    fake_issuer.down = True
    with pytest.raises(KeyFetchError, match="HTTP 503"):
        keys(fake_issuer, Clock()).key_for("rsa-1", "RS256")


@pytest.mark.parametrize(
    ("attr", "value", "reason"),
    [
        ("meta_issuer", ISSUER + "/", "names another issuer"),
        ("meta_issuer", "https://evil.example.org", "names another issuer"),
        ("jwks_uri", "http://evil.example.org/jwks", "https://"),
    ],
)
def test_discovery_is_checked(fake_issuer: FakeIssuer, attr: str, value: str, reason: str) -> None:
    setattr(fake_issuer, attr, value)
    with pytest.raises(KeyFetchError, match=reason):
        keys(fake_issuer, Clock()).key_for("rsa-1", "RS256")


def test_oversized_document_is_rejected(fake_issuer: FakeIssuer) -> None:
    with pytest.raises(KeyFetchError, match="larger than"):
        keys(fake_issuer, Clock(), max_bytes=100).key_for("rsa-1", "RS256")


def test_key_use_and_alg_must_fit(fake_issuer: FakeIssuer) -> None:
    fake_issuer.published = [{**fake_issuer.jwk("rsa-1"), "use": "enc"}, fake_issuer.jwk("ec-1")]
    k = keys(fake_issuer, Clock())
    with pytest.raises(AuthError, match="does not match"):
        k.key_for("rsa-1", "RS256")
    with pytest.raises(AuthError, match="does not match"):
        k.key_for("ec-1", "RS256")
    with pytest.raises(AuthError, match="not allowed"):
        k.key_for("ec-1", "HS256")
