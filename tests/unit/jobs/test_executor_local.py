"""The local executor with a real (fake) job process: outcomes, limits, cancel, sandbox."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from jobs_helpers import fake_settings, permissive, submit_as

from mlaas4hep.config import Settings
from mlaas4hep.jobs.attempt import JOB_MARKER
from mlaas4hep.jobs.datasets import DatasetStore
from mlaas4hep.jobs.executor_local import LocalExecutor
from mlaas4hep.jobs.layout import job_paths
from mlaas4hep.jobs.service import JobService
from mlaas4hep.jobs.states import State
from mlaas4hep.jobs.store import JobRecord, JobStore

HAS_BWRAP = shutil.which("bwrap") is not None


def make(settings: Settings) -> tuple[JobService, LocalExecutor]:
    store = JobStore(settings.db_url)
    service = JobService(store, DatasetStore(store, settings), settings, permissive)
    return service, LocalExecutor(store, settings)


def submit(service: JobService, **fake: Any) -> JobRecord:
    job, _ = submit_as(service, "alice", {"name": "fake", "fake": fake})
    return job


def job_processes(job_id: str) -> list[int]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(JOB_MARKER) == job_id and proc.status() != "zombie":
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def test_success_commits_the_attempt_dir_and_records_progress(settings: Settings) -> None:
    service, executor = make(settings)
    job = submit(service, steps=3)
    done = executor.run_once()
    assert done is not None
    assert done.state is State.SUCCEEDED, done.reason
    paths = job_paths(settings.data_dir, job.id)
    assert done.result_dir == "attempt-1"
    assert (paths.committed(1) / "model.onnx").read_bytes() == b"onnx"
    assert not paths.partial(1).exists()
    names = [a.name for a in service.artifacts(done)]
    assert {"model.onnx", "metrics.json", "plots/roc.png", "bundle.tar.gz"} <= set(names)
    log = paths.log(1).read_text()
    assert "fake job starting" in log
    assert '"epoch"' not in log  # progress lines go to the store, not the log


def test_user_error_fails_with_the_one_line_message(settings: Settings) -> None:
    service, executor = make(settings)
    job = submit(service, exit=2, message="spec error: data.tree 'Evnts' not found")
    done = executor.run_once()
    assert done is not None
    assert done.state is State.FAILED
    assert done.reason == "spec error: data.tree 'Evnts' not found"
    paths = job_paths(settings.data_dir, job.id)
    assert not paths.partial(1).exists()  # no half-written artifacts
    assert "data.tree" in paths.log(1).read_text()  # logs kept


def test_crash_fails_with_the_status_and_keeps_the_log(settings: Settings) -> None:
    service, executor = make(settings)
    submit(service, exit=7, message="Segmentation fault (core dumped)")
    done = executor.run_once()
    assert done is not None
    assert done.state is State.FAILED
    assert done.reason is not None
    assert "status 7" in done.reason
    assert "Segmentation fault" in done.reason


def test_memory_limit_kills_the_tree_with_a_clear_reason(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    settings = settings.model_copy(
        update={"limits": settings.limits.model_copy(update={"memory_bytes": 64 * 1024**2})}
    )
    service, executor = make(settings)
    job = submit(service, mem_mb=200, steps=50, sleep=0.1)
    done = executor.run_once()
    assert done is not None
    assert done.state is State.FAILED
    assert done.reason is not None
    assert done.reason.startswith("memory limit 64 MiB exceeded")
    assert job_processes(job.id) == []


def test_wall_clock_limit(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    settings = settings.model_copy(
        update={"limits": settings.limits.model_copy(update={"wall_clock_s": 1.0})}
    )
    service, executor = make(settings)
    submit(service, steps=100, sleep=0.1)
    done = executor.run_once()
    assert done is not None
    assert done.reason == "wall-clock limit 1 s exceeded"


def test_file_size_limit(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    limits = settings.limits.model_copy(update={"file_size_bytes": 1024 * 1024})
    settings = settings.model_copy(update={"limits": limits})
    service, executor = make(settings)
    submit(service, write_big=4 * 1024 * 1024)
    done = executor.run_once()
    assert done is not None
    assert done.state is State.FAILED
    assert done.reason is not None
    assert done.reason.startswith("file size limit 1 MiB exceeded")


def test_open_files_limit(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    limits = settings.limits.model_copy(update={"open_files": 64})
    settings = settings.model_copy(update={"limits": limits})
    service, executor = make(settings)
    submit(service, open_many=200)
    done = executor.run_once()
    assert done is not None
    assert done.reason == "open files limit 64 exceeded"


def test_remote_inputs_keep_the_network_local_ones_do_not(settings: Settings) -> None:
    store = JobStore(settings.db_url)
    service = JobService(store, DatasetStore(store, settings), settings, permissive)

    def network(*files: str, **data: str) -> bool:
        doc = {"name": "n", "data": {"datasets": [{"name": "a", "files": list(files)}], **data}}
        return bool(submit_as(service, "alice", doc)[0].needs_network)

    assert not network("/data/a.root", "/data/sub/b.root", "/data/*.root")
    for url in ("root://eos.cern.ch//store/a.root", "https://host/a.root", "xroot://h//a.root",
                "ROOT://h//a.root", "HTTPS://h/a.root", " root://h//a.root"):  # fmt: skip
        assert network(url), url
    assert network("/store/a.root", redirector="root://cms-xrd-global.cern.ch")
    store.close()


def test_log_is_capped(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    limits = settings.limits.model_copy(update={"log_bytes": 10_000})
    settings = settings.model_copy(update={"limits": limits})
    service, executor = make(settings)
    job = submit(service, spam=100_000)
    assert executor.run_once() is not None
    log = job_paths(settings.data_dir, job.id).log(1).read_text()
    assert len(log) < 11_000
    assert "log truncated at 9.8 KiB" in log


@pytest.mark.parametrize("sandbox", ["none", "auto"])
def test_cancel_stops_every_process_of_the_job(tmp_path: Path, sandbox: str) -> None:
    service, executor = make(fake_settings(tmp_path, sandbox=sandbox))
    job = submit(service, children=2, escape=True, steps=600, sleep=0.1)
    runner = threading.Thread(target=executor.run_once)
    runner.start()
    deadline = time.monotonic() + 20
    while len(job_processes(job.id)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(job_processes(job.id)) >= 3  # the job, its children, the escaped one
    service.cancel(job.id, "alice")
    runner.join(timeout=20)
    final = service.get(job.id, "alice")
    assert final.state is State.CANCELLED
    assert job_processes(job.id) == []
    assert not job_paths(executor.settings.data_dir, job.id).partial(1).exists()


@pytest.mark.skipif(not HAS_BWRAP, reason="bwrap not installed (apt-get install bubblewrap)")
def test_sandbox_refuses_reads_writes_and_sockets_outside_the_job(tmp_path: Path) -> None:
    import socket

    settings = fake_settings(tmp_path, sandbox="bwrap")
    service, executor = make(settings)
    other = submit(service, steps=1)
    assert executor.run_once() is not None
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    probe = {
        "read": {
            "secret": str(secret),
            "database": str(settings.data_dir / "mlaas4hep.db"),
            "other_job": str(job_paths(settings.data_dir, other.id).spec),
            "root_home": "/root",
        },
        "write": {"etc": "/etc/escaped", "usr": "/usr/escaped"},
        "port": port,
    }
    job = submit(service, probe=probe)
    done = executor.run_once()
    listener.close()
    assert done is not None
    assert done.state is State.SUCCEEDED, done.reason
    result = json.loads(service.artifact_path(done, "probe.json").read_text())
    assert all(v.startswith("refused") for v in result.values()), result
    assert not Path("/etc/escaped").exists()
    assert job.needs_network is False


def test_executor_threads_run_jobs_and_stop(settings: Settings) -> None:
    service, executor = make(settings)
    jobs = [submit(service, steps=1) for _ in range(3)]
    executor.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = {service.get(j.id, "alice").state for j in jobs}
            if states == {State.SUCCEEDED}:
                break
            time.sleep(0.05)
        assert states == {State.SUCCEEDED}
        assert executor.alive
    finally:
        executor.stop()
    assert not executor.alive
