"""Helpers of the CLI tests: the real app (job API, executor running the fake job,
inference routes) answering the CLI's client through an httpx transport."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).parents[1] / "api"))

from api_helpers import host_settings
from jobs_helpers import permissive

from mlaas4hep.api.app import create_app
from mlaas4hep.auth.principal import Principal
from mlaas4hep.errors import AuthError

ISS = "https://issuer.test"
_JOBS = frozenset({"compute.create", "compute.read", "compute.cancel", "compute.modify"})
_MODELS = frozenset({"storage.read:/models", "storage.create:/models", "storage.modify:/models"})
_DATA = frozenset({"storage.read:/store"})  # the remote inputs of the submit test
ALICE = Principal(ISS, "alice", scopes=_JOBS | _MODELS | _DATA, name="alice")
PRINCIPALS = {"token-alice": ALICE}


class Tokens:
    """A test authenticator: fixed bearer tokens -> principals."""

    def authenticate(
        self,
        authorization_header: str | None,
        peer: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> Principal:
        token = (authorization_header or "").removeprefix("Bearer ").strip()
        if token not in PRINCIPALS:
            raise AuthError("token is not valid")
        return PRINCIPALS[token]


def publish_sample_model(tmp_path: Path, name: str = "tiny") -> None:
    """A small model in the repository the app will serve, owned by alice."""
    from mlaas4hep.jobs.deploy import model_repository
    from mlaas4hep.serve.ownership import ModelOwners
    from mlaas4hep.serve.samples import write_sample_model

    repository = model_repository(host_settings(tmp_path))
    write_sample_model(tmp_path / "model-src" / "v", (4, 8, 1), seed=1)
    ModelOwners(repository.root).claim(name, ALICE.key, "alice")
    repository.publish(name, tmp_path / "model-src", PurePath("v"))


@contextmanager
def cli_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The app, and every CLI command's client pointed at it (as alice)."""
    from mlaas4hep.client import Client

    app = create_app(
        host_settings(tmp_path), authenticator=Tokens(), spec_validator=permissive,
        with_inference=True, with_ui=False,
    )  # fmt: skip
    with TestClient(app, raise_server_exceptions=False) as tc:
        transport = httpx.MockTransport(lambda request: _forward(tc, request))

        class BoundClient(Client):
            def __init__(self, *args: Any, timeout: float = 30.0, **kw: Any) -> None:
                super().__init__("http://test", "token-alice", timeout=timeout, transport=transport)

        monkeypatch.setattr("mlaas4hep.cli.client.Client", BoundClient)
        yield tc


def _forward(tc: TestClient, request: httpx.Request) -> httpx.Response:
    r = tc.request(
        request.method,
        request.url.raw_path.decode(),
        content=request.read(),
        headers=dict(request.headers),
    )
    return httpx.Response(r.status_code, headers=r.headers, content=r.content)
