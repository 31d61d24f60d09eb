"""``plots/curves.json``: the ROC points and confusion matrix against scikit-learn, the
regression histogram against NumPy, the score densities, the history, on fixed data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import roc_auc_score, roc_curve

from mlaas4hep.train.curves import (
    MAX_CLASSES,
    MAX_IMPORTANCES,
    REGRESSION_BINS,
    curves_document,
    write_curves,
)
from mlaas4hep.train.evaluate import ScoreAccumulator
from mlaas4hep.train.resolution import regression_report


def binary(n: int = 4000, seed: int = 3) -> ScoreAccumulator:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    score = np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0, 1)
    acc = ScoreAccumulator("binary", 2)
    acc.add(score[:, None], y, np.ones(n))
    return acc


def test_roc_points_lie_on_scikit_learns_curve() -> None:
    test = binary()
    doc = curves_document([], binary(seed=4), test, ["bkg", "sig"])
    (roc_test, roc_train) = doc["roc"]
    assert (roc_test["split"], roc_train["split"], roc_test["class"]) == ("test", "train", "sig")
    s, y, _ = test.arrays()
    assert roc_test["auc"] == pytest.approx(roc_auc_score(y, s[:, 0]), abs=1e-4)
    fpr, tpr, _ = roc_curve(y, s[:, 0], drop_intermediate=False)
    for eff_s, eff_b in zip(roc_test["eff_s"], roc_test["eff_b"], strict=True):
        if eff_b is None:
            assert eff_s < 0.5  # fewer than one background event passes there
            continue
        # On scikit-learn's curve: between its first point at the signal efficiency
        # below this one and its first point reaching it (the lowest eff_b of each step).
        reach = int(np.argmax(tpr >= eff_s - 1e-12))
        below = int(np.argmax(tpr >= tpr[max(reach - 1, 0)]))
        assert fpr[below] - 1e-4 <= eff_b <= fpr[reach] + 1e-4
    assert len(roc_test["eff_s"]) == 201


def test_score_densities_have_unit_area_and_history_is_kept(tmp_path: Path) -> None:
    history = [{"epoch": 1, "train_loss": 0.7, "val_loss": float("nan"), "note": "x"}]
    path = write_curves(tmp_path / "curves.json", history, binary(seed=5), binary(), ["b", "s"])
    doc = json.loads(path.read_text())
    tests = [d for d in doc["scores"] if d["split"] == "test"]
    assert [d["class"] for d in tests] == ["b", "s"]
    for d in tests:
        widths = np.diff(d["edges"])
        assert float(np.sum(np.asarray(d["density"]) * widths)) == pytest.approx(1.0, abs=1e-3)
    assert doc["history"] == [{"epoch": 1, "train_loss": 0.7, "val_loss": None}]


def test_regression_has_no_roc() -> None:
    acc = ScoreAccumulator("regression", 1)
    acc.add(np.ones((3, 1)), np.ones(3), np.ones(3))
    doc = curves_document([{"epoch": 1, "train_loss": 1.0}], acc, acc, [])
    assert (doc["roc"], doc["scores"], doc["task"]) == ([], [], "regression")


def three_class(n: int = 3000, seed: int = 7) -> ScoreAccumulator:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    logits = rng.normal(0, 1, (n, 3)) + 1.5 * np.eye(3)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    acc = ScoreAccumulator("multiclass", 3)
    acc.add(probs, y, rng.uniform(0.5, 2.0, n))
    return acc


def test_confusion_matches_scikit_learn() -> None:
    test = three_class()
    doc = curves_document([], three_class(seed=8), test, ["a", "b", "c"])
    cm = doc["confusion"]
    s, y, w = test.arrays()
    pred = np.argmax(s, axis=1)
    weighted = sk_confusion(y, pred, labels=[0, 1, 2], sample_weight=w)
    assert cm["classes"] == ["a", "b", "c"]
    assert cm["events"] == sk_confusion(y, pred, labels=[0, 1, 2]).tolist()
    np.testing.assert_allclose(cm["weight"], weighted, rtol=1e-4)
    expected = weighted / weighted.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(cm["fraction"], expected, rtol=1e-4)
    assert "regression" not in doc


def test_binary_has_no_confusion_and_too_many_classes_neither() -> None:
    assert "confusion" not in curves_document([], binary(), binary(), ["b", "s"])
    k = MAX_CLASSES + 1
    acc = ScoreAccumulator("multiclass", k)
    acc.add(np.eye(k), np.arange(k), np.ones(k))
    assert "confusion" not in curves_document([], acc, acc, [])


def regression(n: int = 5000, seed: int = 11) -> ScoreAccumulator:
    rng = np.random.default_rng(seed)
    truth = rng.exponential(50.0, n) + 5.0
    pred = truth * rng.normal(1.02, 0.1 + 0.001 * truth)
    acc = ScoreAccumulator("regression", 1)
    acc.add(pred[:, None], truth, rng.uniform(0.5, 1.5, n))
    return acc


def test_regression_histogram_and_bins_match_numpy(tmp_path: Path) -> None:
    test = regression()
    s, y, w = test.arrays()
    report = regression_report(s[:, 0], y, w)
    path = write_curves(tmp_path / "c.json", [], test, test, [], {"regression": report})
    reg = json.loads(path.read_text())["regression"]
    low, high = np.quantile(np.r_[s[:, 0], y], [0.001, 0.999])
    edges = np.linspace(low, high, REGRESSION_BINS + 1)
    counts, _, _ = np.histogram2d(y, s[:, 0], bins=[edges, edges], weights=w)
    np.testing.assert_allclose(reg["edges"], edges, rtol=1e-4)
    np.testing.assert_allclose(reg["counts"], counts, rtol=1e-4, atol=1e-6)
    assert np.asarray(reg["counts"]).shape == (REGRESSION_BINS, REGRESSION_BINS)
    assert reg["definition"] == "ratio"
    assert len(reg["bins"]) == len(report["bins"]) == 10
    for got, want in zip(reg["bins"], report["bins"], strict=True):
        assert got["n_events"] == want["n_events"]
        assert got["response"] == pytest.approx(want["response"], rel=1e-4)
        assert got["resolution"] == pytest.approx(want["resolution"], rel=1e-4)
    assert "confusion" not in json.loads(path.read_text())


def test_importance_keeps_the_most_important_rounded() -> None:
    rows = [{"name": f"f{i}", "importance": 1.0 / (i + 1), "std": float("nan")} for i in range(40)]
    report = {"metric": "auc", "features": rows}
    doc = curves_document([], binary(), binary(), ["b", "s"], {"permutation_importance": report})
    imp = doc["importance"]
    assert imp["metric"] == "auc"
    assert [f["name"] for f in imp["features"]] == [f"f{i}" for i in range(MAX_IMPORTANCES)]
    assert imp["features"][2] == {"name": "f2", "importance": 0.33333, "std": None}
    json.dumps(doc, allow_nan=False)  # strict JSON: no NaN reaches the file
