"""Metrics of a model's scores: loss, accuracy, ROC AUC, confusion matrix.

Pure numpy, weighted by the event weights (as the loss sees them: event weights times the
class-balancing factors of ``preprocess.balance``), so the numbers match what a physicist
would compute on the same events; each headline figure also comes unweighted
(``auc_unweighted``, ...: every event counts 1). Scores are what the exported model
returns: a probability column for ``binary`` (shape ``(n, 1)``), one probability per class
for ``multiclass`` (``(n, k)``), the prediction for ``regression`` (``(n, 1)``).

``ScoreAccumulator`` collects scores batch by batch; it keeps one score row, one label and
one weight per event (tens of bytes per event, never the features), and turns them into a
``dict`` of metrics with ``metrics()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

Task = Literal["binary", "multiclass", "regression"]
FloatArray = npt.NDArray[np.floating]
_EPS = 1e-7


def loss(task: Task, scores: FloatArray, y: np.ndarray, w: np.ndarray) -> float:
    """Weighted mean loss: binary cross-entropy, categorical cross-entropy or squared error."""
    w = w.astype(np.float64)
    if task == "binary":
        p = np.clip(scores[:, 0].astype(np.float64), _EPS, 1 - _EPS)
        yy = y.astype(np.float64)
        per = -(yy * np.log(p) + (1 - yy) * np.log(1 - p))
    elif task == "multiclass":
        p = np.clip(scores[np.arange(len(y)), y.astype(np.int64)].astype(np.float64), _EPS, 1)
        per = -np.log(p)
    else:
        per = (scores[:, 0].astype(np.float64) - y.astype(np.float64)) ** 2
    return float(np.sum(w * per) / max(np.sum(w), _EPS))


def predicted_class(task: Task, scores: FloatArray) -> np.ndarray:
    """Class index per event: threshold 0.5 for binary, argmax for multiclass."""
    if task == "binary":
        out: np.ndarray = (scores[:, 0] >= 0.5).astype(np.int64)
        return out
    best: np.ndarray = np.argmax(scores, axis=1).astype(np.int64)
    return best


def roc_curve(
    score: np.ndarray, positive: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted ROC curve: (false positive rate, true positive rate), from (0, 0) to (1, 1).

    Events with equal scores are merged into one step, so the curve does not depend on the
    order of events.
    """
    fpr, tpr, _ = roc_points(score, positive, w)
    return fpr, tpr


def roc_points(
    score: np.ndarray, positive: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``roc_curve`` with the score cut of each point: (fpr, tpr, thresholds).

    Point ``i > 0`` selects the events with ``score >= thresholds[i]``; point 0 selects
    nothing (threshold ``+inf``). Like ``sklearn.metrics.roc_curve(...,
    drop_intermediate=False)``: one point per distinct score.
    """
    order = np.argsort(-score, kind="stable")
    s, pos, ww = score[order], positive[order].astype(bool), w[order].astype(np.float64)
    tp = np.cumsum(np.where(pos, ww, 0.0))
    fp = np.cumsum(np.where(pos, 0.0, ww))
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1] if len(s) else np.array([], int)
    tp, fp = np.r_[0.0, tp[last_of_tie]], np.r_[0.0, fp[last_of_tie]]
    tpr = tp / tp[-1] if tp[-1] > 0 else np.zeros_like(tp)
    fpr = fp / fp[-1] if fp[-1] > 0 else np.zeros_like(fp)
    thresholds = np.r_[np.inf, s[last_of_tie].astype(np.float64)]
    return fpr, tpr, thresholds


def roc_auc(score: np.ndarray, positive: np.ndarray, w: np.ndarray) -> float:
    """Weighted area under the ROC curve; NaN when one of the two classes is absent."""
    positive = positive.astype(bool)
    if positive.all() or not positive.any():
        return float("nan")
    fpr, tpr = roc_curve(score, positive, w)
    return float(np.trapezoid(tpr, fpr))


def confusion_matrix(
    true: np.ndarray, pred: np.ndarray, w: np.ndarray, n_classes: int
) -> np.ndarray:
    """Weighted confusion matrix, rows = true class, columns = predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=np.float64)
    np.add.at(cm, (true.astype(np.int64), pred.astype(np.int64)), w.astype(np.float64))
    return cm


