"""The job service as deployed: a real `mlaas4hep serve` process, the real local token
issuer, the CLI client, SQLite and PostgreSQL; and the kill -9 crash test."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml
from jobs_server import JobServer
from pg import postgres_server

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "jobs"))
from jobs_helpers import pipeline_doc

from mlaas4hep.cli import main
from mlaas4hep.jobs.attempt import JOB_MARKER

pytestmark = pytest.mark.slow
TERMINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobServer]:
    db = None
    if request.param == "postgresql":
        db = request.getfixturevalue("pg_url")
        _reset(db)
    srv = JobServer(tmp_path / "data", database_url=db).start()
    yield srv
    srv.stop()


def _reset(url: str) -> None:
    from mlaas4hep.jobs.store import JobStore

    store = JobStore(url)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM jobs")
        conn.exec_driver_sql("DELETE FROM datasets")
    store.close()


def cli(server: JobServer, *args: str, user: str = "alice") -> int:
    return main([args[0], *args[1:], "--url", server.url, "--token", server.token(user)])


def api(server: JobServer, user: str = "alice") -> httpx.Client:
    headers = {"Authorization": f"Bearer {server.token(user)}"}
    return httpx.Client(base_url=f"{server.url}/api/v1", headers=headers, timeout=30)


def write_spec(tmp_path: Path, name: str = "fake", **fake: Any) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(pipeline_doc(name, **fake)))
    return path


def wait_all(client: httpx.Client, ids: list[str], timeout: float = 90) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = [client.get(f"/jobs/{i}").json() for i in ids]
        if all(j["state"] in TERMINAL for j in jobs):
            return jobs
        time.sleep(0.2)
    raise AssertionError(f"jobs did not finish: {[(j['id'], j['state']) for j in jobs]}")


def marked_processes(ids: set[str]) -> list[int]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(JOB_MARKER) in ids and proc.status() != "zombie":
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def test_cli_round_trip(
    server: JobServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(tmp_path, steps=3, sleep=0.1)
    model = tmp_path / "mymodel.py"
    model.write_text("# a user model module\n")
    assert cli(server, "submit", str(spec), "--file", str(model), "--wait", "--poll", "0.2") == 0
    out = capsys.readouterr().out
    job_id = out.split("submitted job ")[1].split()[0]
    assert f"job {job_id} succeeded" in out
    assert cli(server, "jobs") == 0
    assert job_id in capsys.readouterr().out
    assert cli(server, "logs", job_id) == 0
    assert "fake job done" in capsys.readouterr().out
    target = tmp_path / "out"
    assert cli(server, "download", job_id, "--out", str(target)) == 0
    assert (target / "model.onnx").read_bytes() == b"onnx"
    assert (target / "plots" / "roc.png").exists()
    assert cli(server, "download", job_id, "--out", str(target), "--bundle") == 0
    assert (target / "bundle.tar.gz").stat().st_size > 0
    # Bob sees nothing of Alice's job: the CLI prints the 404 and exits 2.
    assert cli(server, "logs", job_id, user="bob") == 2
    assert "no job" in capsys.readouterr().err


def test_cancel_from_the_cli_leaves_no_process(
    server: JobServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(tmp_path, steps=600, sleep=0.1, children=2, escape=True)
    assert cli(server, "submit", str(spec)) == 0
    job_id = capsys.readouterr().out.split("submitted job ")[1].split()[0]
    with api(server) as client:
        deadline = time.monotonic() + 30
        while client.get(f"/jobs/{job_id}").json()["state"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        while len(marked_processes({job_id})) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert cli(server, "cancel", job_id) == 0
        (job,) = wait_all(client, [job_id])
    assert job["state"] == "cancelled"
    assert marked_processes({job_id}) == []


@pytest.mark.parametrize(
    ("backend", "sandbox"),
    [("sqlite", "auto"), ("sqlite", "none"), ("postgresql", "auto")],
)
def test_kill9_and_restart_loses_nothing(
    backend: str, sandbox: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    db = None
    if backend == "postgresql":
        db = request.getfixturevalue("pg_url")
        _reset(db)
    srv = JobServer(tmp_path / "data", database_url=db, sandbox=sandbox).start()
    try:
        with api(srv) as client:
            ids = []
            for i in range(6):
                doc = pipeline_doc(f"crash{i}", steps=15, sleep=0.1, children=1)
                r = client.post("/jobs", json=doc)
                assert r.status_code == 201, r.text
                ids.append(r.json()["id"])
            deadline = time.monotonic() + 30
            while sum(client.get(f"/jobs/{i}").json()["state"] == "running" for i in ids) < 2:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            time.sleep(0.5)  # let the running ones write half of their output
        srv.kill9()
        srv.start()  # same data dir, same database
        with api(srv) as client:
            jobs = wait_all(client, ids)
        assert len(jobs) == 6  # none lost
        for job in jobs:
            assert job["state"] == "succeeded", job
        assert any(job["attempt"] == 2 for job in jobs)  # the interrupted ones were requeued
        assert marked_processes(set(ids)) == []  # no orphan survived the crash
        root = tmp_path / "data" / "jobs"
        assert list(root.glob("*/attempt-*.partial")) == []  # no half-written artifacts
        for job in jobs:
            assert (root / job["id"] / f"attempt-{job['attempt']}" / "model.onnx").exists()
    finally:
        srv.stop()
