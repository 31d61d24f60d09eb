"""Only access tokens: the JOSE ``typ`` allow-list (RFC 9068) and the ID-token rule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jwt
import pytest

from mlaas4hep.auth.local_issuer import LocalIssuer
from mlaas4hep.auth.settings import AuthSettings, IssuerSettings
from mlaas4hep.auth.tokens import Authenticator, build_authenticator
from mlaas4hep.errors import AuthError, IssuerUnavailable, SpecError
from mlaas4hep.http_status import http_status

from .conftest import AUDIENCE, ISSUER, FakeIssuer


def _authenticator(fake: FakeIssuer, token_types: tuple[str, ...]) -> Authenticator:
    issuer = IssuerSettings(issuer=ISSUER, audience=(AUDIENCE,), token_types=token_types)
    settings = AuthSettings(issuers=(issuer,), local_issuer=False)
    return build_authenticator(settings, transport=fake.transport)


def _untyped(fake: FakeIssuer, **claims: Any) -> str:
    return jwt.encode(
        fake.claims(**claims), fake.rsa, algorithm="RS256", headers={"kid": "rsa-1", "typ": None}
    )


@pytest.mark.parametrize(
    ("typ", "accepted"),
    [
        ("at+jwt", True),
        ("AT+JWT", True),
        ("application/at+jwt", True),
        ("JWT", False),
        ("dpop+jwt", False),
        ("", False),
    ],
)
def test_default_accepts_only_at_jwt(fake_issuer: FakeIssuer, typ: str, accepted: bool) -> None:
    auth = _authenticator(fake_issuer, ("at+jwt",))
    token = fake_issuer.token(typ=typ) if typ else _untyped(fake_issuer)
    if accepted:
        assert auth.validate(token).subject == "alice-sub"
    else:
        with pytest.raises(AuthError, match="not an access token"):
            auth.validate(token)


def test_allow_list_for_providers_that_send_jwt(fake_issuer: FakeIssuer) -> None:
    auth = _authenticator(fake_issuer, ("at+jwt", "JWT", ""))
    assert auth.validate(fake_issuer.token(typ="JWT")).subject == "alice-sub"
    assert auth.validate(_untyped(fake_issuer)).subject == "alice-sub"
    with pytest.raises(AuthError, match="not an access token"):
        auth.validate(fake_issuer.token(typ="secevent+jwt"))


ID_TOKEN_SHAPES: dict[str, dict[str, Any]] = {
    "nonce": {"nonce": "n-0S6_WzA2Mj"},
    "at_hash": {"at_hash": "77QmUPtjPfzWtF2AnpK9RQ"},
    "c_hash": {"c_hash": "LDktKdoQak3Pk0cnXxCltA"},
    "s_hash": {"s_hash": "x"},
    "auth_time-without-scope": {"auth_time": 1_700_000_000, "scope": None},
}


@pytest.mark.parametrize("shape", sorted(ID_TOKEN_SHAPES))
@pytest.mark.parametrize("typ", ["at+jwt", "JWT"])
def test_id_tokens_are_refused(fake_issuer: FakeIssuer, shape: str, typ: str) -> None:
    auth = _authenticator(fake_issuer, ("at+jwt", "JWT"))
    with pytest.raises(AuthError, match="ID token"):
        auth.validate(fake_issuer.token(typ=typ, **ID_TOKEN_SHAPES[shape]))


def test_auth_time_with_scope_is_an_access_token(fake_issuer: FakeIssuer) -> None:
    auth = _authenticator(fake_issuer, ("at+jwt",))
    assert auth.validate(fake_issuer.token(auth_time=1_700_000_000)).subject == "alice-sub"


def test_local_issuer_mints_typed_access_tokens(tmp_path: Any) -> None:
    token = LocalIssuer(tmp_path).mint("alice", ("compute.read",))
    assert jwt.get_unverified_header(token)["typ"] == "at+jwt"


def test_token_types_settings() -> None:
    raw = {"issuers": [{"issuer": ISSUER, "audience": AUDIENCE, "token_types": ["at+jwt", "JWT"]}]}
    assert AuthSettings.from_mapping(raw).issuers[0].token_types == ("at+jwt", "JWT")
    default = AuthSettings.from_mapping({"issuers": [{"issuer": ISSUER, "audience": AUDIENCE}]})
    assert default.issuers[0].token_types == ("at+jwt",)
    with pytest.raises(SpecError, match="token_types"):
        AuthSettings.from_mapping(
            {"issuers": [{"issuer": ISSUER, "audience": AUDIENCE, "token_types": "JWT"}]}
        )
    with pytest.raises(SpecError, match="accepts no token type"):
        IssuerSettings(issuer=ISSUER, audience=(AUDIENCE,), token_types=())
    with pytest.raises(SpecError, match="jwks_unknown_kid_ttl_s"):
        AuthSettings(jwks_min_refresh_s=10, jwks_unknown_kid_ttl_s=1)


def test_outage_is_503_with_retry_after_and_no_url(
    fake_issuer: FakeIssuer, make_auth: Callable[..., Authenticator]
) -> None:
    fake_issuer.down = True
    with pytest.raises(IssuerUnavailable) as info:
        make_auth().validate(fake_issuer.token())
    answer = http_status(info.value)
    assert answer.status == 503
    assert answer.headers == {"Retry-After": "5"}
    assert "http" not in str(info.value)


@pytest.mark.parametrize("segment", [0, 1])
def test_deeply_nested_token_json_is_a_401_not_a_500(
    fake_issuer: FakeIssuer, make_auth: Callable[..., Authenticator], segment: int
) -> None:
    import base64

    deep = base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).rstrip(b"=").decode()
    parts = fake_issuer.token().split(".")
    parts[segment] = deep
    with pytest.raises(AuthError, match="malformed token"):
        make_auth(max_token_bytes=65536).validate(".".join(parts))
