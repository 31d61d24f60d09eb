"""Working points of a classifier, read off its ROC curve.

A working point is a cut on the score, ``score >= t``. Two families are reported, for
each class against the rest (binary: the positive class against class 0; multiclass:
each class's own probability, one-vs-rest):

* the signal efficiency ``eff_s`` at a fixed background efficiency ``eff_b`` of 10%, 1%
  and 0.1% (``EFF_B_TARGETS``), with the background rejection ``1 / eff_b``;
* the background efficiency at a fixed signal efficiency of 50%, 70% and 90%
  (``EFF_S_TARGETS``).

Interpolation: the ROC is the piecewise-linear curve through one point per distinct
score (``evaluate.roc_points``); between two points it is the efficiency of a cut that
takes a random fraction of the events at the looser threshold. ``eff_s`` at ``eff_b = x``
is that curve at ``x``, taking the highest ``eff_s`` where several points share
``eff_b = x``; ``eff_b`` at ``eff_s = y`` likewise takes the lowest ``eff_b``. (With
negative weights the cumulative efficiencies can dip; their running maximum is used.)
``threshold`` is a real cut: the loosest one whose ``eff_b`` does not exceed the target
(fixed ``eff_b``), or the tightest one whose ``eff_s`` reaches it (fixed ``eff_s``).

Too few events: an efficiency measured on fewer than ``MIN_EVENTS`` (10) events is noise
(30% relative uncertainty and more). A working point's value is ``None`` when fewer than
10 *expected background events pass the cut* (``eff_b * N_B < 10``), or fewer than 10
signal events (``eff_s * N_S < 10``), where ``N`` is the number of test events of that
class (unweighted figures) or Kish's effective number ``(sum w)^2 / sum w^2`` (weighted
figures). E.g. with 5,000 background events in the test split, ``eff_b = 0.1%`` (5
events) gives ``None``. ``background_events`` records ``eff_b * N_B`` for each point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlaas4hep.train.evaluate import Task, roc_points

EFF_B_TARGETS = (0.1, 0.01, 0.001)
EFF_S_TARGETS = (0.5, 0.7, 0.9)
MIN_EVENTS = 10.0


def effective_count(w: np.ndarray) -> float:
    """Kish's effective number of events ``(sum w)^2 / sum w^2`` (the count for unit weights)."""
    w = np.asarray(w, dtype=np.float64)
    sum_w2 = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / sum_w2 if sum_w2 > 0 else 0.0


@dataclass(frozen=True)
class Roc:
    """One ROC curve with the effective event counts of both sides."""

    fpr: np.ndarray  # background efficiency per point, from 0 to 1
    tpr: np.ndarray  # signal efficiency per point
    thresholds: np.ndarray  # point i selects score >= thresholds[i] (point 0: nothing)
    n_signal: float  # effective number of signal events
    n_background: float

    @classmethod
    def of(cls, score: np.ndarray, positive: np.ndarray, w: np.ndarray) -> Roc:
        """The ROC of *score* for *positive* (bool) events against the others."""
        positive = np.asarray(positive, dtype=bool)
        fpr, tpr, thresholds = roc_points(np.asarray(score), positive, np.asarray(w))
        fpr, tpr = np.maximum.accumulate(fpr), np.maximum.accumulate(tpr)
        return cls(
            fpr, tpr, thresholds, effective_count(w[positive]), effective_count(w[~positive])
        )

    @property
    def defined(self) -> bool:
        """Both classes present with positive weight."""
        return self.n_signal > 0 and self.n_background > 0 and self.fpr[-1] > 0

    def eff_s_at(self, eff_b: float) -> float:
        """Signal efficiency at background efficiency *eff_b* (highest on a vertical step)."""
        return float(self.eff_s_at_many(np.asarray([eff_b]))[0])

    def eff_b_at(self, eff_s: float) -> float:
        """Background efficiency at signal efficiency *eff_s* (lowest on a horizontal step)."""
        return float(self.eff_b_at_many(np.asarray([eff_s]))[0])

    def eff_s_at_many(self, eff_b: np.ndarray) -> np.ndarray:
        """``eff_s_at`` of each value of *eff_b*."""
        last = np.r_[np.nonzero(np.diff(self.fpr))[0], len(self.fpr) - 1]
        return np.asarray(np.interp(eff_b, self.fpr[last], self.tpr[last]))

    def eff_b_at_many(self, eff_s: np.ndarray) -> np.ndarray:
        """``eff_b_at`` of each value of *eff_s*."""
        first = np.r_[0, np.nonzero(np.diff(self.tpr))[0] + 1]
        return np.asarray(np.interp(eff_s, self.tpr[first], self.fpr[first]))

    def rejection_curve(self, n_points: int = 400) -> tuple[np.ndarray, np.ndarray]:
        """(eff_s, 1/eff_b) on a grid of *n_points* signal efficiencies, for plotting.

        Points where less than one (effective) background event passes are left out:
        there the rejection only reflects the interpolation towards ``eff_b = 0``.
        """
        eff_s = np.linspace(0.0, 1.0, n_points + 1)[1:]
        eff_b = self.eff_b_at_many(eff_s)
        keep = eff_b * self.n_background >= 1.0
        return eff_s[keep], 1.0 / eff_b[keep]


