"""The service commands of the CLI as a shell runs them, against a real `mlaas4hep serve`
and its local token issuer: JSON that parses, and pipes closed early (``| head -1``)
that end quietly."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from jobs_server import JobServer

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "jobs"))
from jobs_helpers import pipeline_doc

from mlaas4hep.config import MLAAS4HEP_ARGV

pytestmark = pytest.mark.slow
CLI = shlex.join(MLAAS4HEP_ARGV)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[JobServer]:
    srv = JobServer(tmp_path / "data").start()
    yield srv
    srv.stop()


def _shell(server: JobServer, command: str) -> subprocess.CompletedProcess[str]:
    """*command* in bash with pipefail: the status is the CLI's even before ``| head``."""
    env = {**os.environ, "MLAAS4HEP_URL": server.url, "MLAAS4HEP_TOKEN": server.token("alice")}
    return subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command}"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _submit(server: JobServer, **fake: object) -> str:
    """Queue the fake job over the API (its inputs are placeholders, never read)."""
    r = httpx.post(
        f"{server.url}/api/v1/jobs",
        content=yaml.safe_dump(pipeline_doc("cli", **fake)),
        headers={"Authorization": f"Bearer {server.token('alice')}",
                 "Content-Type": "application/yaml"},
        timeout=30,
    )  # fmt: skip
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_json_output_and_early_closed_pipes(server: JobServer) -> None:
    job_id = _submit(server, steps=2, spam=2_000_000)
    final = _shell(server, f"{CLI} wait {job_id} --poll 0.2 --json")
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["state"] == "succeeded"
    status = _shell(server, f"{CLI} status {job_id} --json")
    assert json.loads(status.stdout)["progress"]["epochs"] == 2
    assert json.loads(_shell(server, f"{CLI} models list --json").stdout) == []
    for command in (f"logs {job_id}", "jobs --json", f"status {job_id} --json"):
        run = _shell(server, f"{CLI} {command} | head -1")
        assert run.returncode == 0, (command, run.stderr)
        assert run.stderr == "", command
        assert run.stdout.count("\n") == 1
