"""Plots of a run, PNG and PDF (matplotlib object API, Agg canvas, mplhep's CMS style).

No pyplot: figures are plain ``Figure`` objects, so nothing global is touched and plotting
is safe in worker threads. Each function writes ``NAME.png`` (what the UI shows) and
``NAME.pdf`` (for a paper) atomically and returns the PNG's path. Every plot carries the
"mlaas4hep" label and says on its top right which events and which weighting it shows.

* ``roc.png``: background rejection ``1/eff_b`` (log) vs signal efficiency, test and
  train, working points marked (one-vs-rest per class for multiclass).
* ``scores.png``, ``scores_log.png``: score distributions per true class, test (filled)
  vs train (points), normalised, with the KS p-value train vs test in the legend;
  regression: the residuals.
* ``confusion.png``: confusion matrix normalised by true class (multiclass).
* ``regression.png``: prediction vs truth, 2D histogram (regression).
* ``response.png``: response and resolution vs truth (regression).
* ``permutation_importance.png``: permutation importance, every engine.
* ``history.png``: train/validation loss and validation AUC per epoch.
* ``importance.png``: the model's own feature importances, when it has them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from mlaas4hep.train.atomic import temp_path_for
from mlaas4hep.train.curves import regression_edges
from mlaas4hep.train.evaluate import ScoreAccumulator, normalized_confusion
from mlaas4hep.train.working_points import EFF_B_TARGETS, MIN_EVENTS, Roc, one_vs_rest

_BINS = 40
_MAX_IMPORTANCES = 30
_LABEL = "mlaas4hep"
_FORMATS = ("png", "pdf")


@contextmanager
def _figure(
    path: Path, ncols: int = 1, *, note: str = "", height: float = 8.0
) -> Iterator[tuple[Any, Any]]:
    import matplotlib.style
    import mplhep
    from matplotlib.figure import Figure

    with matplotlib.style.context(mplhep.style.CMS):
        fig = Figure(figsize=(9 * ncols, height), layout="constrained")
        axes = fig.subplots(1, ncols, squeeze=False)[0]
        yield fig, axes
        for ax in axes:
            mplhep.label.exp_label(exp=_LABEL, llabel="", rlabel=note, ax=ax, fontsize=18)
        for fmt in _FORMATS:
            target = path.with_suffix(f".{fmt}")
            tmp = temp_path_for(target)
            try:
                fig.savefig(tmp, format=fmt, dpi=72)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)


def plot_roc(
    path: Path, test: ScoreAccumulator, class_names: Sequence[str], train: ScoreAccumulator
) -> Path:
    """Background rejection (log) vs signal efficiency, test (solid) and train (dashed).

    The working points at fixed background efficiency are marked on the test curve.
    """
    s_te, y_te, w_te = test.arrays()
    s_tr, y_tr, w_tr = train.arrays()
    tests = one_vs_rest(test.task, s_te, y_te, w_te, class_names)
    trains = dict(one_vs_rest(train.task, s_tr, y_tr, w_tr, class_names)) if len(y_tr) else {}
    with _figure(path, note="weighted") as (_, (ax,)):
        for i, (name, roc) in enumerate(tests):
            colour = f"C{i}"
            prefix = f"{name}: " if test.task != "binary" else ""
            _rejection(ax, roc, colour, "-", f"{prefix}test (AUC = {_auc(roc):.3f})")
            if name in trains:
                _rejection(
                    ax,
                    trains[name],
                    colour,
                    "--",
                    f"{prefix}train (AUC = {_auc(trains[name]):.3f})",
                )
            for target in EFF_B_TARGETS:  # the measurable working points
                if roc.defined and target * roc.n_background >= MIN_EVENTS:
                    ax.plot([roc.eff_s_at(target)], [1 / target], "o", color=colour, ms=7)
        grid = np.linspace(0.01, 1, 100)
        ax.plot(grid, 1 / grid, ls=":", color="grey", label="random")
        ax.set_yscale("log")
        ax.set(xlabel="signal efficiency $\\varepsilon_S$",
               ylabel="background rejection $1/\\varepsilon_B$", xlim=(0, 1))  # fmt: skip
        ax.set_ylim(bottom=1)
        dots = "dots: $\\varepsilon_B$ = 10%, 1%, 0.1%"
        ax.legend(loc="upper right", fontsize="small", title=dots, title_fontsize="x-small")
    return path


def _rejection(ax: Any, roc: Roc, colour: str, style: str, label: str) -> None:
    if not roc.defined:
        return
    eff_s, rejection = roc.rejection_curve()
    ax.plot(eff_s, rejection, ls=style, color=colour, label=label)


def _auc(roc: Roc) -> float:
    return float(np.trapezoid(roc.tpr, roc.fpr)) if roc.defined else float("nan")


def plot_scores(
    path: Path,
    train: ScoreAccumulator,
    test: ScoreAccumulator,
    class_names: Sequence[str],
    ks: Sequence[Mapping[str, Any]] = (),
    *,
    log: bool = False,
) -> Path:
    """Score distributions per true class, test (filled) vs train (points), unit area.

    *ks*: the ``overtraining.ks_tests`` records, whose p-values go in the legend.
    Regression: the residuals ``prediction - truth``.
    """
    pvalues = [r.get("ks_pvalue") for r in ks]
    if test.task == "regression":
        return _plot_residuals(path, train, test, pvalues[0] if pvalues else None, log)
    n_cols = 1 if test.task == "binary" else test.n_classes
    bins = np.linspace(0, 1, _BINS + 1)
    with _figure(path, n_cols, note="test vs train, weighted") as (_, axes):
        for col, ax in enumerate(axes):
            for cls in range(test.n_classes):
                p = pvalues[cls] if cls < len(pvalues) else None
                name = _name(class_names, cls)
                _overlay(
                    ax, train, test, col, cls, bins, name, p if _ks_shown(test, col, cls) else None
                )
            score_of = _name(class_names, 1 if test.task == "binary" else col)
            ax.set(xlabel=f"score ({score_of})", ylabel="normalised events", xlim=(0, 1))
            _finish_scale(ax, log)
            ax.legend(loc="upper center", fontsize="x-small", ncols=1)
    return path


def _ks_shown(test: ScoreAccumulator, col: int, cls: int) -> bool:
    # The KS test of class k is on its own score column (binary: the only column).
    return test.task == "binary" or col == cls


def _overlay(
    ax: Any,
    train: ScoreAccumulator,
    test: ScoreAccumulator,
    col: int,
    cls: int,
    bins: np.ndarray,
    name: str,
    pvalue: float | None,
    values: Any = None,
) -> None:
    """One class: test as a filled histogram, train as points with error bars."""
    colour = f"C{cls}"
    for acc, is_train in ((test, False), (train, True)):
        s, y, w = acc.arrays()
        sel = y.astype(np.int64) == cls if values is None else np.ones(len(y), bool)
        if not sel.any():
            continue
        x = s[sel, col] if values is None else values(s, y)[sel]
        h, err = _density(x, w[sel], bins)
        if is_train:
            centres = 0.5 * (bins[1:] + bins[:-1])
            label = f"{name} train" + (f" (KS p = {pvalue:.3g})" if pvalue is not None else "")
            ax.errorbar(centres, h, yerr=err, fmt="o", ms=5, color=colour, label=label)
        else:
            ax.stairs(h, bins, fill=True, alpha=0.35, color=colour, label=f"{name} test")


def _density(x: np.ndarray, w: np.ndarray, bins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Histogram normalised to unit area and its statistical error (sqrt of sum w^2)."""
    ww = w.astype(np.float64)
    h, _ = np.histogram(x, bins=bins, weights=ww)
    h2, _ = np.histogram(x, bins=bins, weights=ww * ww)
    area = float(np.sum(h * np.diff(bins)))
    if area <= 0:
        return np.zeros_like(h), np.zeros_like(h)
    return h / area, np.sqrt(h2) / area


