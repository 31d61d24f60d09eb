"""``plots/curves.json``: the points of the ROC, score and loss curves, for interactive charts.

The PNG/PDF plots are for reading and for papers; the web UI draws its own zoomable charts
(and overlays several runs in its compare view) from this small file instead::

    {"version": 1,
     "task": "binary",
     "roc": [{"class": "signal", "split": "test", "auc": 0.93,
              "eff_s": [...], "eff_b": [...]}, ...],          # weighted, <= 201 points each
     "scores": [{"class": "signal", "split": "test", "score_of": "signal",
                 "edges": [...], "density": [...]}, ...],     # unit area, weighted
     "history": [{"epoch": 1, "train_loss": ..., "val_loss": ..., "val_auc": ...}, ...],
     # multiclass only: rows = true class, columns = predicted class (test split)
     "confusion": {"classes": [...], "fraction": [[...]], "weight": [[...]], "events": [[...]]},
     # regression only: the 2D histogram of regression.png, rows = bins of the truth
     "regression": {"definition": "ratio", "edges": [...], "counts": [[...]],
                    "bins": [{"low", "high", "n_events", "response", "resolution"}, ...]},
     "importance": {"metric": "auc", "features": [{"name", "importance", "std"}, ...]}}

``fraction`` is normalised by true class and weighted, as in confusion.png; ``weight`` the
summed event weights, ``events`` the event counts. ``counts`` are weighted events in
``REGRESSION_BINS`` x ``REGRESSION_BINS`` bins. At most ``MAX_CLASSES`` classes and
``MAX_IMPORTANCES`` features (the most important) are written.

A ROC is resampled on a grid of signal efficiencies (its lowest background efficiency at
each), so the file stays small (a few tens of kB) whatever the number of test events.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlaas4hep.train.atomic import atomic_write_text
from mlaas4hep.train.evaluate import (
    ScoreAccumulator,
    confusion_matrix,
    normalized_confusion,
    predicted_class,
)
from mlaas4hep.train.working_points import Roc, one_vs_rest

CURVES_FILE = "curves.json"
_ROC_POINTS = 200
_BINS = 40
REGRESSION_BINS = 60  # as regression.png
MAX_CLASSES = 32
MAX_IMPORTANCES = 30  # as permutation_importance.png


def write_curves(
    path: Path,
    history: Sequence[dict[str, Any]],
    train: ScoreAccumulator,
    test: ScoreAccumulator,
    class_names: Sequence[str],
    sections: Mapping[str, Any] | None = None,
) -> Path:
    """Write the curves of a run to *path* atomically; returns *path*.

    *sections*: the ``metrics.json`` sections of ``report.evaluate_run`` (``regression``,
    ``permutation_importance``), when computed."""
    doc = curves_document(history, train, test, class_names, sections)
    atomic_write_text(path, json.dumps(doc, separators=(",", ":")))
    return path


def curves_document(
    history: Sequence[dict[str, Any]],
    train: ScoreAccumulator,
    test: ScoreAccumulator,
    class_names: Sequence[str],
    sections: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The content of ``curves.json`` (module docstring)."""
    sections = sections or {}
    doc: dict[str, Any] = {
        "version": 1,
        "task": test.task,
        "roc": [],
        "scores": [],
        "history": [_finite(h) for h in history],
    }
    if "permutation_importance" in sections:
        doc["importance"] = importance_bars(sections["permutation_importance"])
    if test.n_events == 0:
        return doc
    if test.task == "regression":
        doc["regression"] = regression_map(test, sections.get("regression", {}))
        return doc
    if test.task == "multiclass" and test.n_classes <= MAX_CLASSES:
        doc["confusion"] = confusion_cells(test, class_names)
    for split, acc in (("test", test), ("train", train)):
        if acc.n_events == 0:
            continue
        s, y, w = acc.arrays()
        for name, roc in one_vs_rest(acc.task, s, y, w, class_names):
            if roc.defined:
                doc["roc"].append({"class": name, "split": split, **roc_points(roc)})
        doc["scores"] += _score_densities(acc, split, class_names)
    return doc


