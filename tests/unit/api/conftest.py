from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from api_helpers import make_client
from fastapi.testclient import TestClient


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    """An app with the executor running the fake job."""
    with make_client(tmp_path) as c:
        yield c


@pytest.fixture
def idle(tmp_path: Path) -> Iterator[TestClient]:
    """An app whose jobs stay queued (no executor)."""
    with make_client(tmp_path, run_executor=False) as c:
        yield c
