"""A host that cannot give the sandbox: the executor runs no job (they stay queued), says
why in the log, and ``/readyz`` answers 503 with the reason and the fix."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from jobs_helpers import fake_settings, permissive, submit_as

from mlaas4hep.api.routes_health import health_router
from mlaas4hep.jobs.datasets import DatasetStore
from mlaas4hep.jobs.executor_local import LocalExecutor
from mlaas4hep.jobs.service import JobService
from mlaas4hep.jobs.states import State
from mlaas4hep.jobs.store import JobStore


def test_no_bwrap_means_no_job_runs_and_not_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no bwrap, no setpriv
    settings = fake_settings(tmp_path, sandbox="auto")
    store = JobStore(settings.db_url)
    service = JobService(store, DatasetStore(store, settings), settings, permissive)
    executor = LocalExecutor(store, settings)
    job, _ = submit_as(service, "alice", {"name": "fake", "fake": {"steps": 1}})
    app = FastAPI()
    app.include_router(health_router(store, executor))
    with caplog.at_level(logging.ERROR):
        executor.start()
    try:
        time.sleep(0.3)  # several poll intervals of the worker
        assert executor.run_once() is None
        assert service.get(job.id, "alice").state is State.QUEUED
        ready = TestClient(app).get("/readyz")
        assert ready.status_code == 503
        sandbox = ready.json()["checks"]["sandbox"]
        assert sandbox.startswith("unavailable: bwrap is not installed")
        assert "apt-get install bubblewrap" in sandbox
        assert "jobs will NOT run (they stay queued)" in caplog.text
    finally:
        executor.stop()
        store.close()


def test_explicit_none_runs_jobs_and_warns_in_the_log_of_each_job(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = fake_settings(tmp_path, sandbox="none")
    store = JobStore(settings.db_url)
    service = JobService(store, DatasetStore(store, settings), settings, permissive)
    executor = LocalExecutor(store, settings)
    job, _ = submit_as(service, "alice", {"name": "fake", "fake": {"steps": 1}})
    with caplog.at_level(logging.WARNING):
        done = executor.run_once()
    assert done is not None
    assert done.state is State.SUCCEEDED, done.reason
    assert "UNSANDBOXED" in caplog.text
    log = (settings.data_dir / "jobs" / job.id / "logs" / "attempt-1.log").read_text()
    assert "WARNING: executor.sandbox is 'none'" in log
    store.close()
