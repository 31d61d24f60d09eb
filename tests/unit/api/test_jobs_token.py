"""A job that reads remote data keeps its submitter's token for the storage; others do not."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from api_helpers import auth
from fastapi.testclient import TestClient

from mlaas4hep.jobs.credentials import credentials_dir, token_env
from mlaas4hep.jobs.layout import job_paths

JOBS = "/api/v1/jobs"


def submit(client: TestClient, files: list[str]) -> str:
    spec: dict[str, Any] = {"name": "remote", "data": {"datasets": [{"name": "a", "files": files}]}}
    r = client.post(JOBS, json=spec, headers=auth("alice"))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_remote_job_gets_the_token(idle: TestClient, tmp_path: Path) -> None:
    job_id = submit(idle, ["root://eos.example.org//data/a.root"])
    paths = job_paths(tmp_path / "data", job_id)
    token = credentials_dir(paths) / "bearer_token"
    assert token.read_text() == "token-alice"  # the caller's bearer token, as sent
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert token_env(paths) == {"BEARER_TOKEN_FILE": str(token)}
    assert "token-alice" not in (paths.spec).read_text()


def test_local_job_gets_no_token(idle: TestClient, tmp_path: Path) -> None:
    job_id = submit(idle, ["/data/a.root"])
    paths = job_paths(tmp_path / "data", job_id)
    assert paths.spec.is_file()
    assert not credentials_dir(paths).exists()
    assert token_env(paths) == {}
