"""Overtraining check: Kolmogorov-Smirnov tests of train vs test score distributions.

Per true class, the score the model gives that class is compared between the train
sample (the bounded sample ``run.py`` keeps) and the test split: binary, the positive
class's probability for each of the two classes; multiclass, class ``k``'s probability
for the events of class ``k``; regression, the residual ``prediction - truth`` of all
events. A small p-value (say below 0.01 on large samples) means the model scores the
events it was trained on differently from unseen ones.

Two figures per test, in ``metrics.json`` → ``overtraining``:

* ``ks_pvalue``, ``ks_statistic``: ``scipy.stats.ks_2samp`` on the scores, unweighted
  (every event counts 1); this is the p-value shown in the plot legends.
* ``ks_pvalue_weighted``, ``ks_statistic_weighted``: the statistic is the largest
  distance between the two *weighted* empirical distribution functions; its p-value is
  the asymptotic Kolmogorov distribution SciPy's ``method="asymp"`` uses,
  ``kstwo.sf(D, round(n * m / (n + m)))``, with ``n`` and ``m`` the effective numbers of
  events ``(sum w)^2 / sum w^2``. With unit weights it equals
  ``ks_2samp(..., method="asymp")``. None when a side has no positive weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mlaas4hep.train.evaluate import ScoreAccumulator
from mlaas4hep.train.working_points import effective_count


def weighted_ks(
    a: np.ndarray, b: np.ndarray, wa: np.ndarray, wb: np.ndarray
) -> tuple[float, float | None]:
    """(statistic, p-value) of the weighted two-sample KS test (module docstring)."""
    from scipy.stats import kstwo  # type: ignore[import-untyped]  # no stubs shipped

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    wa, wb = np.asarray(wa, np.float64), np.asarray(wb, np.float64)
    if not (np.sum(wa) > 0 and np.sum(wb) > 0):
        return float("nan"), None
    points = np.concatenate([a, b])
    d = float(np.max(np.abs(_ecdf(a, wa, points) - _ecdf(b, wb, points))))
    n, m = effective_count(wa), effective_count(wb)
    en = max(1.0, float(np.round(n * m / (n + m))))
    return d, float(kstwo.sf(d, en))


def _ecdf(x: np.ndarray, w: np.ndarray, at: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    cum = np.r_[0.0, np.cumsum(w[order])] / np.sum(w)
    return np.asarray(cum[np.searchsorted(x[order], at, side="right")])


def ks_record(
    name: str, score: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]
) -> dict[str, Any]:
    """One test: (values, weights) of the train and test sides."""
    from scipy.stats import ks_2samp

    (a, wa), (b, wb) = train, test
    record: dict[str, Any] = {"class": name, "score": score, "n_train": len(a), "n_test": len(b)}
    if len(a) == 0 or len(b) == 0:
        return record | {"ks_statistic": None, "ks_pvalue": None,
                         "ks_statistic_weighted": None, "ks_pvalue_weighted": None}  # fmt: skip
    result = ks_2samp(a, b)
    d_w, p_w = weighted_ks(a, b, wa, wb)
    return record | {
        "ks_statistic": float(result.statistic),
        "ks_pvalue": float(result.pvalue),
        "ks_statistic_weighted": d_w,
        "ks_pvalue_weighted": p_w,
    }


def ks_tests(
    train: ScoreAccumulator, test: ScoreAccumulator, class_names: Sequence[str]
) -> list[dict[str, Any]]:
    """``metrics.json`` → ``overtraining`` → ``tests``: one record per class (module doc)."""
    s_tr, y_tr, w_tr = train.arrays()
    s_te, y_te, w_te = test.arrays()
    if test.task == "regression":
        return [
            ks_record(
                "all", "residual",
                (s_tr[:, 0] - y_tr, w_tr), (s_te[:, 0] - y_te, w_te),
            )
        ]  # fmt: skip
    out = []
    for cls in range(test.n_classes):
        col = 0 if test.task == "binary" else cls
        score = _name(class_names, 1 if test.task == "binary" else cls)
        tr, te = y_tr.astype(np.int64) == cls, y_te.astype(np.int64) == cls
        out.append(
            ks_record(
                _name(class_names, cls), score,
                (s_tr[tr, col], w_tr[tr]), (s_te[te, col], w_te[te]),
            )
        )  # fmt: skip
    return out


def _name(class_names: Sequence[str], k: int) -> str:
    return class_names[k] if k < len(class_names) else f"class {k}"
