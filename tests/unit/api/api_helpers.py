"""Helpers of the API tests: a fixed-token authenticator and an app factory."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).parents[1] / "jobs"))

from jobs_helpers import fake_settings, permissive

from mlaas4hep.api.app import create_app
from mlaas4hep.auth.principal import Principal
from mlaas4hep.config import Settings
from mlaas4hep.errors import AuthError

ALL = frozenset({"compute.create", "compute.read", "compute.cancel", "compute.modify"})
ISS = "https://issuer.test"
PRINCIPALS = {
    "token-alice": Principal(ISS, "alice", scopes=ALL | {"storage.read:/data"}, name="alice"),
    "token-bob": Principal(ISS, "bob", scopes=ALL, name="bob"),
    "token-reader": Principal(ISS, "alice", scopes=frozenset({"compute.read"})),
    "token-admin": Principal(ISS, "root", scopes=ALL, is_admin=True),
}


class FixedTokens:
    """A test authenticator: fixed bearer tokens -> principals."""

    def authenticate(
        self,
        authorization_header: str | None,
        peer: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> Principal:
        if not authorization_header:
            raise AuthError("no bearer token")
        token = authorization_header.removeprefix("Bearer ").strip()
        if token not in PRINCIPALS:
            raise AuthError("token is not valid")
        return PRINCIPALS[token]


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer token-{user}"}


#: The names test clients send as Host (TestClient's default, the CLI tests' base URL).
TEST_HOSTS = ["localhost", "testserver", "test"]


def host_settings(tmp_path: Path) -> Settings:
    """:func:`fake_settings` answering the test clients' host names."""
    return fake_settings(tmp_path).model_copy(update={"allowed_hosts": TEST_HOSTS})


def make_client(tmp_path: Path, *, run_executor: bool = True, **kw: Any) -> TestClient:
    settings = host_settings(tmp_path)
    if "uploads" in kw:
        settings = settings.model_copy(
            update={"uploads": settings.uploads.model_copy(update=kw.pop("uploads"))}
        )
    kw.setdefault("spec_validator", permissive)
    app = create_app(settings, authenticator=FixedTokens(), run_executor=run_executor, **kw)
    return TestClient(app, raise_server_exceptions=False)
