from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from mlaas4hep.auth.tokens import Authenticator, bearer_token
from mlaas4hep.errors import AuthError

from .conftest import AUDIENCE, ISSUER, FakeIssuer, make_settings


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    head = b64(json.dumps(header).encode())
    body = b64(json.dumps(claims).encode())
    return f"{head}.{body}.{b64(signature)}"


def test_valid_token_gives_principal(
    make_auth: Callable[..., Authenticator], fake_issuer: FakeIssuer
) -> None:
    p = make_auth().authenticate("Bearer " + fake_issuer.token())
    assert (p.issuer, p.subject, p.name) == (ISSUER, "alice-sub", "alice")
    assert p.key == f"{ISSUER}#alice-sub"
    assert "storage.read:/store/user/alice" in p.scopes
    assert p.groups == frozenset({"/cms", "/cms/higgs"})
    assert not p.is_admin


def test_es256_is_accepted(
    make_auth: Callable[..., Authenticator], fake_issuer: FakeIssuer
) -> None:
    assert make_auth().validate(fake_issuer.token("ES256")).subject == "alice-sub"


def test_groups_mapping_and_admin(
    make_auth: Callable[..., Authenticator], fake_issuer: FakeIssuer
) -> None:
    tok = fake_issuer.token(scope="openid", **{"wlcg.groups": ["/cms/mlaas", "/mlaas/admin"]})
    p = make_auth().validate(tok)
    assert p.scopes == frozenset({"compute.create", "compute.read"})
    assert p.is_admin


def now() -> int:
    return int(time.time())


def forged(fake: FakeIssuer, kind: str) -> str:
    """Tokens for every rejection case (the keys are the trusted issuer's unless noted)."""
    c = fake.claims()
    pem = fake.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if kind == "expired":
        return fake.token(exp=now() - 61 - 5, iat=now() - 700)
    if kind == "not_yet_valid":
        return fake.token(nbf=now() + 120)
    if kind == "iat_in_future":
        return fake.token(iat=now() + 120)
    if kind == "wrong_aud":
        return fake.token(aud="https://other.example.org")
    if kind == "wrong_iss_trailing_slash":
        return fake.token(iss=ISSUER + "/")
    if kind == "untrusted_iss":
        return fake.token(iss="https://evil.example.org")
    if kind == "alg_none":
        return compact({"alg": "none", "kid": "rsa-1"}, c)
    if kind == "hs256_with_public_key":
        head = b64(json.dumps({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}).encode())
        body = b64(json.dumps(c).encode())
        sig = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{b64(sig)}"
    if kind == "tampered":
        head, _, sig = fake.token().split(".")
        evil = b64(json.dumps({**c, "sub": "admin", "scope": "compute.modify"}).encode())
        return f"{head}.{evil}.{sig}"
    if kind == "unknown_kid":
        return fake.token(kid="rogue-kid")
    if kind == "wrong_key_type":
        return fake.token("RS256", kid="ec-1")
    if kind == "crit":
        import jwt

        return jwt.encode(c, fake.rsa, algorithm="RS256", headers={"kid": "rsa-1", "crit": ["exp"]})
    if kind == "no_kid":
        import jwt

        return jwt.encode(c, fake.rsa, algorithm="RS256")
    if kind == "missing_exp":
        return fake.token(exp=None)
    if kind == "missing_sub":
        return fake.token(sub=None)
    if kind == "wlcg_ver_2":
        return fake.token(**{"wlcg.ver": "2.0"})
    if kind == "oversized":
        return fake.token(pad="x" * 9000)
    if kind == "malformed":
        return "not.a.jwt"
    raise AssertionError(kind)


# kind -> the reason the client is told (fixed phrases, nothing from the token).
CASES = {
    "expired": "token expired",
    "not_yet_valid": "not yet valid",
    "iat_in_future": "not yet valid",
    "wrong_aud": "audience",
    "wrong_iss_trailing_slash": "issuer is not trusted",
    "untrusted_iss": "issuer is not trusted",
    "alg_none": "algorithm not allowed",
    "hs256_with_public_key": "algorithm not allowed",
    "tampered": "signature is invalid",
    "unknown_kid": "unknown key",
    "wrong_key_type": "does not match the signing key",
    "crit": "critical header",
    "no_kid": "no key id",
    "missing_exp": "required claim",
    "missing_sub": "required claim",
    "wlcg_ver_2": "wlcg.ver",
    "oversized": "too large",
    "malformed": "malformed",
}


@pytest.mark.parametrize(("kind", "reason"), CASES.items())
def test_rejections(
    kind: str, reason: str, make_auth: Callable[..., Authenticator], fake_issuer: FakeIssuer
) -> None:
    token = forged(fake_issuer, kind)
    with pytest.raises(AuthError, match=re.escape(reason)) as info:
        make_auth().authenticate("Bearer " + token)
    told = str(info.value)
    assert token not in told
    assert "alice" not in told
    assert "admin" not in told


def test_leeway_accepts_small_clock_skew(
    make_auth: Callable[..., Authenticator], fake_issuer: FakeIssuer
) -> None:
    auth = make_auth()
    auth.validate(fake_issuer.token(exp=now() - 30, iat=now() - 600))
    auth.validate(fake_issuer.token(nbf=now() + 30, iat=now() + 30))


@pytest.mark.parametrize("ver", ["1.0", "1.2", "1"])
def test_wlcg_ver_major_one(
    ver: str, make_auth: Callable[..., Authenticator], fake_issuer: FakeIssuer
) -> None:
    make_auth().validate(fake_issuer.token(**{"wlcg.ver": ver}))


def test_tokens_are_never_logged(
    make_auth: Callable[..., Authenticator],
    fake_issuer: FakeIssuer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    good, bad = fake_issuer.token(), forged(fake_issuer, "unknown_kid")
    auth = make_auth()
    auth.validate(good)
    with pytest.raises(AuthError):
        auth.validate(bad)
    for secret in (good, bad, good.split(".")[1], bad.split(".")[2]):
        assert secret not in caplog.text


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwdw==", "Bearer a b", "Token abc"]
)
def test_bearer_header_parsing(header: str | None) -> None:
    with pytest.raises(AuthError):
        bearer_token(header)


def test_bearer_scheme_is_case_insensitive() -> None:
    assert bearer_token("bearer abc.def.ghi") == "abc.def.ghi"


def test_size_cap_is_configurable(
    make_auth: Callable[..., Authenticator], fake_issuer: FakeIssuer
) -> None:
    token = fake_issuer.token()
    with pytest.raises(AuthError, match="too large"):
        make_auth(max_token_bytes=len(token) - 1).validate(token)


def test_audience_list_accepts_any(
    make_auth: Callable[..., Authenticator], fake_issuer: FakeIssuer
) -> None:
    make_auth().validate(fake_issuer.token(aud=["https://x", AUDIENCE]))


def test_no_issuer_rejects_everything(fake_issuer: FakeIssuer) -> None:
    from mlaas4hep.auth.tokens import build_authenticator

    auth = build_authenticator(make_settings(issuers=()), transport=fake_issuer.transport)
    with pytest.raises(AuthError, match="not trusted"):
        auth.validate(fake_issuer.token())