def _finish_scale(ax: Any, log: bool) -> None:
    if log:
        ax.set_yscale("log")
        ax.set_ylim(bottom=1e-3)
    else:
        ax.set_ylim(bottom=0)


def _plot_residuals(
    path: Path, train: ScoreAccumulator, test: ScoreAccumulator, pvalue: float | None, log: bool
) -> Path:
    s, y, _ = test.arrays()
    residual = s[:, 0] - y
    low, high = np.quantile(residual, [0.005, 0.995]) if len(y) else (-1.0, 1.0)
    bins = np.linspace(low, high if high > low else low + 1, _BINS + 1)
    with _figure(path, note="test vs train, weighted") as (_, (ax,)):
        _overlay(ax, train, test, 0, 0, bins, "all", pvalue, values=lambda s, y: s[:, 0] - y)
        ax.set(xlabel="prediction - truth", ylabel="normalised events")
        _finish_scale(ax, log)
        ax.legend(loc="upper right", fontsize="small")
    return path


def plot_confusion(path: Path, test: ScoreAccumulator, class_names: Sequence[str]) -> Path:
    """Confusion matrix normalised by true class (each row sums to 1), weighted."""
    from mlaas4hep.train.evaluate import confusion_matrix, predicted_class

    s, y, w = test.arrays()
    k = test.n_classes
    cm = normalized_confusion(confusion_matrix(y, predicted_class(test.task, s), w, k))
    names = [_name(class_names, i) for i in range(k)]
    with _figure(path, note="test, weighted", height=8.5) as (fig, (ax,)):
        image = ax.imshow(cm, vmin=0, vmax=1, cmap="Blues")
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{cm[i, j]:.3f}", ha="center", va="center", fontsize="small",
                        color="white" if cm[i, j] > 0.5 else "black")  # fmt: skip
        ax.set_xticks(range(k), names, rotation=30, ha="right")
        ax.set_yticks(range(k), names)
        ax.minorticks_off()
        ax.set(xlabel="predicted class", ylabel="true class")
        fig.colorbar(image, ax=ax, label="fraction of the true class")
    return path


