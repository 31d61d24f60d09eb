"""Plots of a search, PNG and PDF like the run's other plots (``plots.py``'s figure).

* ``tune/history.png``: left, each trial's value by trial number (completed: dots, pruned:
  crosses at their last epoch's value) and the best so far; right, the metric per epoch of
  every trial, which shows where the pruned ones stopped.
* ``tune/importance.png``: fANOVA importance of each searched option (seeded).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlaas4hep.train.plots import _figure


def plot_history(path: Path, rows: Sequence[dict[str, Any]], metric: str, direction: str) -> Path:
    """Optimisation history (by trial) and the per-epoch curves of the trials."""
    from matplotlib.ticker import MaxNLocator

    done = [r for r in rows if r["state"] == "complete" and r["value"] is not None]
    pruned = [r for r in rows if r["state"] == "pruned" and r["intermediate"]]
    with _figure(path, 2, note=f"{len(rows)} trials") as (_, axes):
        ax = axes[0]
        ax.plot([r["number"] for r in done], [r["value"] for r in done], "o", label="completed")
        if pruned:
            last = [_last(r) for r in pruned]
            ax.plot([r["number"] for r in pruned], last, "x", color="C3", label="pruned")
        best, running = [], None
        for r in done:
            v = r["value"]
            better = running is None or (v > running if direction == "maximize" else v < running)
            running = v if better else running
            best.append(running)
        ax.step([r["number"] for r in done], best, where="post", color="C1", label="best so far")
        ax.set(xlabel="trial", ylabel=metric.replace("_", " "))
        ax.legend(loc="lower right")
        for r in rows:
            curve = sorted((int(k), v) for k, v in r["intermediate"].items() if v is not None)
            if curve:
                style = "--" if r["state"] == "pruned" else "-"
                axes[1].plot(*zip(*curve, strict=True), style, marker=".", alpha=0.7)
        axes[1].set(xlabel="epoch", ylabel=metric.replace("_", " "))
        for a in axes:
            a.xaxis.set_major_locator(MaxNLocator(integer=True))
    return path


def _last(row: dict[str, Any]) -> float:
    epochs = sorted(row["intermediate"], key=int)
    value: float = row["intermediate"][epochs[-1]]
    return value


def plot_importance(path: Path, importances: dict[str, float]) -> Path:
    """Horizontal bars, the most important option on top."""
    names = list(importances)[::-1]
    with _figure(path, note="fANOVA", height=max(5.0, 0.5 * len(names) + 3.0)) as (_, (ax,)):
        ax.barh(names, [importances[n] for n in names], color="C0")
        ax.set(xlabel="importance for the metric")
        ax.minorticks_off()
    return path
