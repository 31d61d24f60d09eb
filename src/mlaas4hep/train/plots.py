"""PNG plots of a run (matplotlib, object API with the Agg canvas, mplhep's CMS style).

No pyplot: figures are plain ``Figure`` objects, so nothing global is touched and plotting
is safe in worker threads. Each function writes one file atomically and returns its path.

* ``roc.png``: ROC curve(s) on the test split (one-vs-rest per class for multiclass).
* ``scores.png``: score distributions per true class, train (filled) vs test (points):
  a gap between the two shows overtraining. Regression: residuals, train vs test.
* ``history.png``: train/validation loss and validation AUC per epoch.
* ``importance.png``: feature importances, when the model has them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from mlaas4hep.train.atomic import temp_path_for
from mlaas4hep.train.evaluate import ScoreAccumulator, roc_auc, roc_curve

_BINS = 40
_MAX_IMPORTANCES = 30


@contextmanager
def _figure(path: Path, ncols: int = 1) -> Iterator[tuple[Any, Any]]:
    import matplotlib.style
    import mplhep
    from matplotlib.figure import Figure

    with matplotlib.style.context(mplhep.style.CMS):
        fig = Figure(figsize=(8 * ncols, 7), layout="constrained")
        axes = fig.subplots(1, ncols, squeeze=False)[0]
        yield fig, axes
        tmp = temp_path_for(path)
        try:
            fig.savefig(tmp, format="png", dpi=80)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def plot_roc(path: Path, test: ScoreAccumulator, class_names: Sequence[str]) -> Path:
    """ROC curve(s): signal efficiency vs background efficiency, with the AUC in the legend."""
    scores, y, w = test.arrays()
    columns = [(1, 0)] if test.task == "binary" else [(k, k) for k in range(test.n_classes)]
    with _figure(path) as (_, (ax,)):
        for cls, col in columns:
            positive = y.astype(np.int64) == cls
            fpr, tpr = roc_curve(scores[:, col], positive, w)
            auc = roc_auc(scores[:, col], positive, w)
            label = f"{_name(class_names, cls)} vs rest" if test.task != "binary" else "test"
            ax.plot(fpr, tpr, label=f"{label} (AUC = {auc:.3f})")
        ax.plot([0, 1], [0, 1], ls="--", color="grey", label="random")
        ax.set(xlabel="background efficiency", ylabel="signal efficiency", xlim=(0, 1), ylim=(0, 1))
        ax.legend(loc="lower right")
    return path


def plot_scores(
    path: Path, train: ScoreAccumulator, test: ScoreAccumulator, class_names: Sequence[str]
) -> Path:
    """Score distributions per true class, train vs test overlaid (normalised to unit area)."""
    if test.task == "regression":
        return _plot_residuals(path, train, test)
    n_cols = 1 if test.task == "binary" else test.n_classes
    with _figure(path, n_cols) as (_, axes):
        for col, ax in enumerate(axes):
            for cls in range(test.n_classes):
                _score_hist(ax, train, test, col, cls, _name(class_names, cls), f"C{cls}")
            score_of = _name(class_names, 1 if test.task == "binary" else col)
            ax.set(xlabel=f"score ({score_of})", ylabel="normalised events", xlim=(0, 1))
            ax.legend(fontsize="small")
    return path


def _score_hist(
    ax: Any, train: ScoreAccumulator, test: ScoreAccumulator, col: int, cls: int, name: str, c: str
) -> None:
    bins = np.linspace(0, 1, _BINS + 1)
    for acc, is_train in ((train, True), (test, False)):
        s, y, w = acc.arrays()
        sel = y.astype(np.int64) == cls
        if not sel.any():
            continue
        h, _ = np.histogram(s[sel, col], bins=bins, weights=w[sel], density=True)
        if is_train:
            ax.stairs(h, bins, fill=True, alpha=0.3, color=c, label=f"{name} train")
        else:
            centres = 0.5 * (bins[1:] + bins[:-1])
            ax.plot(centres, h, "o", ms=4, color=c, label=f"{name} test")


def _plot_residuals(path: Path, train: ScoreAccumulator, test: ScoreAccumulator) -> Path:
    with _figure(path) as (_, (ax,)):
        for acc, label in ((train, "train"), (test, "test")):
            s, y, w = acc.arrays()
            if len(y):
                ax.hist(
                    s[:, 0] - y, bins=_BINS, weights=w, density=True, histtype="step", label=label
                )
        ax.set(xlabel="prediction - truth", ylabel="normalised events")
        ax.legend()
    return path


def plot_history(path: Path, history: Sequence[dict[str, Any]]) -> Path:
    """Loss per epoch (train, validation) and, when present, validation AUC."""
    epochs = [h["epoch"] for h in history]
    has_auc = any("val_auc" in h for h in history)
    from matplotlib.ticker import MaxNLocator

    with _figure(path, 2 if has_auc else 1) as (_, axes):
        for key in ("train_loss", "val_loss"):
            values = [h.get(key, np.nan) for h in history]
            axes[0].plot(epochs, values, "o-", label=key.replace("_", " "))
        axes[0].set(xlabel="epoch", ylabel="loss")
        axes[0].legend()
        if has_auc:
            axes[1].plot(epochs, [h.get("val_auc", np.nan) for h in history], "o-", color="C2")
            axes[1].set(xlabel="epoch", ylabel="validation ROC AUC")
        for ax in axes:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return path


def plot_importances(path: Path, names: Sequence[str], values: np.ndarray) -> Path:
    """Horizontal bars, most important first (the top 30), normalised to sum 1."""
    total = float(np.sum(values))
    norm = values / total if total > 0 else values
    order = np.argsort(norm)[::-1][:_MAX_IMPORTANCES][::-1]
    with _figure(path) as (fig, (ax,)):
        fig.set_figheight(max(4.0, 0.35 * len(order) + 1.5))
        ax.barh([names[i] for i in order], norm[order], color="C0")
        ax.set(xlabel="relative importance")
        ax.tick_params(axis="y", labelsize="small")
    return path


def _name(class_names: Sequence[str], k: int) -> str:
    return class_names[k] if k < len(class_names) else f"class {k}"
