"""Helpers for the inference integration tests: a real uvicorn server on 127.0.0.1.

Imported by the ``test_inference_*.py`` modules (``from conftest_serve import ...``).
The authenticator accepts two fixed bearer tokens (alice, bob); the real token
validation is tested by the auth suite, here we test that the routes use it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from mlaas4hep.auth.principal import Principal
from mlaas4hep.errors import AuthError
from mlaas4hep.loopback import free_port
from mlaas4hep.serve.app import create_inference_app
from mlaas4hep.serve.dataplane import Authorize, allow_all
from mlaas4hep.serve.settings import InferenceSettings

TOKENS = {"alice-token": "alice", "bob-token": "bob"}
# tritonclient adds headers to the dict it is given: pass copies ({**ALICE}).
ALICE = {"Authorization": "Bearer alice-token"}
BOB = {"Authorization": "Bearer bob-token"}


def authenticate(header: str | None, peer: str | None) -> Principal:
    """Accept ``Bearer alice-token`` / ``Bearer bob-token``; anything else is a 401."""
    scheme, _, token = (header or "").partition(" ")
    user = TOKENS.get(token) if scheme.lower() == "bearer" else None
    if user is None:
        msg = "missing or invalid bearer token"
        raise AuthError(msg)
    return Principal(issuer="https://test.invalid", subject=user, name=user)


@contextmanager
def run_server(app: FastAPI) -> Iterator[str]:
    """Serve *app* with uvicorn in a thread; yield its base URL; stop it afterwards."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", ws="none", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            msg = "the inference server did not start"
            raise RuntimeError(msg)
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def inference_server(
    repository: Path, authorize: Authorize = allow_all, **settings: object
) -> Iterator[str]:
    """Start the inference app over *repository*; yield its base URL."""
    options: dict[str, object] = {"poll_interval_s": 0.2, **settings}
    app = create_inference_app(
        InferenceSettings(repository=repository, **options),  # type: ignore[arg-type]
        authenticate=authenticate,
        authorize=authorize,
    )
    with run_server(app) as url:
        yield url


def own(repository: Path, name: str, user: str = "alice", share: str = "") -> None:
    """Record *user* (a test principal) as owner of *name*, as a first upload would
    (*share*: its sharing, e.g. ``"*:read"`` for a model everyone may use)."""
    from mlaas4hep.serve.ownership import ModelOwners, parse_sharing

    owners = ModelOwners(repository)
    owners.claim(name, f"https://test.invalid#{user}", user, parse_sharing(share))