def roc_points(roc: Roc, n_points: int = _ROC_POINTS) -> dict[str, Any]:
    """``eff_s`` (0 to 1), ``eff_b`` at each, and the AUC of the full curve.

    ``eff_b`` is null where less than one (effective) background event passes, as in the
    ROC plot: there a rejection would only reflect the interpolation towards zero.
    """
    eff_s = np.linspace(0.0, 1.0, n_points + 1)
    eff_b = roc.eff_b_at_many(eff_s)
    eff_b = np.where(eff_b * roc.n_background >= 1.0, eff_b, np.nan)
    auc = float(np.trapezoid(roc.tpr, roc.fpr))
    return {"auc": _round(auc), "eff_s": _rounded(eff_s), "eff_b": _rounded(eff_b)}


def confusion_cells(test: ScoreAccumulator, class_names: Sequence[str]) -> dict[str, Any]:
    """The confusion matrix of the test split, as in confusion.png, with its counts."""
    s, y, w = test.arrays()
    k = test.n_classes
    pred = predicted_class(test.task, s)
    weight = confusion_matrix(y, pred, w, k)
    return {
        "classes": [_name(class_names, i) for i in range(k)],
        "fraction": _rounded_rows(normalized_confusion(weight)),
        "weight": _rounded_rows(weight),
        "events": confusion_matrix(y, pred, np.ones(len(y)), k).astype(np.int64).tolist(),
    }


def regression_map(test: ScoreAccumulator, report: Mapping[str, Any]) -> dict[str, Any]:
    """Prediction vs truth (regression.png's histogram) and the bins of *report*
    (``resolution.regression_report``: response and resolution vs truth)."""
    s, y, w = test.arrays()
    edges = regression_edges(s[:, 0], y)
    counts, _, _ = np.histogram2d(y, s[:, 0], bins=[edges, edges], weights=w)
    keys = ("low", "high", "response", "resolution")
    bins = [
        {
            "n_events": int(b["n_events"]),
            **{k: _round(b[k]) if b[k] is not None else None for k in keys},
        }
        for b in report.get("bins", [])
    ]
    return {
        "definition": str(report.get("definition", "")),
        "edges": _rounded(edges),
        "counts": _rounded_rows(counts),
        "bins": bins,
    }


def regression_edges(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``REGRESSION_BINS`` equal bins over the 0.1-99.9% range of predictions and truths."""
    both = np.r_[pred, truth]
    low, high = np.quantile(both, [0.001, 0.999]) if len(truth) else (0.0, 1.0)
    return np.linspace(low, high if high > low else low + 1, REGRESSION_BINS + 1)


def importance_bars(report: Mapping[str, Any]) -> dict[str, Any]:
    """The ``MAX_IMPORTANCES`` most important features of a permutation importance."""
    rows = list(report.get("features", []))[:MAX_IMPORTANCES]
    features = [
        {"name": str(r["name"]), "importance": _round(r["importance"]), "std": _round(r["std"])}
        for r in rows
    ]
    return {"metric": str(report.get("metric", "")), "features": features}


def _score_densities(
    acc: ScoreAccumulator, split: str, class_names: Sequence[str]
) -> list[dict[str, Any]]:
    s, y, w = acc.arrays()
    true = y.astype(np.int64)
    edges = np.linspace(0.0, 1.0, _BINS + 1)
    cols = [0] if acc.task == "binary" else list(range(s.shape[1]))
    out = []
    for col in cols:
        score_of = _name(class_names, 1 if acc.task == "binary" else col)
        for cls in range(acc.n_classes):
            sel = true == cls
            if not sel.any():
                continue
            h, _ = np.histogram(s[sel, col], bins=edges, weights=w[sel].astype(np.float64))
            area = float(np.sum(h) / _BINS)
            density = h / area if area > 0 else np.zeros_like(h)
            out.append(
                {
                    "class": _name(class_names, cls),
                    "split": split,
                    "score_of": score_of,
                    "edges": _rounded(edges),
                    "density": _rounded(density),
                }
            )
    return out


def _name(class_names: Sequence[str], k: int) -> str:
    return class_names[k] if k < len(class_names) else f"class {k}"


def _round(x: float) -> float | None:
    x = float(x)
    return float(f"{x:.5g}") if math.isfinite(x) else None


def _rounded(values: np.ndarray) -> list[float | None]:
    return [_round(float(v)) for v in values]


def _rounded_rows(values: np.ndarray) -> list[list[float | None]]:
    return [_rounded(row) for row in values]


def _finite(record: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        out[key] = _round(float(value))
    return out
