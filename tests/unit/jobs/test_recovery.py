"""Recovery of lost attempts (requeue or fail, leftovers removed) and retention."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import psutil
from jobs_helpers import permissive, submit_as

from mlaas4hep.config import Settings
from mlaas4hep.jobs.attempt import JOB_MARKER
from mlaas4hep.jobs.datasets import DatasetStore
from mlaas4hep.jobs.layout import job_paths
from mlaas4hep.jobs.recovery import purge_old, recover
from mlaas4hep.jobs.service import JobService
from mlaas4hep.jobs.states import State
from mlaas4hep.jobs.store import JobStore


def service(settings: Settings) -> JobService:
    store = JobStore(settings.db_url)
    return JobService(store, DatasetStore(store, settings), settings, permissive)


def test_a_dead_local_worker_is_requeued_at_once_and_its_leftovers_removed(
    settings: Settings,
) -> None:
    svc = service(settings)
    job, _ = submit_as(svc, "alice", {"name": "x"})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    start = 1  # any start time: the pid is gone
    worker = f"{socket.gethostname()}:{dead.pid}:{start}:abcd"
    claimed = svc.store.claim(worker, lease_s=3600)  # a long lease: only liveness can expire it
    assert claimed is not None
    partial = job_paths(settings.data_dir, job.id).partial(1)
    partial.mkdir(parents=True)
    (partial / "half.onnx").write_bytes(b"half")
    orphan = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"],
        env={JOB_MARKER: job.id},
        start_new_session=True,
    )
    svc.store.heartbeat(job.id, worker, 1, 3600, pgid=orphan.pid)
    assert recover(svc.store, settings.data_dir) == [job.id]
    after = svc.get(job.id, "alice")
    assert after.state is State.QUEUED
    assert "attempt 1 of 3 lost" in (after.reason or "")
    assert not partial.exists()
    orphan.wait(timeout=10)  # killed, and reaped by the sweep or here: it must not hang
    assert not psutil.pid_exists(orphan.pid) or psutil.Process(orphan.pid).status() == "zombie"
    assert recover(svc.store, settings.data_dir) == []  # nothing left to do


def test_a_live_worker_on_another_host_waits_for_its_lease(settings: Settings) -> None:
    svc = service(settings)
    job, _ = submit_as(svc, "alice", {"name": "x"})
    svc.store.claim("elsewhere:1:1:abcd", lease_s=0.5)
    assert recover(svc.store, settings.data_dir) == []  # alive as far as we know
    assert svc.get(job.id, "alice").state is State.RUNNING
    time.sleep(0.6)
    assert recover(svc.store, settings.data_dir) == [job.id]
    assert svc.get(job.id, "alice").state is State.QUEUED


def test_retention_deletes_old_finished_jobs_only(settings: Settings) -> None:
    svc = service(settings)
    old, _ = submit_as(svc, "alice", {"name": "old"})
    active, _ = submit_as(svc, "alice", {"name": "active"})
    svc.cancel(old.id, "alice")
    time.sleep(0.05)
    assert purge_old(svc.store, settings.data_dir, retention_days=0.01 / 86400) == 1
    assert not job_paths(settings.data_dir, old.id).root.exists()
    assert svc.get(active.id, "alice").state is State.QUEUED
    assert purge_old(svc.store, settings.data_dir, None) == 0
