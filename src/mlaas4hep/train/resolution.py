"""Response and resolution of a regression, overall and in bins of the true value.

The HEP convention of energy and momentum regressions (e.g. jet energy scale and
resolution), robust against non-Gaussian tails:

* ``ratio`` definition, used when every true value of the test split is positive:
  ``R = prediction / truth``; response = median of ``R``; resolution = half the width
  between the 16% and 84% quantiles of ``R``, divided by the median (a relative
  resolution, corrected for the response; a Gaussian of width sigma gives sigma).
* ``difference`` definition, otherwise (targets that can be 0 or negative):
  ``D = prediction - truth``; response (bias) = median of ``D``; resolution = half the
  16-84% width of ``D``, in the target's unit.

Quantiles are weighted (``weighted_quantile``: the midpoint rule, which for unit weights
is NumPy's ``method="hazen"``; negative weights count as 0, a quantile being undefined
with them); the ``*_unweighted`` figures count every event once. Bins: up to
``N_BINS`` (10) bins of the true value holding equal numbers of test events; a bin with
fewer than ``MIN_BIN_EVENTS`` (20) events gets ``None``.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

import numpy as np

N_BINS = 10
MIN_BIN_EVENTS = 20
Definition = Literal["ratio", "difference"]


def weighted_quantile(x: np.ndarray, w: np.ndarray, q: np.ndarray | float) -> np.ndarray:
    """Quantiles *q* (in [0, 1]) of *x* with weights *w* (module docstring)."""
    x, w = np.asarray(x, np.float64), np.clip(np.asarray(w, np.float64), 0.0, None)
    order = np.argsort(x, kind="stable")
    xs, ws = x[order], w[order]
    total = float(np.sum(ws))
    if len(xs) == 0 or total <= 0:
        return np.full(np.shape(q), np.nan)
    keep = ws > 0
    xs, ws = xs[keep], ws[keep]
    position = (np.cumsum(ws) - 0.5 * ws) / total
    return np.asarray(np.interp(q, position, xs))


def definition_for(truth: np.ndarray) -> Definition:
    """``ratio`` when every true value is positive, else ``difference``."""
    return "ratio" if len(truth) and bool(np.all(np.asarray(truth) > 0)) else "difference"


def response_resolution(
    pred: np.ndarray, truth: np.ndarray, w: np.ndarray, definition: Definition
) -> tuple[float | None, float | None]:
    """(response, resolution) of these events (module docstring); None when empty."""
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    if len(pred) == 0:
        return None, None
    value = pred / truth if definition == "ratio" else pred - truth
    q16, q50, q84 = weighted_quantile(value, w, np.array([0.16, 0.5, 0.84]))
    if not np.isfinite(q50):
        return None, None
    width = 0.5 * (q84 - q16)
    if definition == "ratio":
        return float(q50), float(width / q50) if q50 != 0 else None
    return float(q50), float(width)


def regression_report(pred: np.ndarray, truth: np.ndarray, w: np.ndarray) -> dict[str, Any]:
    """``metrics.json`` → ``regression``: the definition, overall figures and the bins."""
    pred, truth = np.asarray(pred, np.float64).reshape(-1), np.asarray(truth, np.float64)
    ones = np.ones(len(truth))
    definition = definition_for(truth)
    out: dict[str, Any] = {"definition": definition}
    for suffix, ww in (("", w), ("_unweighted", ones)):
        response, resolution = response_resolution(pred, truth, ww, definition)
        out[f"response{suffix}"], out[f"resolution{suffix}"] = response, resolution
    if len(truth) == 0:
        return out | {"bins": []}
    edges: np.ndarray = np.unique(np.quantile(truth, np.linspace(0, 1, N_BINS + 1)))
    bins = []
    for i, (low, high) in enumerate(itertools.pairwise(edges)):
        last = i == len(edges) - 2
        sel = (truth >= low) & ((truth <= high) if last else (truth < high))
        row: dict[str, Any] = {"low": float(low), "high": float(high), "n_events": int(sel.sum())}
        for suffix, ww in (("", w), ("_unweighted", ones)):
            r, s = (None, None)
            if row["n_events"] >= MIN_BIN_EVENTS:
                r, s = response_resolution(pred[sel], truth[sel], ww[sel], definition)
            row[f"response{suffix}"], row[f"resolution{suffix}"] = r, s
        bins.append(row)
    out["bins"] = bins
    return out
