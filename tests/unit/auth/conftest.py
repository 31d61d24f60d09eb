"""Shared fixtures: an in-process fake issuer (keys, discovery, JWKS over a mock transport)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from mlaas4hep.auth.settings import AuthSettings, IssuerSettings
from mlaas4hep.auth.tokens import Authenticator, build_authenticator

ISSUER = "https://issuer.example.org"
AUDIENCE = "https://mlaas.example.org"


class FakeIssuer:
    """Signs tokens and serves discovery + JWKS through ``transport``; counts fetches."""

    def __init__(self, issuer: str = ISSUER) -> None:
        self.issuer = issuer
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.published: list[dict[str, Any]] = [self.jwk("rsa-1"), self.jwk("ec-1")]
        self.meta_issuer = issuer
        self.jwks_uri = issuer + "/jwks"
        self.fetches = 0
        self.down = False

    def jwk(self, kid: str) -> dict[str, Any]:
        if kid.startswith("ec"):
            key = json.loads(ECAlgorithm.to_jwk(self.ec.public_key()))
            return {**key, "kid": kid, "alg": "ES256", "use": "sig"}
        key = json.loads(RSAAlgorithm.to_jwk(self.rsa.public_key()))
        return {**key, "kid": kid, "alg": "RS256", "use": "sig"}

    def claims(self, **over: Any) -> dict[str, Any]:
        now = int(time.time())
        base: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "alice-sub",
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 600,
            "scope": "compute.create compute.read storage.read:/store/user/alice",
            "wlcg.ver": "1.0",
            "wlcg.groups": ["/cms", "/cms/higgs"],
            "preferred_username": "alice",
        }
        base.update(over)
        return {k: v for k, v in base.items() if v is not None}

    def token(
        self, alg: str = "RS256", kid: str | None = None, typ: str = "at+jwt", **over: Any
    ) -> str:
        key = self.rsa if alg == "RS256" else self.ec
        kid = kid or ("rsa-1" if alg == "RS256" else "ec-1")
        return jwt.encode(self.claims(**over), key, algorithm=alg, headers={"kid": kid, "typ": typ})

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            return httpx.Response(503)
        url = str(request.url)
        if url == self.issuer + "/.well-known/openid-configuration":
            return httpx.Response(200, json={"issuer": self.meta_issuer, "jwks_uri": self.jwks_uri})
        if url == self.jwks_uri:
            self.fetches += 1
            return httpx.Response(200, json={"keys": self.published})
        return httpx.Response(404)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)


@pytest.fixture(scope="session")
def issuer_keys() -> FakeIssuer:
    """Key generation is the slow part; tests that mutate the issuer build their own."""
    return FakeIssuer()


@pytest.fixture
def fake_issuer(issuer_keys: FakeIssuer) -> FakeIssuer:
    fresh = FakeIssuer.__new__(FakeIssuer)
    fresh.__dict__.update(issuer_keys.__dict__)
    fresh.published = [issuer_keys.jwk("rsa-1"), issuer_keys.jwk("ec-1")]
    fresh.fetches = 0
    return fresh


def make_settings(**over: Any) -> AuthSettings:
    issuer = IssuerSettings(
        issuer=ISSUER,
        audience=(AUDIENCE,),
        groups={"/cms/mlaas": frozenset({"compute.create", "compute.read"})},
    )
    values: dict[str, Any] = {"issuers": (issuer,), "local_issuer": False}
    values.update(over)
    return AuthSettings(**values)


@pytest.fixture
def make_auth(fake_issuer: FakeIssuer) -> Callable[..., Authenticator]:
    def build(**over: Any) -> Authenticator:
        return build_authenticator(make_settings(**over), transport=fake_issuer.transport)

    return build
