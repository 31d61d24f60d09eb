"""k-folding (``train.folds``) end to end: ``mlaas4hep run`` on generated ROOT files, the
out-of-fold metrics, the fold streams each model learns from, and ``mlaas4hep apply``.

The labels are noise (``MET_phi > 0``) and the features hold the event number, so a deep
XGBoost memorises its training events: scored by a model that trained on them, events get
their own label back (AUC near 1); scored out of fold, they cannot (AUC near 0.5). A
fold assignment that let any model score events it trained on would show at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import uproot
import yaml
from sklearn.metrics import roc_auc_score

from mlaas4hep.apply import Model
from mlaas4hep.cli import main
from mlaas4hep.data.samples import write_sample
from mlaas4hep.errors import SpecError
from mlaas4hep.preprocess.split import VALIDATION, assign_fold
from mlaas4hep.spec import PipelineSpec, load_spec
from mlaas4hep.train.folds import TrainingFolds, fold_source

K, EVENTS, SEED = 3, 1200, 42
IDS = ["run", "luminosityBlock", "event"]


def folds_spec(samples: Path, model: dict[str, Any], name: str) -> dict[str, Any]:
    """Noise labels; features: the identifiers (exact in float32: seed-0 samples)."""
    return {
        "name": name,
        "data": {
            "tree": "Events",
            "datasets": [
                {"name": "sig", "files": [str(samples / "signal.root")]},
                {"name": "bkg", "files": [str(samples / "background.root")]},
            ],
            "identifiers": IDS,
            "step_size": 500,
        },
        "preprocess": {
            "task": "binary",
            "label": "where(MET_phi > 0, 1, 0)",
            "features": {"scalars": ["event", "luminosityBlock", "MET_pt"]},
            "normalize": "none",
            "split": {"validation": 0.2, "test": 0.2, "seed": SEED},
        },
        "model": model,
        "train": {"epochs": 1, "early_stopping": None, "device": "cpu", "seed": 1, "folds": K},
    }


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fold-samples")
    # seed 0: event numbers 2 i + 1 (signal) and 2 i + 2 (background), exact in float32
    write_sample(d / "signal.root", "signal", EVENTS, seed=0)
    write_sample(d / "background.root", "background", EVENTS, seed=0)
    return d


@pytest.fixture(scope="module")
def run(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = {"kind": "xgboost", "n_estimators": 40, "max_depth": 8, "learning_rate": 0.5}
    tmp = tmp_path_factory.mktemp("fold-run")
    path = tmp / "folds.yaml"
    path.write_text(yaml.safe_dump(folds_spec(samples, model, "noise")))
    assert main(["run", str(path), "--out", str(tmp / "out")]) == 0
    return tmp / "out"


def read(path: Path) -> dict[str, np.ndarray]:
    with uproot.open(path) as f:
        return {k: np.asarray(v) for k, v in f["Events"].arrays(library="np").items()}


def folds_of(X: np.ndarray) -> np.ndarray:
    """The fold of feature rows (event, luminosityBlock, ...) by the public function."""
    run = np.ones(len(X), np.uint32)
    ids = [run, X[:, 1].astype(np.uint32), X[:, 0].astype(np.uint64)]
    return assign_fold(ids, folds=K, seed=SEED)


def test_each_model_learns_only_from_the_other_folds(run: Path) -> None:
    spec = load_spec(run / "spec.yaml")
    from mlaas4hep.preprocess.pipeline import Preprocessor

    info = Preprocessor(spec).fit()
    seen_out_of_fold = []
    for fold in range(K):
        training = TrainingFolds(fold_source(spec, info, fold, inside=False), fold)
        train = list(training.batches("train", shuffle=True, seed=3))
        validation = list(training.batches("validation"))
        for batches in (train, validation):
            X = np.concatenate([b.X for b in batches])
            assert (folds_of(X) != fold).all()  # never an event of its own fold
        assert all((b.split != VALIDATION).all() for b in train)
        assert all((b.split == VALIDATION).all() for b in validation)
        inside = np.concatenate([b.X for b in fold_source(spec, info, fold, inside=True).batches()])
        assert (folds_of(inside) == fold).all()
        seen_out_of_fold.append(inside)
        # the model of this fold trained on every other event (test codes too)
        learnt = sum(len(b) for b in train) + sum(len(b) for b in validation)
        assert learnt + len(inside) == 2 * EVENTS
    every = np.concatenate(seen_out_of_fold)
    assert len(every) == 2 * EVENTS
    assert len({(r[0], r[1], r[2]) for r in every.tolist()}) == 2 * EVENTS  # each once


def test_out_of_fold_scores_never_come_from_a_model_that_saw_the_event(
    run: Path, samples: Path, tmp_path: Path
) -> None:
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["evaluated_on"] == "out-of-fold"
    assert metrics["onnx"]["ok"]
    assert len(metrics["onnx"]["per_fold_max_abs_diff"]) == K
    per_fold = metrics["folds"]["per_fold"]
    assert [f["trained_without_fold"] for f in per_fold] == list(range(K))
    scored = sum(f["out_of_fold_events"] for f in per_fold)
    assert scored == metrics["test"]["n_events"] == 2 * EVENTS
    # memorised in fold, nothing learnt out of fold
    assert metrics["train_sample"]["auc"] > 0.9
    assert abs(metrics["test"]["auc"] - 0.5) < 0.06

    out = tmp_path / "oof"
    inputs = [str(samples / "signal.root"), str(samples / "background.root")]
    assert main(["apply", str(run), *inputs, "--out", str(out)]) == 0
    scores, labels, ids = [], [], []
    for name in ("signal", "background"):
        friend, source = read(out / f"{name}.noise.friend.root"), read(samples / f"{name}.root")
        scores.append(friend["noise_score"])
        labels.append((source["MET_phi"] > 0).astype(int))
        ids.append([friend[i] for i in IDS])
    oof, y = np.concatenate(scores), np.concatenate(labels)
    # the run's test metrics are those of these out-of-fold scores
    assert roc_auc_score(y, oof) == pytest.approx(metrics["test"]["auc_unweighted"], abs=1e-9)
    assert roc_auc_score(y, oof) == pytest.approx(metrics["test"]["auc"], abs=1e-9)

    # apply chose, per event, the model of its fold: the one that never saw it
    options = ort.SessionOptions()
    options.log_severity_level = 3  # not the note that the fold input has a default
    session = ort.InferenceSession(str(run / "model.onnx"), options)
    spec = load_spec(run / "spec.yaml")
    X = np.concatenate([_features(spec, samples, n) for n in ("signal", "background")])
    fold = np.concatenate([assign_fold(i, folds=K, seed=SEED) for i in ids])
    np.testing.assert_array_equal(
        session.run(["scores"], {"features": X, "fold": fold})[0][:, 0], oof
    )
    # any other choice scores events with a model that trained on them: memorised labels
    shifted = session.run(["scores"], {"features": X, "fold": (fold + 1) % K})[0][:, 0]
    assert roc_auc_score(y, shifted) > 0.8


def test_apply_out_of_fold_vs_average(run: Path, samples: Path, tmp_path: Path) -> None:
    inputs = [str(samples / "signal.root")]
    assert main(["apply", str(run), *inputs, "--out", str(tmp_path / "o")]) == 0
    average = ["--out", str(tmp_path / "a"), "--folds", "average"]
    assert main(["apply", str(run), *inputs, *average]) == 0
    oof = read(tmp_path / "o" / "signal.noise.friend.root")["noise_score"]
    avg = read(tmp_path / "a" / "signal.noise.friend.root")["noise_score"]
    events = read(samples / "signal.root")
    model = Model.load(run, folds="average")
    np.testing.assert_array_equal(model.predict(events), avg)
    np.testing.assert_array_equal(Model.load(run).predict(events), oof)
    # the mean of the k models: k - 1 of them trained on each event, so it remembers them
    y = (events["MET_phi"] > 0).astype(int)
    assert roc_auc_score(y, avg) > roc_auc_score(y, oof) + 0.2
    # real data has no fold: without identifiers, out-of-fold is refused with the fix
    no_ids = {k: v for k, v in events.items() if k != "run"}
    with pytest.raises(SpecError, match=r"folds='average'"):
        Model.load(run).predict(no_ids)
    np.testing.assert_array_equal(model.predict(no_ids), avg)


def _features(spec: PipelineSpec, samples: Path, name: str) -> np.ndarray:
    source = read(samples / f"{name}.root")
    return np.stack([source["event"], source["luminosityBlock"], source["MET_pt"]], 1).astype(
        np.float32
    )
