"""401 reasons say how to get a (new) token, from the issuer the token or service uses."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest

from mlaas4hep.api.deps import _safe_reason
from mlaas4hep.auth.local_issuer import LocalIssuer
from mlaas4hep.auth.settings import AuthSettings
from mlaas4hep.auth.tokens import Authenticator, build_authenticator
from mlaas4hep.errors import AuthError

from .conftest import FakeIssuer, make_settings

MINT = "mlaas4hep token --user NAME --save"
LOGIN = "mlaas4hep login"


def refusal(auth: Authenticator, header: str | None) -> str:
    with pytest.raises(AuthError) as info:
        auth.authenticate(header)
    reason = str(info.value)
    # The API shows short, quote- and URL-free reasons as they are: the advice must survive.
    assert _safe_reason(info.value) == reason, reason
    return reason


def local_auth(data_dir: Path, **over: object) -> tuple[LocalIssuer, Authenticator]:
    local = LocalIssuer(data_dir)
    settings = AuthSettings(local_issuer=True, **over)  # type: ignore[arg-type]
    return local, build_authenticator(settings, local=local)


def expired(local: LocalIssuer) -> str:
    claims = jwt.decode(local.mint("alice"), options={"verify_signature": False})
    claims.update(iat=int(time.time()) - 7200, nbf=int(time.time()) - 7200)
    claims["exp"] = int(time.time()) - 3600
    headers = {"kid": local.kid, "typ": "at+jwt"}
    return jwt.encode(claims, local._key, algorithm="ES256", headers=headers)


def test_missing_token_with_the_local_issuer_says_mint_one(tmp_path: Path) -> None:
    _, auth = local_auth(tmp_path)
    reason = refusal(auth, None)
    assert reason.startswith("missing bearer token")
    assert MINT in reason
    assert LOGIN not in reason


def test_missing_token_with_an_oidc_issuer_says_login(
    make_auth: Callable[..., Authenticator],
) -> None:
    reason = refusal(make_auth(), None)
    assert reason.startswith("missing bearer token")
    assert LOGIN in reason
    assert "mlaas4hep token" not in reason


def test_missing_token_with_both_issuers_names_both(
    tmp_path: Path, fake_issuer: FakeIssuer
) -> None:
    local = LocalIssuer(tmp_path)
    settings = make_settings(local_issuer=True)
    auth = build_authenticator(settings, local=local, transport=fake_issuer.transport)
    reason = refusal(auth, "")
    assert LOGIN in reason
    assert MINT in reason


def test_expired_local_token_says_mint_not_login(tmp_path: Path) -> None:
    local, auth = local_auth(tmp_path)
    reason = refusal(auth, "Bearer " + expired(local))
    assert reason.startswith("token expired")
    assert MINT in reason
    assert LOGIN not in reason


def test_expired_oidc_token_says_login(
    make_auth: Callable[..., Authenticator], fake_issuer: FakeIssuer
) -> None:
    now = int(time.time())
    reason = refusal(make_auth(), "Bearer " + fake_issuer.token(exp=now - 3600, iat=now - 7200))
    assert reason.startswith("token expired")
    assert LOGIN in reason
    assert "mlaas4hep token" not in reason


def test_token_of_another_data_dir_says_which_data_dir_to_mint_with(tmp_path: Path) -> None:
    _, auth = local_auth(tmp_path / "service")
    theirs = LocalIssuer(tmp_path / "elsewhere")
    reason = refusal(auth, "Bearer " + theirs.mint("alice"))
    assert "unknown key" in reason
    assert "another --data-dir" in reason
    assert f"{MINT} --data-dir" in reason
    for secret in (theirs.kid, *theirs.jwks()["keys"][0].values()):
        assert str(secret) not in reason  # no key material, not even public


def test_unknown_kid_of_an_oidc_issuer_says_login(
    make_auth: Callable[..., Authenticator], fake_issuer: FakeIssuer
) -> None:
    reason = refusal(make_auth(), "Bearer " + fake_issuer.token(kid="rogue-kid"))
    assert "unknown key" in reason
    assert LOGIN in reason
    assert "rogue-kid" not in reason


def test_untrusted_issuer_says_how_to_get_a_trusted_token(
    tmp_path: Path, fake_issuer: FakeIssuer
) -> None:
    _, auth = local_auth(tmp_path)
    reason = refusal(auth, "Bearer " + fake_issuer.token())
    assert reason.startswith("token issuer is not trusted")
    assert MINT in reason