def normalized_confusion(cm: np.ndarray) -> np.ndarray:
    """Each row (true class) divided by its sum: the fraction predicted as each class.

    A row with no weight stays 0.
    """
    cm = np.asarray(cm, dtype=np.float64)
    sums = cm.sum(axis=1, keepdims=True)
    out: np.ndarray = np.divide(cm, sums, out=np.zeros_like(cm), where=sums != 0)
    return out


def mean_auc(task: Task, scores: FloatArray, y: np.ndarray, w: np.ndarray, n_classes: int) -> float:
    """ROC AUC (binary) or the mean one-vs-rest AUC over classes (multiclass), weighted."""
    true = y.astype(np.int64)
    if task == "binary":
        return roc_auc(scores[:, 0], true == 1, w)
    per_class = [roc_auc(scores[:, k], true == k, w) for k in range(n_classes)]
    return float(np.nanmean(per_class)) if not np.all(np.isnan(per_class)) else np.nan


def classification_metrics(
    task: Task, scores: FloatArray, y: np.ndarray, w: np.ndarray, n_classes: int
) -> dict[str, object]:
    """Loss, accuracy, ROC AUC (one-vs-rest per class for multiclass) and confusion matrix.

    Weighted, and again with every event counting 1 (``*_unweighted``).
    """
    true = y.astype(np.int64)
    pred = predicted_class(task, scores)
    out: dict[str, object] = {}
    for suffix, ww in (("", w), ("_unweighted", np.ones(len(true)))):
        sum_w = max(float(np.sum(ww, dtype=np.float64)), _EPS)
        out[f"loss{suffix}"] = loss(task, scores, y, ww)
        out[f"accuracy{suffix}"] = float(np.sum(ww * (pred == true), dtype=np.float64) / sum_w)
        out[f"auc{suffix}"] = mean_auc(task, scores, y, ww, n_classes)
        if task == "multiclass":
            out[f"auc_per_class{suffix}"] = [
                roc_auc(scores[:, k], true == k, ww) for k in range(n_classes)
            ]
    out["confusion_matrix"] = confusion_matrix(true, pred, w, n_classes).tolist()
    return out


def regression_metrics(scores: FloatArray, y: np.ndarray, w: np.ndarray) -> dict[str, object]:
    """Mean squared error (as ``loss``), RMSE and mean absolute error; weighted and not."""
    out: dict[str, object] = {}
    diff = np.abs(scores[:, 0].astype(np.float64) - y.astype(np.float64))
    for suffix, ww in (("", w), ("_unweighted", np.ones(len(y)))):
        mse = loss("regression", scores, y, ww)
        mae = float(np.sum(ww * diff) / max(float(np.sum(ww, dtype=np.float64)), _EPS))
        out |= {f"loss{suffix}": mse, f"rmse{suffix}": float(np.sqrt(mse)), f"mae{suffix}": mae}
    return out


def class_count(task: str, n_classes: int) -> int:
    """Number of classes: 2 for binary (however the feature info counts it), else as given."""
    return 2 if task == "binary" else n_classes


@dataclass
class ScoreAccumulator:
    """Collects (scores, y, w) batch by batch and computes the metrics at the end.

    ``n_classes`` is the number of classes (2 for binary; any value given is replaced).
    """

    task: Task
    n_classes: int
    _scores: list[np.ndarray] = field(default_factory=list)
    _y: list[np.ndarray] = field(default_factory=list)
    _w: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.n_classes = class_count(self.task, self.n_classes)

    def add(self, scores: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        """Append one batch (scores of shape ``(n, k)``)."""
        self._scores.append(np.asarray(scores, dtype=np.float32).reshape(len(y), -1))
        self._y.append(np.asarray(y))
        self._w.append(np.asarray(w, dtype=np.float32))

    @property
    def n_events(self) -> int:
        """How many events were added."""
        return sum(len(y) for y in self._y)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All scores, labels and weights added so far, concatenated."""
        if not self._y:
            width = 1 if self.task != "multiclass" else self.n_classes
            return np.zeros((0, width), np.float32), np.zeros(0), np.zeros(0, np.float32)
        return np.concatenate(self._scores), np.concatenate(self._y), np.concatenate(self._w)

    def metrics(self) -> dict[str, object]:
        """Metrics of everything added; ``n_events`` and ``sum_weights`` included."""
        scores, y, w = self.arrays()
        base: dict[str, object] = {"n_events": len(y), "sum_weights": float(np.sum(w))}
        if len(y) == 0:
            return base
        if self.task == "regression":
            return base | regression_metrics(scores, y, w)
        return base | classification_metrics(self.task, scores, y, w, self.n_classes)
