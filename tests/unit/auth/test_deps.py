"""The FastAPI dependency, through a tiny app (in-process ASGI client)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from mlaas4hep.api.deps import local_issuer_router, principal_dependency, require_scope
from mlaas4hep.auth.local_issuer import LocalIssuer
from mlaas4hep.auth.principal import Principal
from mlaas4hep.auth.settings import AuthSettings
from mlaas4hep.auth.tokens import build_authenticator


@pytest.fixture
def local(tmp_path: Path) -> LocalIssuer:
    return LocalIssuer(tmp_path)


@pytest.fixture
def client(local: LocalIssuer) -> Client:
    auth = build_authenticator(AuthSettings(local_issuer=True), local=local)
    principal = principal_dependency(auth)
    app = FastAPI()
    app.include_router(local_issuer_router(local))

    @app.get("/me")
    def me(caller: Principal = Depends(principal)) -> dict[str, str]:  # noqa: B008
        return {"key": caller.key}

    @app.post("/jobs")
    def submit(
        caller: Principal = Depends(require_scope(principal, "compute.create")),  # noqa: B008
    ) -> dict[str, str]:
        return {"owner": caller.key}

    return Client(app)


class Client:
    """A sync wrapper around httpx's ASGI transport (starlette's Client warns)."""

    def __init__(self, app: FastAPI) -> None:
        self.transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 50000))

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            async with httpx.AsyncClient(transport=self.transport, base_url="http://t") as c:
                return await c.request(method, url, **kw)

        return asyncio.run(go())

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("POST", url, **kw)


def test_valid_token(client: Client, local: LocalIssuer) -> None:
    tok = local.mint("alice", ["compute.read"])
    r = client.get("/me", headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 200
    assert r.json() == {"key": f"{local.issuer}#alice"}


def test_missing_token_is_401_with_challenge(client: Client) -> None:
    r = client.get("/me")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="mlaas4hep"'


def test_bad_token_is_401_invalid_token(client: Client, local: LocalIssuer) -> None:
    tok = local.mint("alice", ["compute.read"])
    r = client.get("/me", headers={"Authorization": f"Bearer {tok}x"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith(
        'Bearer realm="mlaas4hep", error="invalid_token"'
    )
    assert tok not in r.text
    assert "alice" not in r.text


def test_missing_scope_is_403_naming_it(client: Client, local: LocalIssuer) -> None:
    tok = local.mint("alice", ["compute.read"])
    r = client.post("/jobs", headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 403
    assert "compute.create" in r.json()["detail"]
    tok = local.mint("alice", ["compute.create"])
    assert client.post("/jobs", headers={"Authorization": f"Bearer {tok}"}).status_code == 200


def test_local_issuer_documents_are_published(client: Client, local: LocalIssuer) -> None:
    meta = client.get("/mlaas4hep/local-issuer/.well-known/openid-configuration").json()
    assert meta["issuer"] == local.issuer
    assert client.get("/mlaas4hep/local-issuer/jwks").json() == local.jwks()


def test_unreachable_issuer_is_503_not_401(tmp_path: Path) -> None:
    from mlaas4hep.auth.settings import IssuerSettings

    down = httpx.MockTransport(lambda request: httpx.Response(502))
    issuer = IssuerSettings(issuer="https://iam.example.org", audience=("x",))
    auth = build_authenticator(AuthSettings(issuers=(issuer,)), transport=down)
    app = FastAPI()

    @app.get("/me")
    def me(caller: Principal = Depends(principal_dependency(auth))) -> str:  # noqa: B008
        return caller.key

    forged = LocalIssuer(tmp_path, issuer="https://iam.example.org", audience="x").mint("a")
    r = Client(app).get("/me", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 503
    assert r.headers["retry-after"] == "5"  # the back-off before the next fetch
    assert "iam.example.org" not in r.text
    again = Client(app).get("/me", headers={"Authorization": f"Bearer {forged}"})
    assert again.status_code == 503  # answered at once, no second fetch inside the back-off
