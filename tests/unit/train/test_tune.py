"""Hyperparameter search (``tune:``): spec checks, a real study, pruning, the service copy.

Every study here is real (Optuna, SQLite storage, the torch MLP on the generated sample);
models are tiny and trained for 1-2 epochs so the whole file runs in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import optuna
import pytest
from onnx import numpy_helper

from mlaas4hep.errors import DataQualityError, SpecError
from mlaas4hep.jobs.tune import record_search, study_name
from mlaas4hep.preprocess.pipeline import Preprocessor
from mlaas4hep.spec import PipelineSpec, PruningSpec, load_spec, validate_spec, with_params
from mlaas4hep.train.run import run_pipeline
from mlaas4hep.train.tune import TuneOptions
from mlaas4hep.train.tune_trial import FeatureStore, TrialTask, run_trial


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


def raw_spec(files: dict[str, Path], tune: dict[str, Any] | None = None) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "tune-test",
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
        "train": {"epochs": 2, "batch_size": 256, "lr": 0.01, "early_stopping": None},
    }
    if tune is not None:
        raw["tune"] = tune
    return raw


BAD_TUNES = [
    ({"space": {"model.hiden": {"type": "int", "low": 1, "high": 3}}}, "closest: 'model.hidden'"),
    ({"space": {"model.max_depth": {"type": "int", "low": 2, "high": 4}}}, "model kind 'mlp'"),
    ({"space": {"train.lr": {"type": "float", "low": 1e-4, "high": 50.0}}}, "the value 50.0"),
    ({"space": {"train.lr": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}}, "low > 0"),
    ({"space": {"train.lr": {"type": "float", "low": 0.1, "high": 0.01}}}, "is above high"),
    ({"space": {"model.hidden": {"type": "int", "low": 1, "high": 3}}}, "valid list"),
    ({"space": {"model.hidden": {"type": "uniform", "low": 1}}}, "'int', 'float', 'categorical'"),
    (
        {"space": {"train.lr": {"type": "float", "low": 0.001, "high": 0.01}}, "metric": "auc"},
        "tune.metric",
    ),
    (
        {"space": {"train.lr": {"type": "float", "low": 0.001, "high": 0.01}}, "n_trials": None},
        "n_trials or timeout",
    ),
    ({"space": {}}, "tune.space"),
]


@pytest.mark.parametrize(("tune", "expected"), BAD_TUNES)
def test_bad_tune_section_is_a_spec_error_that_says_why(
    sample_files: dict[str, Path], tune: dict[str, Any], expected: str
) -> None:
    with pytest.raises(SpecError) as err:
        validate_spec(raw_spec(sample_files, tune))
    assert expected in str(err.value)


def test_tune_needs_a_validation_split(sample_files: dict[str, Path]) -> None:
    raw = raw_spec(
        sample_files, {"space": {"train.lr": {"type": "float", "low": 1e-3, "high": 1e-2}}}
    )
    raw["preprocess"]["split"] = {"validation": 0.0, "test": 0.2}
    with pytest.raises(SpecError, match=r"preprocess.split.validation is 0"):
        validate_spec(raw)


def test_every_trial_spec_is_validated_again(sample_files: dict[str, Path]) -> None:
    spec = validate_spec(raw_spec(sample_files))
    assert with_params(spec, {"train.lr": 0.05, "model.hidden": [4, 2]}).model.hidden == [4, 2]
    with pytest.raises(SpecError, match=r"train.batch_size"):
        with_params(spec, {"train.batch_size": 0})


def test_study_exports_the_best_trial_and_is_stored(
    sample_files: dict[str, Path], tmp_path: Path
) -> None:
    tune = {
        "metric": "val_auc",
        "n_trials": 3,
        "seed": 3,
        "pruning": {"enabled": False},
        "space": {
            "model.hidden": {"type": "categorical", "choices": [[4], [12, 6]]},
            "train.lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
        },
    }
    spec = validate_spec(raw_spec(sample_files, tune))
    out = tmp_path / "run"
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    result = run_pipeline(spec, out, tune=TuneOptions(storage=storage, study_name="s1"))

    study = load_study("s1", storage)
    assert len(study.trials) == 3
    summary = result.metrics["tune"]
    assert summary["best"]["number"] == study.best_trial.number
    assert summary["trials"] == {"complete": 3, "pruned": 0, "failed": 0}
    best = summary["best"]["params"]
    # The bundle is the best trial's model: its spec holds the best values ...
    bundled = load_spec(out / "spec.yaml")
    assert bundled.model.hidden == best["model.hidden"]
    assert bundled.train.lr == pytest.approx(best["train.lr"])
    assert bundled.tune is None
    # ... and the exported graph has the best trial's layer widths.
    graph = onnx.load(str(out / "model.onnx")).graph
    shapes = {numpy_helper.to_array(t).shape for t in graph.initializer}
    assert (best["model.hidden"][0], 3) in shapes
    rows = json.loads((out / "tune" / "trials.json").read_text())["trials"]
    assert [r["number"] for r in rows] == [0, 1, 2]
    assert (out / "tune" / "trials.csv").read_text().count("\n") == 4
    for name in ("history", "importance"):
        assert (out / "tune" / f"{name}.png").stat().st_size > 1000
        assert (out / "tune" / f"{name}.pdf").is_file()
    assert set(summary["importances"]) == {"model.hidden", "train.lr"}
    assert not (out / "work").exists()

    # The service's copy of the search: the same trials, under the job's name.
    job_db = f"sqlite:///{tmp_path / 'service.db'}"
    name = record_search(job_db, "abc123", raw_spec(sample_files, tune), out)
    assert name == study_name("abc123")
    copied = load_study(name, job_db)
    assert [t.params for t in copied.trials] == [t.params for t in study.trials]
    assert copied.best_trial.number == study.best_trial.number


@pytest.fixture(scope="module")
def stored(sample_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    spec = validate_spec(raw_spec(sample_files))
    pre = Preprocessor(spec)
    info = pre.fit()
    return spec, info, FeatureStore.write(pre, tmp_path_factory.mktemp("store"), seed=1)


def finished_trial(auc: float) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(
        value=auc, params={}, distributions={}, intermediate_values={1: auc, 2: auc}
    )


@pytest.mark.parametrize(("others", "state"), [(0.999, "pruned"), (0.5, "complete")])
def test_pruning_stops_a_trial_worse_than_the_median(
    stored: tuple[PipelineSpec, Any, FeatureStore], tmp_path: Path, others: float, state: str
) -> None:
    spec, info, store = stored
    bad = with_params(spec, {"train.lr": 1e-6})  # learns next to nothing in 2 epochs
    task = TrialTask(
        0, bad, info, store.directory, tmp_path / "t0", "val_auc", "maximize",
        PruningSpec(startup_trials=1, warmup_epochs=0), (finished_trial(others),),
    )  # fmt: skip
    outcome = run_trial(task)
    assert outcome.state == state
    assert list(outcome.curve) == ([1] if state == "pruned" else [1, 2])
    assert (outcome.value is None) == (state == "pruned")


def test_hostile_trials_file_is_refused(sample_files: dict[str, Path], tmp_path: Path) -> None:
    tune = {"space": {"train.lr": {"type": "float", "low": 1e-3, "high": 1e-2}}}
    (tmp_path / "tune").mkdir()
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    for doc in (
        "not json",
        json.dumps({"trials": [{"state": "complete", "value": 1.0, "params": {"x": 1}}]}),
        json.dumps({"trials": [{"state": "complete", "value": 1.0, "params": {"train.lr": 5.0}}]}),
    ):
        (tmp_path / "tune" / "trials.json").write_text(doc)
        with pytest.raises(DataQualityError):
            record_search(db, "j1", raw_spec(sample_files, tune), tmp_path)
    assert record_search(db, "j2", raw_spec(sample_files), tmp_path) is None  # no tune: no study


def test_empty_store_split_name_is_refused(stored: tuple[PipelineSpec, Any, FeatureStore]) -> None:
    _, _, store = stored
    with pytest.raises(ValueError, match="feature store"):
        next(store.batches("test"))
    assert sum(len(b) for b in store.batches("validation")) > 0
    assert np.all(np.concatenate([b.split for b in store.batches("train")]) == 0)
