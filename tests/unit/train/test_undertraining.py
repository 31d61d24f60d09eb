"""Run warnings: under-training and class imbalance, in metrics.json, the card and the CLI.

The rules are pure functions of the history and the training labels (tested on made-up
numbers first); then real runs on the fake source show where the warnings end up.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlaas4hep.preprocess.pipeline import FeatureBatch
from mlaas4hep.train.diagnostics import (
    CLASS_IMBALANCE,
    UNDERTRAINED,
    class_imbalance,
    undertraining,
    window,
)
from mlaas4hep.train.progress import Progress
from mlaas4hep.train.run import RunResult, run_source

from .conftest import make_spec
from .fakes import FakeSource


def history(values: list[float], key: str = "val_auc") -> list[dict[str, Any]]:
    return [{"epoch": i + 1, "train_loss": 0.5, key: v} for i, v in enumerate(values)]


STEADY = [0.70, 0.75, 0.79, 0.82, 0.84, 0.86]


@pytest.mark.parametrize(("epochs", "k"), [(1, 2), (5, 2), (20, 2), (21, 3), (100, 10)])
def test_window_is_max_of_two_and_ten_percent(epochs: int, k: int) -> None:
    assert window(epochs) == k


def test_a_still_rising_auc_at_the_end_of_the_budget_warns() -> None:
    found = undertraining(history(STEADY), epochs=6, stopped_early=False)
    assert found is not None
    assert found.code == UNDERTRAINED
    assert found.details["metric"] == "val_auc"
    assert found.details["window"] == 2
    assert found.details["best_epoch"] == 6
    assert found.details["gain"] == pytest.approx(0.86 - 0.82)
    assert "raise train.epochs" in found.message
    assert "0.82 -> 0.86" in found.message


@pytest.mark.parametrize(
    ("values", "epochs", "stopped_early", "why"),
    [
        (STEADY, 6, True, "early stopping fired"),
        (STEADY[:4], 6, False, "the budget was not used up"),
        (STEADY[:2], 2, False, "no epoch before the window"),
        ([0.70, 0.80, 0.85, 0.8505, 0.8508], 5, False, "gain below the threshold"),
        ([0.70, 0.86, 0.85, 0.84, 0.85], 5, False, "best epoch before the window"),
        ([0.70, 0.80, float("nan"), 0.82], 4, False, "no finite AUC, and no val_loss"),
    ],
)
def test_no_warning_when_the_rule_does_not_fire(
    values: list[float], epochs: int, stopped_early: bool, why: str
) -> None:
    assert undertraining(history(values), epochs=epochs, stopped_early=stopped_early) is None, why


def test_the_validation_loss_is_used_without_auc_relative_threshold() -> None:
    falling = history([2.0, 1.5, 1.2, 1.0, 0.9], key="val_loss")
    found = undertraining(falling, epochs=5, stopped_early=False, hint="raise model.n_estimators")
    assert found is not None
    assert found.details["metric"] == "val_loss"
    assert found.details["gain"] == pytest.approx((1.2 - 0.9) / 1.2)
    assert "raise model.n_estimators" in found.message
    flat = history([2.0, 1.0, 1.0, 0.9995, 0.9994], key="val_loss")  # 0.06% better: converged
    assert undertraining(flat, epochs=5, stopped_early=False) is None
    no_validation = [{"epoch": i + 1, "train_loss": 1.0 / (i + 1)} for i in range(5)]
    assert undertraining(no_validation, epochs=5, stopped_early=False) is None


def test_class_imbalance_rule() -> None:
    y = np.r_[np.zeros(920), np.ones(80)]
    w = np.ones(1000)
    found = class_imbalance(y, w, ("background", "signal"), 2)
    assert found is not None
    assert found.code == CLASS_IMBALANCE
    assert found.details["weight_shares"] == pytest.approx([0.92, 0.08])
    assert found.details["events"] == [920, 80]
    assert "background 92.0% / signal 8.0%" in found.message
    assert "preprocess.balance: true" in found.message
    assert class_imbalance(y[:0], w[:0], ("b", "s"), 2) is None  # nothing to judge
    assert class_imbalance(np.r_[np.zeros(850), np.ones(150)], w, ("b", "s"), 2) is None
    evened = np.where(y == 1, 11.5, 1.0)  # weights that even the classes out: no warning
    assert class_imbalance(y, evened, ("b", "s"), 2) is None
    three = np.r_[np.zeros(480), np.ones(480), np.full(40, 2)]  # 4% < 0.2 / 3
    found = class_imbalance(three, w, ("a", "b", "c"), 3)
    assert found is not None
    assert "'c'" in found.message


# ---------------------------------------------------------------------------------------
# real runs


def run(
    tmp_path: Path, model: dict[str, Any], source: FakeSource | None = None, **train: Any
) -> tuple[RunResult, list[Progress]]:
    seen: list[Progress] = []
    spec = make_spec(model, **train)
    result = run_source(spec, source or FakeSource(), tmp_path, progress=seen.append)
    return result, seen


def written(tmp_path: Path) -> tuple[list[dict[str, Any]], str]:
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    return metrics["warnings"], (tmp_path / "README.md").read_text()


def test_too_few_epochs_on_a_rising_curve_warn_everywhere(tmp_path: Path) -> None:
    result, seen = run(tmp_path, {"kind": "mlp", "hidden": [8]}, epochs=5, lr=3e-4,
                       early_stopping=None)  # fmt: skip
    aucs = [r["val_auc"] for r in result.history]
    assert aucs == sorted(aucs)  # steadily improving
    warnings, card = written(tmp_path)
    assert [w["code"] for w in warnings] == [UNDERTRAINED]
    assert warnings[0]["details"]["epochs_run"] == 5
    assert "## Warnings" in card
    assert f"**{UNDERTRAINED}**" in card
    assert warnings[0]["message"] in card
    shown = [p.message for p in seen if p.message.startswith("warning: ")]
    assert shown == [f"warning: {warnings[0]['message']}"]  # what `mlaas4hep run` prints


def test_a_converged_run_that_stopped_early_has_no_warning(tmp_path: Path) -> None:
    result, seen = run(tmp_path, {"kind": "mlp", "hidden": [16]}, epochs=30, lr=1e-2,
                       early_stopping=2)  # fmt: skip
    assert result.metrics["training"]["stopped_early"]
    warnings, card = written(tmp_path)
    assert warnings == []
    assert "## Warnings" not in card
    assert not [p for p in seen if p.message.startswith("warning: ")]


def test_xgboost_with_every_round_still_improving_warns(tmp_path: Path) -> None:
    model = {"kind": "xgboost", "n_estimators": 6, "max_depth": 1, "learning_rate": 0.3}
    result, _ = run(tmp_path, model, epochs=6, early_stopping=None)
    warnings, card = written(tmp_path)
    assert [w["code"] for w in warnings] == [UNDERTRAINED]
    assert "raise model.n_estimators" in warnings[0]["message"]
    assert warnings[0]["details"]["best_epoch"] == 6  # the last block of rounds is the best
    assert result.metrics["training"]["epochs_run"] == 6  # every round used
    assert warnings[0]["message"] in card


@dataclass
class ImbalancedSource(FakeSource):
    """The fake source with about 92% background and 8% signal after "cuts"."""

    def batches(
        self, split: str | None = None, *, shuffle: bool = False, seed: int = 0
    ) -> Iterator[FeatureBatch]:
        for b in super().batches(split, shuffle=shuffle, seed=seed):
            # keep 1 signal event in 11: 50/50 becomes about 92/8
            keep = (b.y == 0) | (np.arange(len(b.y)) % 11 == 0)
            yield FeatureBatch(b.X[keep], b.y[keep], b.w[keep], b.split[keep])


@pytest.mark.parametrize("balance", [False, True])
def test_imbalanced_classes_warn_unless_balanced(tmp_path: Path, balance: bool) -> None:
    spec = make_spec({"kind": "sgd"}, epochs=2)
    raw = spec.model_dump(mode="json")
    raw["preprocess"]["balance"] = balance
    seen: list[Progress] = []
    run_source(type(spec).model_validate(raw), ImbalancedSource(), tmp_path,
               progress=seen.append)  # fmt: skip
    warnings, card = written(tmp_path)
    codes = [w["code"] for w in warnings]
    if balance:
        assert CLASS_IMBALANCE not in codes
        return
    assert codes == [CLASS_IMBALANCE]
    shares = warnings[0]["details"]["weight_shares"]
    assert 0.05 < shares[1] < 0.1
    assert shares[0] + shares[1] == pytest.approx(1)
    assert "## Warnings" in card
    assert f"**{CLASS_IMBALANCE}**" in card
    assert any(p.message.startswith("warning: the classes are strongly") for p in seen)
