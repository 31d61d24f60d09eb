"""Jobs on a real Dask cluster (a scheduler and two workers from the ``dask`` CLI, loopback).

A pipeline job run by the Dask executor gives the local executor's statistics, event
counts, cut flow and split sizes; cancel stops it and cancels its futures; a worker killed
mid-job is replaced by the scheduler's retry and the job still succeeds, saying so.
"""

from __future__ import annotations

import glob
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from dask_cluster import LocalCluster

from mlaas4hep.auth.principal import Principal
from mlaas4hep.config import Settings
from mlaas4hep.data.samples import write_sample_set
from mlaas4hep.data.stats import first_pass
from mlaas4hep.jobs.dask_map import DaskDistributor
from mlaas4hep.jobs.datasets import DatasetStore
from mlaas4hep.jobs.executor_dask import DaskExecutor, attempt_key
from mlaas4hep.jobs.executor_local import LocalExecutor
from mlaas4hep.jobs.layout import job_paths
from mlaas4hep.jobs.policy import as_owner, authorize
from mlaas4hep.jobs.service import JobService
from mlaas4hep.jobs.states import State
from mlaas4hep.jobs.store import JobRecord, JobStore
from mlaas4hep.preprocess import partitioned
from mlaas4hep.preprocess.pipeline import Preprocessor
from mlaas4hep.spec import PipelineSpec

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).parents[2] / "examples" / "tth-vs-qcd.yaml"
OWNER = "alice"


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_sample_set(tmp_path_factory.mktemp("dask-samples"), 4000, seed=21)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("dask-cluster")
    cluster = LocalCluster(root, env={"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "2"})
    try:
        yield cluster.start(2)
    finally:
        cluster.stop()


def settings_for(tmp: Path, kind: str, address: str | None = None) -> Settings:
    executor: dict[str, Any] = {
        "kind": kind, "address": address, "workers": 1, "lease_s": 20.0, "heartbeat_s": 0.3,
        "poll_s": 0.1, "cancel_grace_s": 2.0, "sandbox": "none",
    }  # fmt: skip
    return Settings.model_validate(
        {"data_dir": str(tmp / "data"), "executor": executor, "limits": {"wall_clock_s": 300}}
    )


def spec_doc(samples: dict[str, Path], epochs: int = 1) -> dict[str, Any]:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["data"]["datasets"][0]["files"] = [str(samples["signal"])]
    doc["data"]["datasets"][1]["files"] = [str(samples["background"])]
    doc["data"]["step_size"] = 1000  # 8 partitions
    doc["model"] = {"kind": "sgd"}
    doc["train"] = {"epochs": epochs, "early_stopping": None, "device": "cpu", "seed": 1}
    doc.pop("deploy")
    return doc


@pytest.fixture
def dask_executor(tmp_path: Path, cluster: LocalCluster) -> Iterator[DaskExecutor]:
    settings = settings_for(tmp_path, "dask", cluster.address)
    store = JobStore(settings.db_url)
    executor = DaskExecutor(store, settings)
    try:
        client: Any = executor.client
        client.wait_for_workers(2, timeout=60)
        yield executor
    finally:
        executor.stop()
        store.close()


def submit(executor: LocalExecutor, doc: dict[str, Any]) -> JobRecord:
    service = JobService(
        executor.store, DatasetStore(executor.store, executor.settings), executor.settings
    )
    caller = Principal(
        "https://tests.invalid", OWNER, frozenset({"compute.create", "storage.read:/"})
    )
    job, _ = service.submit(as_owner(authorize(service, caller, doc), OWNER))
    return job


def result_docs(settings: Settings, job: JobRecord) -> dict[str, Any]:
    assert job.state is State.SUCCEEDED, (job.reason, log_text(settings, job)[-3000:])
    assert job.result_dir is not None
    out = job_paths(settings.data_dir, job.id).root / job.result_dir
    (fit,) = glob.glob(str(out / "cache" / "fit-*.json"))
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "stats.json": json.loads((out / "stats.json").read_text()),
        "features.json": json.loads((out / "features.json").read_text()),
        "first pass": json.loads(Path(fit).read_text())["info"],
        "test split": {k: metrics["test"][k] for k in ("n_events", "sum_weights")},
    }


def log_text(settings: Settings, job: JobRecord) -> str:
    path = job_paths(settings.data_dir, job.id).log(max(job.attempt, 1))
    return path.read_text() if path.exists() else ""


def run_in_thread(executor: DaskExecutor) -> threading.Thread:
    """Claim and run one job in a thread (the test acts on it meanwhile)."""
    thread = threading.Thread(target=executor.run_once, daemon=True)
    thread.start()
    return thread


def wait_running(executor: DaskExecutor, job: JobRecord, timeout: float = 60) -> str:
    """Wait until the job's process reports progress; returns the worker it runs on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = executor.channel.progress(attempt_key(executor.store.get(job.id)))
        if progress and "worker" in progress and "phase" in progress:
            return str(progress["worker"])
        time.sleep(0.1)
    pytest.fail(f"job {job.id} did not report progress within {timeout} s")


def test_first_passes_on_the_cluster_equal_the_local_ones(
    dask_executor: DaskExecutor, samples: dict[str, Path]
) -> None:
    spec = PipelineSpec.model_validate(spec_doc(samples))
    cluster = DaskDistributor(dask_executor.client)
    # the data layer's statistics: moments, min/max, multiplicity histograms, per file
    branches = ["MET_pt", "nJet", "Jet_pt", "Jet_btagDeepB", "nMuon", "Muon_pt"]
    local = first_pass(spec.data, branches)
    spread = first_pass(spec.data, branches, distributor=cluster)
    assert {k: v.to_dict() for k, v in spread.items()} == {k: v.to_dict() for k, v in local.items()}
    assert local["*"].collections["Jet"].multiplicity  # histograms are part of it
    # the preprocessing's first pass, then every batch (one partition per file)
    here, there = Preprocessor(spec), Preprocessor(spec, distributor=cluster)
    assert there.fit().to_dict() == here.fit().to_dict()
    # ... and with one task per 1000-event chunk, 8 tasks spread over both workers
    pieces = partitioned.plan(spec, min_entries=1)
    assert len(pieces) == 8
    merged, _ = partitioned.first_pass(spec, here.program, here.branches, cluster, pieces)
    assert merged.info().to_dict() == here.fit().to_dict()
    for a, b in zip(here.batches("test"), there.batches("test"), strict=True):
        assert (a.X == b.X).all()


def test_pipeline_job_on_the_cluster_equals_the_local_run(
    dask_executor: DaskExecutor, samples: dict[str, Path]
) -> None:
    local = LocalExecutor(dask_executor.store, dask_executor.settings)
    job = submit(local, spec_doc(samples))
    expected = result_docs(local.settings, local.run_once() or job)

    job = submit(dask_executor, spec_doc(samples))
    done = dask_executor.run_once()
    assert done is not None
    got = result_docs(dask_executor.settings, done)
    assert got == expected
    assert got["first pass"]["events"]["ttH"]["read"] == 4000
    final = dask_executor.store.get(job.id)
    assert final.progress is not None
    assert final.progress["phase"] == "done"
    assert final.progress["worker"] in dask_executor.client.nthreads()
    assert "restarts" not in final.progress


def test_cancel_stops_the_job_and_its_futures(
    dask_executor: DaskExecutor, samples: dict[str, Path]
) -> None:
    job = submit(dask_executor, spec_doc(samples, epochs=2000))
    thread = run_in_thread(dask_executor)
    wait_running(dask_executor, job)
    JobService(
        dask_executor.store, DatasetStore(dask_executor.store, dask_executor.settings),
        dask_executor.settings,
    ).cancel(job.id, OWNER)  # fmt: skip
    thread.join(timeout=60)
    assert not thread.is_alive()
    final = dask_executor.store.get(job.id)
    assert final.state is State.CANCELLED, final.reason
    assert final.reason == "cancelled by the user"
    client: Any = dask_executor.client
    deadline = time.monotonic() + 20
    while any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(client.processing().values()), client.processing()


def test_killing_the_worker_mid_job_still_completes_it(
    dask_executor: DaskExecutor, cluster: LocalCluster, samples: dict[str, Path]
) -> None:
    job = submit(dask_executor, spec_doc(samples, epochs=40))
    thread = run_in_thread(dask_executor)
    victim = wait_running(dask_executor, job)
    cluster.kill_worker(victim)
    try:
        thread.join(timeout=120)
        assert not thread.is_alive()
        final = dask_executor.store.get(job.id)
        text = log_text(dask_executor.settings, final)
        assert final.state is State.SUCCEEDED, (final.reason, text[-3000:])
        assert final.attempt == 1  # Dask retried the task; the job's attempt did not change
        assert final.progress is not None
        assert final.progress["restarts"] == 1
        assert final.progress["worker"] != victim
        assert "after a worker was lost" in text
    finally:
        cluster.add_worker()  # the next test finds two workers again


def test_a_spent_retry_budget_fails_the_job_with_the_reason(
    tmp_path: Path, samples: dict[str, Path]
) -> None:
    # A scheduler that gives up on the first lost worker (allowed-failures 0).
    cluster = LocalCluster(
        tmp_path / "cluster", env={"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
    )
    try:
        cluster.start(2)
        settings = settings_for(tmp_path, "dask", cluster.address)
        store = JobStore(settings.db_url)
        executor = DaskExecutor(store, settings)
        try:
            client: Any = executor.client
            client.wait_for_workers(2, timeout=60)
            job = submit(executor, spec_doc(samples, epochs=2000))
            thread = run_in_thread(executor)
            cluster.kill_worker(wait_running(executor, job))
            thread.join(timeout=60)
            assert not thread.is_alive()
            final = store.get(job.id)
            assert final.state is State.FAILED
            assert final.reason is not None
            assert "Dask workers running this job died too often" in final.reason
            assert "allowed-failures" in final.reason
            assert not job_paths(settings.data_dir, job.id).partial(1).exists()
        finally:
            executor.stop()
            store.close()
    finally:
        cluster.stop()


def test_the_executor_is_ready_while_connected(tmp_path: Path, cluster: LocalCluster) -> None:
    settings = settings_for(tmp_path, "dask", cluster.address)
    settings = settings.model_copy(
        update={"executor": settings.executor.model_copy(update={"workers": 0})}
    )
    store = JobStore(settings.db_url)
    executor = DaskExecutor(store, settings)
    try:
        assert not executor.alive
        executor.start()  # connects first: an unreachable scheduler fails here
        assert executor.alive
    finally:
        executor.stop()
        store.close()
    assert not executor.alive
