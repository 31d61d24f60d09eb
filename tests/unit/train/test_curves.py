"""``plots/curves.json``: the ROC points against scikit-learn, the score densities, the
history, on fixed data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from mlaas4hep.train.curves import curves_document, write_curves
from mlaas4hep.train.evaluate import ScoreAccumulator


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
