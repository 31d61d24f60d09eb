"""The Dask executor's pure parts: resources, the progress channel, reasons, settings."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from distributed import KilledWorker

from mlaas4hep.config import MLAAS4HEP_ARGV, Settings, load_settings
from mlaas4hep.errors import SpecError
from mlaas4hep.jobs.dask_map import ClusterError, connect
from mlaas4hep.jobs.executor_dask import (
    AttemptChannel,
    DaskExecutor,
    _worker_settings,
    lost_reason,
    resources_for,
)
from mlaas4hep.jobs.executor_local import LocalExecutor
from mlaas4hep.jobs.executors import make_executor
from mlaas4hep.jobs.store import JobStore


def test_a_cuda_job_asks_for_one_gpu() -> None:
    assert resources_for({"train": {"device": "cuda"}}) == {"GPU": 1}
    assert resources_for({"train": {"device": "auto"}}) is None
    assert resources_for({}) is None


def test_the_channel_keeps_the_latest_progress_and_counts_restarts() -> None:
    channel = AttemptChannel()
    channel.handle((1.0, {"key": "a", "started": "tcp://w1", "worker": "tcp://w1"}))
    channel.handle((2.0, {"key": "a", "progress": {"phase": "prepare"}, "worker": "tcp://w1"}))
    channel.handle((3.0, {"key": "a", "progress": {"phase": "train", "epoch": 1}}))
    channel.handle((4.0, "not ours"))
    assert channel.progress("a") == {"phase": "train", "epoch": 1, "worker": "tcp://w1"}
    channel.handle((5.0, {"key": "a", "started": "tcp://w2"}))
    final = channel.progress("a", {"phase": "done"})
    assert final == {"phase": "done", "worker": "tcp://w2", "restarts": 1}
    assert channel.progress("b") is None
    channel.forget("a")
    assert channel.progress("a") is None


def test_a_spent_retry_budget_is_explained() -> None:
    last = SimpleNamespace(address="tcp://127.0.0.1:1")  # the scheduler's WorkerState
    reason = lost_reason(KilledWorker("mlaas4hep-attempt-x-1", last, 0))
    assert "died too often" in reason
    assert "allowed-failures" in reason
    assert "tcp://127.0.0.1:1" in reason
    assert lost_reason(RuntimeError("boom")).endswith("RuntimeError: boom")


def test_settings_choose_the_executor(tmp_path: Path) -> None:
    env = {"MLAAS4HEP_DATA_DIR": str(tmp_path)}
    with pytest.raises(SpecError, match=r"executor\.kind .dask. needs executor\.address"):
        load_settings(environ={**env, "MLAAS4HEP_EXECUTOR__KIND": "dask"})
    with pytest.raises(SpecError, match=r"executor\.kind"):
        load_settings(environ={**env, "MLAAS4HEP_EXECUTOR__KIND": "ray"})
    local = load_settings(environ=env)
    dask = load_settings(
        environ={
            **env,
            "MLAAS4HEP_EXECUTOR__KIND": "dask",
            "MLAAS4HEP_EXECUTOR__ADDRESS": "tcp://127.0.0.1:8786",
        }
    )
    store = JobStore(local.db_url)
    try:
        assert type(make_executor(store, local)) is LocalExecutor
        assert type(make_executor(store, dask)) is DaskExecutor
    finally:
        store.close()


def test_the_worker_runs_the_job_command_with_the_scheduler(tmp_path: Path) -> None:
    settings = Settings.model_validate({"data_dir": str(tmp_path)})
    got = _worker_settings(settings, "tcp://s:8786").executor.job_command
    assert got == [*MLAAS4HEP_ARGV, "run", "--dask-scheduler", "tcp://s:8786"]
    moved = Settings.model_validate(
        {"data_dir": str(tmp_path), "executor": {"job_command": ["/elsewhere/python", "-c", "x"]}}
    )
    got = _worker_settings(moved, "tcp://s:8786").executor.job_command
    assert got[0] == sys.executable  # the service's interpreter path is not on this worker


def test_an_unreachable_scheduler_fails_fast_and_says_where() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ClusterError, match=rf"127.0.0.1:{port}.*executor.address"):
        connect(f"tcp://127.0.0.1:{port}", timeout_s=1)
