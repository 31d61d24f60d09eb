"""A hyperparameter search with its trials on a real Dask cluster and its study in a real
PostgreSQL server (both started here on loopback), read back with ``optuna.load_study``.

Also the service's side: the job store's database (PostgreSQL) receives the job's study
as ``job-<id>`` (``mlaas4hep.jobs.tune.record_search``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from dask_cluster import LocalCluster
from pg import postgres_server

from mlaas4hep.data.samples import write_sample_set
from mlaas4hep.jobs.dask_map import distributor_at
from mlaas4hep.jobs.store import JobStore
from mlaas4hep.jobs.tune import record_search, study_name, trial_pool
from mlaas4hep.spec import load_spec, validate_spec
from mlaas4hep.train.run import run_pipeline
from mlaas4hep.train.tune import TuneOptions

pytestmark = pytest.mark.slow


def load_study(name: str, url: str) -> optuna.Study:
    """``optuna.load_study``, copied into memory so that its database connections close."""
    storage = optuna.storages.RDBStorage(url)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
        copy = optuna.create_study(direction=study.direction)
        copy.add_trials(study.trials)
        return copy
    finally:
        storage.engine.dispose()


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_server() as url:
        JobStore(url).close()  # the service's tables exist beside Optuna's
        yield url


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("tune-dask"), env={})
    try:
        yield cluster.start(2)
    finally:
        cluster.stop()


def tune_spec(files: dict[str, Path]) -> dict[str, Any]:
    return {
        "name": "tune-dask",
        "data": {
            "tree": "Events",
            "datasets": [
                {"name": "signal", "files": [str(files["signal"])], "label": 1},
                {"name": "background", "files": [str(files["background"])], "label": 0},
            ],
            "step_size": 1000,
        },
        "preprocess": {"features": {"scalars": ["MET_pt", "nJet", "nMuon"]}},
        "model": {"kind": "mlp", "hidden": [8]},
        "train": {"epochs": 2, "batch_size": 256, "early_stopping": None},
        "tune": {
            "metric": "val_loss",
            "n_trials": 3,
            "parallel": 2,
            "seed": 5,
            "space": {
                "model.hidden": {"type": "categorical", "choices": [[4], [8, 4]]},
                "train.lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
            },
        },
    }


def test_study_on_dask_workers_stored_in_postgresql(
    cluster: LocalCluster, pg_url: str, tmp_path: Path
) -> None:
    files = write_sample_set(tmp_path / "data", 1500, seed=4)
    raw = tune_spec(files)
    out = tmp_path / "run"
    with distributor_at(cluster.address) as distributor:
        options = TuneOptions(pg_url, "dask-pg", trial_pool(distributor))
        result = run_pipeline(validate_spec(raw), out, distributor=distributor, tune=options)

    study = load_study("dask-pg", pg_url)
    assert len(study.trials) == 3
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    # The trials ran in the workers' processes, not here.
    pids = {t.user_attrs["pid"] for t in study.trials}
    assert os.getpid() not in pids
    assert pids <= {p.pid for p in cluster.workers.values()}
    best = result.metrics["tune"]["best"]
    assert best["number"] == study.best_trial.number
    assert load_spec(out / "spec.yaml").model.hidden == best["params"]["model.hidden"]

    # The service copies a job's search into its own database under the job's name.
    name = record_search(pg_url, "job42", raw, out)
    assert name == study_name("job42")
    copied = load_study(name, pg_url)
    assert len(copied.trials) == 3
    assert copied.best_value == pytest.approx(study.best_value)