def working_points(roc: Roc, name: str) -> list[dict[str, Any]]:
    """The working points of one ROC (module docstring), ``name`` the signal class."""
    points = []
    for target in EFF_B_TARGETS:
        ok = roc.defined and target * roc.n_background >= MIN_EVENTS
        eff_s = roc.eff_s_at(target) if ok else None
        if eff_s is not None and eff_s * roc.n_signal < MIN_EVENTS:
            eff_s = None
        points.append(_point(name, "eff_b", target, eff_s, target, roc))
    for target in EFF_S_TARGETS:
        ok = roc.defined and target * roc.n_signal >= MIN_EVENTS
        eff_b = roc.eff_b_at(target) if ok else None
        if eff_b is not None and eff_b * roc.n_background < MIN_EVENTS:
            eff_b = None
        points.append(_point(name, "eff_s", target, target, eff_b, roc))
    return points


def _point(
    name: str, fixed: str, target: float, eff_s: float | None, eff_b: float | None, roc: Roc
) -> dict[str, Any]:
    return {
        "class": name,
        "fixed": fixed,
        "target": target,
        "eff_s": eff_s,
        "eff_b": eff_b,
        "rejection": 1.0 / eff_b if eff_b else None,
        "threshold": _threshold(roc, fixed, target) if None not in (eff_s, eff_b) else None,
        "background_events": eff_b * roc.n_background if eff_b is not None else None,
    }


def _threshold(roc: Roc, fixed: str, target: float) -> float | None:
    if not roc.defined:
        return None
    if fixed == "eff_b":
        index = int(np.searchsorted(roc.fpr, target, side="right")) - 1  # last fpr <= target
    else:
        index = int(np.searchsorted(roc.tpr, target, side="left"))  # first tpr >= target
    if not 0 <= index < len(roc.thresholds) or not np.isfinite(roc.thresholds[index]):
        return None
    return float(roc.thresholds[index])


def one_vs_rest(
    task: Task, scores: np.ndarray, y: np.ndarray, w: np.ndarray, class_names: Sequence[str]
) -> list[tuple[str, Roc]]:
    """(class name, ROC) per signal class: class 1 for binary, every class for multiclass."""
    true = np.asarray(y).astype(np.int64)
    if task == "binary":
        return [(_name(class_names, 1), Roc.of(scores[:, 0], true == 1, w))]
    return [
        (_name(class_names, k), Roc.of(scores[:, k], true == k, w)) for k in range(scores.shape[1])
    ]


def all_working_points(
    task: Task, scores: np.ndarray, y: np.ndarray, w: np.ndarray, class_names: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """``metrics.json`` → ``working_points``: ``weighted`` and ``unweighted`` lists."""
    out: dict[str, list[dict[str, Any]]] = {}
    for key, ww in (("weighted", w), ("unweighted", np.ones(len(y)))):
        out[key] = [
            p
            for name, roc in one_vs_rest(task, scores, y, ww, class_names)
            for p in working_points(roc, name)
        ]
    return out


def _name(class_names: Sequence[str], k: int) -> str:
    return class_names[k] if k < len(class_names) else f"class {k}"
