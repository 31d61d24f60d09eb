"""The security suite: every attack of issue 15 replayed against a real ``mlaas4hep serve``.

One real service per session (``secserver``): the job API, the inference routes (V2 and
TFaaS) and the web UI in one process, the embedded local issuer, the real job command
(``mlaas4hep run``) in the real bubblewrap sandbox, two ordinary users ``alice`` and
``bob`` with the default local-user scopes, and an admin. Tests that need other settings
start their own :class:`SecServer`.

Every test ends with :func:`assert_no_leak` on what it saw: the local issuer's private key
bytes (PEM and raw scalar) must never appear in a response, a log or an artifact.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from security_server import SecServer


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.security)


@pytest.fixture(scope="session")
def secserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecServer]:
    """The shared real service (sandbox: bwrap, real job command, two workers)."""
    if shutil.which("bwrap") is None:
        pytest.fail("bwrap is not installed; .ci/run installs bubblewrap")
    server = SecServer(tmp_path_factory.mktemp("secserver") / "data").start()
    server.headers("alice")  # creates the issuer key
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def root_only() -> None:
    """The attacks on the sandbox matter most when the service runs as root (as in CI)."""
    if os.geteuid() != 0:
        pytest.skip("runs as root in CI (the service's most dangerous mode)")
