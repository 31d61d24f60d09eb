"""Plots of ``preprocess.reweight``: each variable before and after, per class.

One figure per reweighting and variable (``reweight_<i>_<variable>.png`` and ``.pdf``),
one panel per reweighted class: the class's training distribution before (dashed) and
after (solid) reweighting, and the target (dotted), each normalised to unit area inside
the binning. For a 2D reweighting each variable is the projection on its axis. Drawn from
the first pass's histograms (``FeatureInfo.reweight``): the *after* curve is the
histogram times the clipped factor map, which is exactly the reweighted training sample.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mlaas4hep.train.plots import _figure  # one figure helper for every plot of a run


def plot_reweighting(directory: Path, document: Mapping[str, Any]) -> list[Path]:
    """Write every reweighting plot into *directory*; returns the PNG paths."""
    made = []
    for i, rule in enumerate(document.get("rules", ())):
        for axis, variable in enumerate(rule["variables"]):
            name = f"reweight_{i}_{_slug(variable)}.png"
            made.append(_plot_variable(directory / name, rule, axis))
    return made


def _plot_variable(path: Path, rule: Mapping[str, Any], axis: int) -> Path:
    edges = np.asarray(rule["edges"][axis], dtype=np.float64)
    classes = list(rule["classes"].items())
    target = _target(rule, axis)
    note = f"training split, target: {rule['target']}"
    with _figure(path, ncols=max(1, len(classes)), note=note) as (_, axes):
        for ax, (name, entry) in zip(axes, classes, strict=False):
            before = np.asarray(rule["histograms"][f"class:{name}"]["sum_w"], dtype=np.float64)
            after = before * np.asarray(entry["factors"], dtype=np.float64)
            _step(ax, edges, _project(before, axis), "--", f"{name} before")
            _step(ax, edges, _project(after, axis), "-", f"{name} after")
            _step(ax, edges, target, ":", f"target ({rule['target']})")
            ax.set_xlabel(rule["variables"][axis])
            ax.set_ylabel("fraction / bin width")
            clipped = int(entry["clipped_bins"])
            title = f"factors clipped at {rule['max_weight']:g} in {clipped} bin(s)"
            ax.legend(title=title, loc="upper right", fontsize=13, title_fontsize=12)
    return path


def _target(rule: Mapping[str, Any], axis: int) -> np.ndarray[Any, Any]:
    edges = [np.asarray(e, dtype=np.float64) for e in rule["edges"]]
    if rule["target"] == "flat":
        widths = [np.diff(e) for e in edges]
        flat = widths[0] if len(widths) == 1 else np.multiply.outer(widths[0], widths[1])
        return _project(flat, axis)
    return _project(np.asarray(rule["histograms"][rule["target"]]["sum_w"]), axis)


def _project(values: np.ndarray[Any, Any], axis: int) -> np.ndarray[Any, Any]:
    """The histogram summed over the other axis (2D), as given (1D)."""
    if values.ndim == 1:
        return values
    return np.asarray(values.sum(axis=1 - axis))


def _step(ax: Any, edges: np.ndarray[Any, Any], values: np.ndarray[Any, Any], style: str,
          label: str) -> None:  # fmt: skip
    total = float(values.sum())
    density = values / (total * np.diff(edges)) if total > 0 else np.zeros_like(values)
    ax.stairs(density, edges, linestyle=style, linewidth=2, label=label)


def _slug(text: str, limit: int = 40) -> str:
    """A file-name-safe form of a variable expression (``abs(eta)`` -> ``abs_eta``)."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:limit] or "variable"
