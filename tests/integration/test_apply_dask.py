"""``mlaas4hep apply`` on a real Dask cluster (a scheduler and two workers, loopback).

Two inputs cut into several partitions each are scored on the workers and give the local
run's friend trees bit for bit; a worker that dies while scoring a partition is replaced by
the scheduler's retry and the scores are still the local ones; a broken input fails alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from dask_cluster import LocalCluster
from test_apply import IDS, read, spec_dict, train

from mlaas4hep.apply import Model, score_file
from mlaas4hep.apply.distributed import plan_input, score_inputs
from mlaas4hep.cli import main
from mlaas4hep.config import Settings
from mlaas4hep.data.samples import write_sample
from mlaas4hep.data.stream import Partition
from mlaas4hep.jobs.apply_job import apply_argv, model_dir
from mlaas4hep.jobs.dask_map import ClusterError, DaskDistributor, distributor_at
from mlaas4hep.jobs.executor_dask import _worker_settings
from mlaas4hep.jobs.layout import job_paths

pytestmark = pytest.mark.slow
EVENTS, STEP = 3000, 500
T = TypeVar("T")
R = TypeVar("R")


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("apply-dask-samples")
    write_sample(d / "signal.root", "signal", EVENTS, seed=2**14 + 1, basket_entries=500)
    write_sample(d / "background.root", "background", EVENTS, seed=3)
    return d


@pytest.fixture(scope="module")
def bundle(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    datasets = [
        {"name": "ttH", "files": [str(samples / "signal.root")], "label": 1},
        {"name": "QCD", "files": [str(samples / "background.root")], "label": 0},
    ]
    model = {"kind": "xgboost", "n_estimators": 20, "max_depth": 3}
    return train(tmp_path_factory.mktemp("runs"), "tth", spec_dict(samples, datasets, model))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("apply-dask-cluster")
    cluster = LocalCluster(root, env={"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "2"})
    try:
        yield cluster.start(2)
    finally:
        cluster.stop()


@pytest.fixture
def distributor(cluster: LocalCluster) -> Iterator[DaskDistributor]:
    with distributor_at(cluster.address) as dist:
        client: Any = dist.client
        client.wait_for_workers(2, timeout=60)
        yield dist


def test_apply_on_the_cluster_equals_the_local_run(
    bundle: Path, samples: Path, tmp_path: Path, cluster: LocalCluster
) -> None:
    inputs = [str(samples / "signal.root"), str(samples / "background.root")]
    common = [str(bundle), *inputs, "--step-size", str(STEP)]
    assert main(["apply", *common, "--out", str(tmp_path / "local")]) == 0
    spread = ["--dask-scheduler", cluster.address, "--partition-entries", "1000"]
    assert main(["apply", *common, "--out", str(tmp_path / "dask"), *spread]) == 0
    for name in ("signal", "background"):
        here = read(tmp_path / "local" / f"{name}.tth.friend.root")
        there = read(tmp_path / "dask" / f"{name}.tth.friend.root")
        assert list(there) == [*IDS, "tth_score", "tth_pass"]
        for key, values in here.items():
            assert there[key].dtype == values.dtype
            assert there[key].tobytes() == values.tobytes(), key  # NaNs and all: bit for bit
        assert len(there["event"]) == EVENTS


def test_a_broken_input_fails_alone_on_the_cluster(
    bundle: Path, samples: Path, tmp_path: Path, cluster: LocalCluster,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    data = (samples / "signal.root").read_bytes()
    broken = tmp_path / "broken.root"
    broken.write_bytes(data[: len(data) // 2])  # the header reads; the baskets do not
    good = samples / "background.root"
    out = tmp_path / "o"
    argv = ["apply", str(bundle), str(broken), str(good), "--out", str(out)]
    spread = ["--dask-scheduler", cluster.address, "--partition-entries", "1000"]
    assert main([*argv, "--step-size", str(STEP), *spread]) == 2
    err = capsys.readouterr().err
    assert str(broken) in err
    assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["background.tth.friend.root"]
    assert len(read(out / "background.tth.friend.root")["event"]) == EVENTS


class KillOnce:
    """A distributor whose task for one partition kills its worker process, once.

    The marker file makes the death happen on the first run of that task only: the
    scheduler's rerun (on the other worker) then completes it.
    """

    def __init__(self, inner: DaskDistributor, marker: Path, victim: tuple[str, int]) -> None:
        self.inner, self.marker, self.victim = inner, marker, victim

    def map_ordered(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        marker, victim = str(self.marker), self.victim

        def run(item: T) -> R:  # pickled by value (a closure), run on a worker
            if (getattr(item, "file", None), getattr(item, "entry_start", None)) == victim:
                try:
                    os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
                except FileExistsError:
                    pass  # the retry
                else:
                    os._exit(1)  # the worker dies with its tasks
            return fn(item)

        return self.inner.map_ordered(run, items)


def test_a_partition_whose_worker_dies_is_retried_with_the_same_scores(
    bundle: Path, samples: Path, tmp_path: Path, cluster: LocalCluster,
    distributor: DaskDistributor,
) -> None:  # fmt: skip
    model = Model.load(bundle)
    inputs = [str(samples / "signal.root"), str(samples / "background.root")]
    marker = tmp_path / "killed-once"
    dist = KillOnce(distributor, marker, victim=(inputs[0], 1000))
    try:
        got = {
            s.source: list(s.chunks)
            for s in score_inputs([model], inputs, dist, step_size=STEP, min_entries=1000)
        }
    finally:
        dead = [a for a, proc in cluster.workers.items() if proc.poll() is not None]
        for address in dead:
            cluster.kill_worker(address)  # forget it (it has exited already)
            cluster.add_worker()  # the next test finds two workers again
    assert marker.exists()
    assert len(dead) == 1  # one worker died, and its partition was rerun elsewhere
    for source in inputs:
        local = list(score_file([model], source, step_size=STEP))
        spread = got[source]
        assert [(c.entry_start, c.entry_stop) for c in spread] == [
            (c.entry_start, c.entry_stop) for c in local
        ]
        for a, b in zip(local, spread, strict=True):
            for key in IDS:
                assert b.ids[key].dtype == a.ids[key].dtype
                assert b.ids[key].tobytes() == a.ids[key].tobytes()
            for key in a.columns:
                assert b.columns[key].tobytes() == a.columns[key].tobytes(), key
        assert np.concatenate([c.columns["tth_pass"] for c in spread]).any()


def test_partitions_start_on_the_local_chunk_boundaries() -> None:
    parts = plan_input("f.root", "Events", 3200, 500, 1000)
    ranges = [(p.entry_start, p.entry_stop) for p in parts]
    assert ranges == [(0, 1000), (1000, 2000), (2000, 3000), (3000, 3200)]
    assert all(isinstance(p, Partition) and p.tree == "Events" for p in parts)


def test_an_apply_job_on_a_worker_scores_on_the_cluster(
    bundle: Path, samples: Path, tmp_path: Path, cluster: LocalCluster
) -> None:
    """The command a Dask worker runs for an apply job (``apply_command`` + the scheduler,
    then ``apply_argv``), run as a process: its outputs equal the local ones."""
    settings = Settings.model_validate({"data_dir": str(tmp_path / "data")})
    on_worker = _worker_settings(settings, cluster.address)
    assert on_worker.executor.apply_command[-2:] == ["--dask-scheduler", cluster.address]
    paths = job_paths(settings.data_dir, "0" * 32)
    shutil.copytree(bundle, model_dir(paths.input, "tth"))
    inputs = [str(samples / "signal.root"), str(samples / "background.root")]
    doc = {"name": "score", "apply": {"model": "tth:1", "files": inputs, "step_size": STEP}}
    argv = apply_argv(on_worker, paths, json.dumps(doc), tmp_path / "out")
    assert argv is not None
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1])["phase"] == "done"
    assert main(["apply", str(bundle), *inputs, "--step-size", str(STEP),
                 "--out", str(tmp_path / "local")]) == 0  # fmt: skip
    for name in ("signal", "background"):
        here = read(tmp_path / "local" / f"{name}.tth.friend.root")
        there = read(tmp_path / "out" / f"{name}.tth.friend.root")
        assert {k: v.tobytes() for k, v in there.items()} == {
            k: v.tobytes() for k, v in here.items()
        }


def test_a_spent_retry_budget_fails_the_inputs_with_the_reason(
    bundle: Path, samples: Path, tmp_path: Path
) -> None:
    # A scheduler that gives up on the first lost worker (allowed-failures 0).
    cluster = LocalCluster(
        tmp_path / "cluster", env={"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
    )
    try:
        cluster.start(2)
        model = Model.load(bundle)
        inputs = [str(samples / "signal.root"), str(samples / "background.root")]
        with distributor_at(cluster.address) as inner:
            client: Any = inner.client
            client.wait_for_workers(2, timeout=60)
            dist = KillOnce(inner, tmp_path / "killed", victim=(inputs[0], 1000))
            scored = score_inputs([model], inputs, dist, step_size=STEP, min_entries=1000)
            failed = []
            for s in scored:  # the first fails at its second partition, the next with it
                with pytest.raises(ClusterError, match="allowed-failures"):
                    list(s.chunks)
                failed.append(s.source)
            assert failed == inputs
    finally:
        cluster.stop()
