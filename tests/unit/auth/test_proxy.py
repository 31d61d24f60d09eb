from __future__ import annotations

from collections.abc import Callable

import pytest

from mlaas4hep.auth.proxy import TrustedProxies, strip_identity_headers
from mlaas4hep.auth.tokens import Authenticator
from mlaas4hep.errors import AuthError

from .conftest import FakeIssuer

TRUSTED = ["10.0.0.0/8", "fd00::/8"]


@pytest.mark.parametrize(
    ("peer", "ok"),
    [
        ("10.1.2.3", True),
        ("::ffff:10.1.2.3", True),
        ("fd00::1", True),
        ("11.0.0.1", False),
        ("127.0.0.1", False),
        ("testclient", False),
        (None, False),
        ("", False),
    ],
)
def test_trust_by_cidr(peer: str | None, ok: bool) -> None:
    assert TrustedProxies(TRUSTED).trusts(peer) is ok


def test_nothing_is_trusted_by_default() -> None:
    assert not TrustedProxies([]).trusts("127.0.0.1")


def test_untrusted_peer_headers_are_ignored() -> None:
    got = TrustedProxies(TRUSTED).extract("8.8.8.8", [("X-Forwarded-User", "alice")])
    assert not got.present


def test_trusted_peer_headers_are_read_in_any_spelling() -> None:
    headers = [
        ("x_forwarded_user", "alice"),
        ("X-Forwarded-Groups", "/cms, /cms/higgs"),
        ("X-FORWARDED-ACCESS-TOKEN", "tok"),
    ]
    got = TrustedProxies(TRUSTED).extract("10.0.0.5", headers)
    assert (got.user, got.access_token) == ("alice", "tok")
    assert got.groups == frozenset({"/cms", "/cms/higgs"})


def test_a_header_sent_twice_is_ignored() -> None:
    """e.g. the proxy set X-Forwarded-User and the client smuggled X_Forwarded_User."""
    headers = [("X-Forwarded-User", "alice"), ("X_Forwarded_User", "admin")]
    assert TrustedProxies(TRUSTED).extract("10.0.0.5", headers).user is None


def test_strip_identity_headers() -> None:
    headers = [("X_Forwarded_User", "x"), ("x-forwarded-access-token", "t"), ("Accept", "a")]
    assert strip_identity_headers(headers) == [("Accept", "a")]


def test_forwarded_token_is_revalidated(
    make_auth: Callable[..., Authenticator], fake_issuer: FakeIssuer
) -> None:
    auth = make_auth(trusted_proxies=("10.0.0.0/8",))
    good = fake_issuer.token()
    p = auth.authenticate(None, "10.0.0.7", [("X-Forwarded-Access-Token", good)])
    assert p.subject == "alice-sub"
    p = auth.authenticate(
        None, "10.0.0.7", [("X-Forwarded-Access-Token", good), ("X-Forwarded-User", "alice")]
    )
    assert p.name == "alice"
    with pytest.raises(AuthError, match="expired"):
        auth.authenticate(
            None, "10.0.0.7", [("X-Forwarded-Access-Token", fake_issuer.token(exp=1, iat=0))]
        )


def test_forwarded_user_must_match_the_token(
    make_auth: Callable[..., Authenticator], fake_issuer: FakeIssuer
) -> None:
    auth = make_auth(trusted_proxies=("10.0.0.0/8",))
    headers = [("X-Forwarded-Access-Token", fake_issuer.token()), ("X-Forwarded-User", "bob")]
    with pytest.raises(AuthError, match="does not match"):
        auth.authenticate(None, "10.0.0.7", headers)


def test_forwarded_user_without_token_is_rejected(make_auth: Callable[..., Authenticator]) -> None:
    auth = make_auth(trusted_proxies=("10.0.0.0/8",))
    with pytest.raises(AuthError, match="no access token"):
        auth.authenticate(None, "10.0.0.7", [("X-Forwarded-User", "alice")])


def test_untrusted_peer_falls_back_to_its_bearer_token(
    make_auth: Callable[..., Authenticator], fake_issuer: FakeIssuer
) -> None:
    auth = make_auth(trusted_proxies=("10.0.0.0/8",))
    forged = [("X-Forwarded-User", "admin"), ("X-Forwarded-Access-Token", fake_issuer.token())]
    with pytest.raises(AuthError, match="missing bearer token"):
        auth.authenticate(None, "192.0.2.1", forged)
    assert auth.authenticate("Bearer " + fake_issuer.token(), "192.0.2.1", forged).name == "alice"


def test_groups_from_the_proxy_only_when_the_token_has_none(
    make_auth: Callable[..., Authenticator], fake_issuer: FakeIssuer
) -> None:
    auth = make_auth(trusted_proxies=("10.0.0.0/8",))
    tok = fake_issuer.token(scope="openid", **{"wlcg.groups": None})
    p = auth.authenticate(
        None, "10.0.0.7", [("X-Forwarded-Access-Token", tok), ("X-Forwarded-Groups", "/cms/mlaas")]
    )
    assert p.groups == frozenset({"/cms/mlaas"})
    assert "compute.create" in p.scopes
