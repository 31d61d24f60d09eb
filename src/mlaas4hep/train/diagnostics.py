"""Warnings about a finished run: under-training and class imbalance (docs/training.md).

Pure functions of what the run recorded (the per-epoch history, the train sample's labels
and weights), so they are tested without training anything. ``run_warnings`` returns the
``warnings`` list of ``metrics.json``; each entry has a machine-readable ``code``, a
``message`` for humans (what was seen, what to do) and the numbers behind it in
``details``. The same entries are printed by ``mlaas4hep run`` and listed in the model card.

Under-training (``undertrained``), for engines trained in epochs (MLP, user models, SGD;
XGBoost, whose epoch is a block of ``ceil(n_estimators / epochs)`` boosting rounds):

- the run used its whole epoch budget (``train.epochs``) and early stopping never fired;
- the monitored metric is the validation AUC (higher is better) when every epoch has a
  finite one, else the validation loss (lower is better); without a validation split the
  rule does not apply;
- with the window ``K = max(2, ceil(0.1 * train.epochs))`` and at least one epoch before
  it, the best value of the last ``K`` epochs beats the best value of all earlier epochs
  by more than ``MIN_AUC_GAIN`` (absolute AUC) or ``MIN_LOSS_GAIN`` (relative loss).

Class imbalance (``class_imbalance``), for classification without ``preprocess.balance``:
the smallest class carries less than ``IMBALANCE_FRACTION`` of the training weight a
balanced sample would give it (``share * n_classes < 0.2``: below 10% for two classes,
e.g. 92/8). Weights count as the loss sees them, so event weights that even out the
classes raise no warning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mlaas4hep.train.evaluate import class_count

if TYPE_CHECKING:
    from mlaas4hep.preprocess.pipeline import FeatureInfo
    from mlaas4hep.spec import PipelineSpec
    from mlaas4hep.train.checkpoint import LoopState
    from mlaas4hep.train.evaluate import ScoreAccumulator

UNDERTRAINED = "undertrained"
CLASS_IMBALANCE = "class_imbalance"
MIN_AUC_GAIN = 1e-3  # absolute, in AUC
MIN_LOSS_GAIN = 1e-3  # relative to the earlier best loss
IMBALANCE_FRACTION = 0.2  # of the balanced share 1 / n_classes
_WINDOW_FRACTION = 0.1
_MIN_WINDOW = 2


@dataclass(frozen=True)
class RunWarning:
    """One warning: ``code`` for programs, ``message`` for people, ``details`` the numbers."""

    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": dict(self.details)}


def run_warnings(
    spec: PipelineSpec, info: FeatureInfo, state: LoopState, train: ScoreAccumulator
) -> list[dict[str, Any]]:
    """The ``warnings`` list of ``metrics.json`` for a finished run (may be empty).

    *state*: the training loop's final state (history, early stop); *train*: the scores
    of the train sample, whose labels and weights (balancing included) are checked.
    """
    if spec.model.kind == "xgboost":
        hint = "raise model.n_estimators (each epoch adds ceil(n_estimators / epochs) rounds)"
    else:
        hint = "raise train.epochs"
    found = [
        undertraining(
            state.history, epochs=spec.train.epochs, stopped_early=state.stopped_early, hint=hint
        )
    ]
    if info.task != "regression" and not spec.preprocess.balance:
        _, y, w = train.arrays()
        n_classes = class_count(info.task, info.n_classes)
        found.append(class_imbalance(y, w, info.class_names, n_classes))
    return [f.to_dict() for f in found if f is not None]


def window(epochs: int) -> int:
    """The number of last epochs the under-training rule looks at: max(2, 10% of epochs)."""
    return max(_MIN_WINDOW, math.ceil(_WINDOW_FRACTION * epochs))


def undertraining(
    history: Sequence[dict[str, Any]],
    *,
    epochs: int,
    stopped_early: bool,
    hint: str = "raise train.epochs",
) -> RunWarning | None:
    """The ``undertrained`` warning when the metric still improved at the end (module doc).

    *history*: the per-epoch records of ``metrics.json``; *epochs*: the budget
    (``train.epochs``); *hint*: what to raise, named in the message. None when the rule
    does not fire or does not apply (early stop, budget not used up, too few epochs, no
    validation metric).
    """
    k = window(epochs)
    if stopped_early or len(history) < epochs or len(history) <= k:
        return None
    metric = _monitored(history)
    if metric is None:
        return None
    values = np.array([float(r[metric]) for r in history])
    higher = metric == "val_auc"
    before, last = values[:-k], values[-k:]
    if higher:
        best_before, best_last = float(before.max()), float(last.max())
        gain = best_last - best_before
        enough = gain > MIN_AUC_GAIN
    else:
        best_before, best_last = float(before.min()), float(last.min())
        gain = (best_before - best_last) / max(abs(best_before), 1e-12)
        enough = gain > MIN_LOSS_GAIN
    if not enough:
        return None
    best_epoch = int(history[int(np.argmax(values) if higher else np.argmin(values))]["epoch"])
    what = "validation AUC" if higher else "validation loss"
    change = f"{best_before:.4g} -> {best_last:.4g}"
    message = (
        f"the {what} was still improving when the epoch budget ran out ({change} over the "
        f"last {k} of {len(history)} epochs, best epoch {best_epoch}; early stopping never "
        f"fired): the model is probably under-trained; {hint} and train again"
    )
    details = {
        "metric": metric, "window": k, "epochs_run": len(history), "best_epoch": best_epoch,
        "best_before_window": best_before, "best_in_window": best_last,
        "gain": gain, "relative": not higher,
    }  # fmt: skip
    return RunWarning(UNDERTRAINED, message, details)


def _monitored(history: Sequence[dict[str, Any]]) -> str | None:
    for key in ("val_auc", "val_loss"):
        values = [r.get(key) for r in history]
        if all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            return key
    return None


def class_imbalance(
    y: np.ndarray, w: np.ndarray, class_names: Sequence[str], n_classes: int
) -> RunWarning | None:
    """The ``class_imbalance`` warning for training labels *y* and loss weights *w*.

    *n_classes*: 2 for binary. None when the smallest class has at least
    ``IMBALANCE_FRACTION / n_classes`` of the total weight, or when there is no weight.
    """
    labels = np.asarray(y).astype(np.int64)
    weights = np.asarray(w, dtype=np.float64)
    if len(labels) == 0 or n_classes < 2:
        return None
    sums = np.bincount(labels, weights=weights, minlength=n_classes)[:n_classes]
    counts = np.bincount(labels, minlength=n_classes)[:n_classes]
    total = float(sums.sum())
    if not total > 0:
        return None
    shares = sums / total
    smallest = int(np.argmin(shares))
    if shares[smallest] * n_classes >= IMBALANCE_FRACTION:
        return None
    names = [class_names[i] if i < len(class_names) else f"class {i}" for i in range(n_classes)]
    split = " / ".join(f"{n} {100 * s:.1f}%" for n, s in zip(names, shares, strict=True))
    message = (
        f"the classes are strongly imbalanced in the training data after the cuts ({split} "
        f"of the training weight): the model may learn to ignore {names[smallest]!r}; set "
        "preprocess.balance: true (or weights that even out the classes) and train again"
    )
    details = {
        "classes": names,
        "weight_shares": [float(s) for s in shares],
        "events": [int(c) for c in counts],
        "threshold": IMBALANCE_FRACTION / n_classes,
    }
    return RunWarning(CLASS_IMBALANCE, message, details)
