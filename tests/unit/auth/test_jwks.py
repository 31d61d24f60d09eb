from __future__ import annotations

import threading
import time

import httpx
import pytest

from mlaas4hep.auth.jwks import IssuerKeys
from mlaas4hep.errors import AuthError, IssuerUnavailable

from .conftest import ISSUER, FakeIssuer


class Clock:
    """A fake monotonic clock."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def keys(fake: FakeIssuer, clock: Clock, **kw: float) -> IssuerKeys:
    client = httpx.Client(transport=fake.transport)
    url = ISSUER + "/.well-known/openid-configuration"
    return IssuerKeys(ISSUER, url, client, clock=clock, **kw)


def test_keys_are_cached(fake_issuer: FakeIssuer) -> None:
    clock = Clock()
    k = keys(fake_issuer, clock)
    for _ in range(5):
        k.key_for("rsa-1", "RS256")
    assert fake_issuer.fetches == 1


def test_rotation_is_picked_up_within_the_refresh_interval(fake_issuer: FakeIssuer) -> None:
    """A new kid seen 0.1 s after a fetch is refused at once (no sleep), and accepted
    once the refresh interval has passed; the refused attempt is not negatively cached
    because no fetch newer than the token looked for it."""
    clock = Clock()
    k = keys(fake_issuer, clock, min_refresh_s=1.0)
    k.key_for("rsa-1", "RS256")
    fake_issuer.published = [fake_issuer.jwk("rsa-2")]  # the issuer rotated
    clock.t += 0.1
    with pytest.raises(AuthError, match="unknown key"):
        k.key_for("rsa-2", "RS256")
    assert fake_issuer.fetches == 1
    clock.t += 1.0
    assert k.key_for("rsa-2", "RS256").key_id == "rsa-2"
    assert fake_issuer.fetches == 2


def test_unknown_kid_flood_is_rate_limited(fake_issuer: FakeIssuer) -> None:
    clock = Clock()
    k = keys(fake_issuer, clock, min_refresh_s=2.0)
    k.key_for("rsa-1", "RS256")
    for i in range(1000):
        with pytest.raises(AuthError, match="unknown key"):
            k.key_for(f"rogue-{i}", "RS256")
        clock.t += 0.01  # 1000 tokens over 10 s of (fake) time
    # one fetch per 2 s, never more, and nobody slept
    assert 4 <= fake_issuer.fetches <= 6


def test_unknown_kid_is_negatively_cached(fake_issuer: FakeIssuer) -> None:
    clock = Clock()
    k = keys(fake_issuer, clock, min_refresh_s=1.0, unknown_kid_ttl_s=30.0)
    k.key_for("rsa-1", "RS256")
    clock.t += 5
    with pytest.raises(AuthError, match="unknown key"):
        k.key_for("rogue", "RS256")  # a fetch looked for it
    assert fake_issuer.fetches == 2
    for _ in range(20):
        clock.t += 1  # refreshes would be allowed again, but this kid is known-missing
        with pytest.raises(AuthError, match="unknown key"):
            k.key_for("rogue", "RS256")
    assert fake_issuer.fetches == 2
    clock.t += 11  # past the negative TTL: it may trigger one fetch again
    with pytest.raises(AuthError, match="unknown key"):
        k.key_for("rogue", "RS256")
    assert fake_issuer.fetches == 3


def test_negative_cache_is_bounded(fake_issuer: FakeIssuer) -> None:
    clock = Clock()
    k = keys(fake_issuer, clock, min_refresh_s=0.0, max_unknown=100)
    for i in range(1000):
        with pytest.raises(AuthError):
            k.key_for(f"rogue-{i}", "RS256")
        clock.t += 0.001
    assert len(k._unknown) <= 100


def test_waiters_share_one_fetch(fake_issuer: FakeIssuer) -> None:
    """Unknown-kid requests that arrive during a slow fetch share its answer."""
    client = httpx.Client(transport=fake_issuer.transport)
    url = ISSUER + "/.well-known/openid-configuration"
    k = IssuerKeys(ISSUER, url, client, min_refresh_s=60.0)
    real = k._fetch_keys
    gate, entered = threading.Event(), threading.Event()

    def slow() -> dict[str, dict[str, object]]:
        entered.set()
        gate.wait(5)
        return real()

    k._fetch_keys = slow  # type: ignore[method-assign]
    found: list[str | None] = []

    def ask() -> None:
        found.append(k.key_for("rsa-1", "RS256").key_id)

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
    assert found == ["rsa-1"] * 8
    assert fake_issuer.fetches == 1


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


def test_first_fetch_failure_is_unavailable_without_urls(
    fake_issuer: FakeIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    fake_issuer.down = True
    clock = Clock()
    k = keys(fake_issuer, clock, min_refresh_s=1.0)
    with pytest.raises(IssuerUnavailable) as info:
        k.key_for("rsa-1", "RS256")
    assert "http" not in str(info.value)
    assert ISSUER not in str(info.value)
    assert info.value.retry_after == 5.0
    assert "HTTP 503" in caplog.text  # the operator gets the details
    attempts = k.fetch_count
    clock.t += 1
    with pytest.raises(IssuerUnavailable):
        k.key_for("rsa-1", "RS256")  # inside the back-off: no new attempt
    assert k.fetch_count == attempts
    fake_issuer.down = False
    clock.t += 5
    assert k.key_for("rsa-1", "RS256").key_id == "rsa-1"


@pytest.mark.parametrize(
    ("attr", "value", "reason"),
    [
        ("meta_issuer", ISSUER + "/", "names another issuer"),
        ("meta_issuer", "https://evil.example.org", "names another issuer"),
        ("jwks_uri", "http://evil.example.org/jwks", "https://"),
    ],
)
def test_discovery_is_checked(
    fake_issuer: FakeIssuer, attr: str, value: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    setattr(fake_issuer, attr, value)
    with pytest.raises(IssuerUnavailable):
        keys(fake_issuer, Clock()).key_for("rsa-1", "RS256")
    assert reason in caplog.text


def test_oversized_document_is_rejected(
    fake_issuer: FakeIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(IssuerUnavailable):
        keys(fake_issuer, Clock(), max_bytes=100).key_for("rsa-1", "RS256")
    assert "larger than" in caplog.text


def test_key_use_and_alg_must_fit(fake_issuer: FakeIssuer) -> None:
    fake_issuer.published = [{**fake_issuer.jwk("rsa-1"), "use": "enc"}, fake_issuer.jwk("ec-1")]
    k = keys(fake_issuer, Clock())
    with pytest.raises(AuthError, match="does not match"):
        k.key_for("rsa-1", "RS256")
    with pytest.raises(AuthError, match="does not match"):
        k.key_for("ec-1", "RS256")
    with pytest.raises(AuthError, match="not allowed"):
        k.key_for("ec-1", "HS256")
