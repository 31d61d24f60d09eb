"""Each engine learns the synthetic sample and exports a faithful ONNX model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from mlaas4hep.errors import SpecError, TrainingError
from mlaas4hep.train.engine import engine_class
from mlaas4hep.train.export import PARITY_TOLERANCE
from mlaas4hep.train.run import run_source

from .conftest import make_spec
from .fakes import NAMES, FakeSource

ENGINES: dict[str, dict[str, Any]] = {
    "mlp": {"kind": "mlp", "hidden": [32, 16], "batch_norm": True, "dropout": 0.1},
    "xgboost": {"kind": "xgboost", "n_estimators": 30, "max_depth": 3},
    "sgd": {"kind": "sgd", "alpha": 1e-4},
}


@pytest.mark.parametrize("kind", list(ENGINES))
def test_engine_learns_binary_and_exports_with_parity(kind: str, tmp_path: Path) -> None:
    source = FakeSource()
    result = run_source(make_spec(ENGINES[kind]), source, tmp_path)
    m = result.metrics
    assert m["test"]["auc"] >= 0.8
    assert m["onnx"]["max_abs_diff"] < PARITY_TOLERANCE
    assert m["onnx"]["events_compared"] == m["test"]["n_events"] > 1000
    for name in ("model.onnx", "spec.yaml", "features.json", "stats.json", "metrics.json"):
        assert (tmp_path / name).is_file(), name
    assert {p.name for p in result.plots} >= {"roc.png", "scores.png", "history.png"}
    assert "## How to query it" in (tmp_path / "README.md").read_text()
    assert json.loads((tmp_path / "features.json").read_text())["features"] == list(NAMES)


@pytest.mark.parametrize("kind", ["mlp", "xgboost", "sgd"])
def test_onnx_takes_raw_features_with_any_batch_size(kind: str, tmp_path: Path) -> None:
    source = FakeSource(events=3000)
    run_source(make_spec(ENGINES[kind], epochs=1), source, tmp_path)
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    assert json.loads(meta["mlaas4hep.features"]) == list(NAMES)
    X = next(source.batches("test")).X
    for n in (1, 7, len(X)):
        (scores,) = sess.run(["scores"], {"features": X[:n]})
        assert scores.shape == (n, 1)
        assert np.all((scores >= 0) & (scores <= 1))


@pytest.mark.parametrize("kind", ["mlp", "xgboost", "sgd"])
def test_engine_learns_multiclass(kind: str, tmp_path: Path) -> None:
    source = FakeSource(task="multiclass", n_classes=3)
    result = run_source(make_spec(ENGINES[kind]), source, tmp_path)
    test = result.metrics["test"]
    assert len(test["auc_per_class"]) == 3
    assert test["auc"] >= (0.8 if kind != "sgd" else 0.7)  # a linear model separates less
    assert np.asarray(test["confusion_matrix"]).shape == (3, 3)
    assert result.metrics["onnx"]["max_abs_diff"] < PARITY_TOLERANCE


@pytest.mark.parametrize(
    "model", [ENGINES["mlp"], ENGINES["xgboost"], {"kind": "sgd", "loss": "squared_error"}]
)
def test_engine_learns_regression(model: dict[str, Any], tmp_path: Path) -> None:
    source = FakeSource(task="regression")
    result = run_source(make_spec(model), source, tmp_path)
    y = np.concatenate([b.y for b in source.batches("test")])
    assert result.metrics["test"]["rmse"] < 0.6 * float(y.std())  # clearly better than the mean
    assert result.metrics["onnx"]["max_abs_diff"] < PARITY_TOLERANCE


def test_unknown_engine_lists_the_known_ones() -> None:
    known = r"available: 'deepsets', 'mlp', 'python', 'sgd', 'transformer', 'xgboost'"
    with pytest.raises(SpecError, match=known):
        engine_class("lightgbm")


def test_sgd_without_probabilities_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match=r"'hinge'.*'log_loss', 'modified_huber'"):
        run_source(make_spec({"kind": "sgd", "loss": "hinge"}), FakeSource(), tmp_path)


def test_feature_importances_are_plotted_for_trees(tmp_path: Path) -> None:
    result = run_source(make_spec(ENGINES["xgboost"], epochs=1), FakeSource(), tmp_path)
    assert (tmp_path / "plots" / "importance.png").stat().st_size > 1000
    assert result.metrics["has_importances"]