def plot_regression(path: Path, test: ScoreAccumulator) -> Path:
    """Prediction vs truth, 2D histogram (log colour scale), with the diagonal."""
    from matplotlib.colors import LogNorm

    s, y, w = test.arrays()
    edges = regression_edges(s[:, 0], y)
    low, high = float(edges[0]), float(edges[-1])
    h, _, _ = np.histogram2d(y, s[:, 0], bins=[edges, edges], weights=w)
    with _figure(path, note="test, weighted", height=8.5) as (fig, (ax,)):
        positive = h[h > 0]
        spread = positive.size and positive.max() > positive.min()
        norm = LogNorm(vmin=positive.min(), vmax=positive.max()) if spread else None
        mesh = ax.pcolormesh(edges, edges, np.where(h > 0, h, np.nan).T, norm=norm, cmap="viridis")
        ax.plot([low, high], [low, high], color="red", ls="--", label="prediction = truth")
        ax.set(xlabel="truth", ylabel="prediction")
        ax.legend(loc="upper left", fontsize="small")
        fig.colorbar(mesh, ax=ax, label="events")
    return path


def plot_response(path: Path, report: Mapping[str, Any]) -> Path:
    """Response and resolution per bin of the truth (``resolution.regression_report``)."""
    bins = [b for b in report.get("bins", []) if b.get("response") is not None]
    ratio = report.get("definition") == "ratio"
    centres = np.array([0.5 * (b["low"] + b["high"]) for b in bins])
    half = np.array([0.5 * (b["high"] - b["low"]) for b in bins])
    with _figure(path, 2, note="test, weighted") as (_, (left, right)):
        left.errorbar(centres, [b["response"] for b in bins], xerr=half, fmt="o", color="C0")
        left.axhline(1.0 if ratio else 0.0, color="grey", ls="--")
        left.set(
            xlabel="truth",
            ylabel="response: median "
            + ("prediction / truth" if ratio else "(prediction - truth)"),
        )
        right.errorbar(centres, [b["resolution"] for b in bins], xerr=half, fmt="o", color="C1")
        right.set(
            xlabel="truth",
            ylabel="resolution: " + ("$\\sigma_{68}$ / median" if ratio else "$\\sigma_{68}$"),
        )
        right.set_ylim(bottom=0)
    return path


def plot_permutation_importance(path: Path, report: Mapping[str, Any]) -> Path:
    """Horizontal bars with the spread over repeats, most important first (top 30)."""
    rows = list(report.get("features", []))[:_MAX_IMPORTANCES][::-1]
    what = "decrease of ROC AUC" if report.get("metric") == "auc" else "increase of MSE"
    note = f"{report.get('events', 0):,} test events, weighted"
    with _figure(path, note=note, height=max(5.0, 0.4 * len(rows) + 2.5)) as (_, (ax,)):
        ax.barh([r["name"] for r in rows], [r["importance"] for r in rows],
                xerr=[r["std"] for r in rows], color="C0")  # fmt: skip
        ax.axvline(0, color="grey", lw=1)
        ax.set(xlabel=f"{what} when the feature is shuffled")
        ax.tick_params(axis="y", labelsize="x-small")
        ax.minorticks_off()
    return path


def plot_history(path: Path, history: Sequence[dict[str, Any]]) -> Path:
    """Loss per epoch (train, validation) and, when present, validation AUC."""
    epochs = [h["epoch"] for h in history]
    has_auc = any("val_auc" in h for h in history)
    from matplotlib.ticker import MaxNLocator

    with _figure(path, 2 if has_auc else 1, note="weighted") as (_, axes):
        for key in ("train_loss", "val_loss"):
            values = [h.get(key, np.nan) for h in history]
            axes[0].plot(epochs, values, "o-", label=key.replace("_", " "))
        axes[0].set(xlabel="epoch", ylabel="loss")
        axes[0].legend(loc="upper right")
        if has_auc:
            axes[1].plot(epochs, [h.get("val_auc", np.nan) for h in history], "o-", color="C2")
            axes[1].set(xlabel="epoch", ylabel="validation ROC AUC")
        for ax in axes:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return path


def plot_importances(path: Path, names: Sequence[str], values: np.ndarray) -> Path:
    """The model's own importances: horizontal bars, top 30, normalised to sum 1."""
    total = float(np.sum(values))
    norm = values / total if total > 0 else values
    order = np.argsort(norm)[::-1][:_MAX_IMPORTANCES][::-1]
    with _figure(path, note="model's own", height=max(5.0, 0.4 * len(order) + 2.5)) as (_, (ax,)):
        ax.barh([names[i] for i in order], norm[order], color="C0")
        ax.set(xlabel="relative importance")
        ax.tick_params(axis="y", labelsize="x-small")
        ax.minorticks_off()
    return path


def _name(class_names: Sequence[str], k: int) -> str:
    return class_names[k] if k < len(class_names) else f"class {k}"
