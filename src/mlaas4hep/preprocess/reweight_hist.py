"""The first pass's reweighting histograms (scikit-hep ``hist``), and the factor maps.

``ReweightHistograms`` is filled chunk by chunk with the training events' weights (after
the weight expressions, before any reweighting or balance) and merges exactly: ``hist``
objects add bin by bin, and the first pass merges chunk sums in stream order wherever
they were computed (``preprocess.partitioned``), so a Dask run's histograms equal a local
run's bit for bit. ``document()`` turns them into the ``FeatureInfo.reweight`` document:
per reweighting, the histograms (inside the binning, plus the weight outside it) and the
clipped factor map of each reweighted class (``preprocess.reweight`` says how).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mlaas4hep.preprocess.reweight import FLAT, ORDER, ReweightPlan, Rule


class ReweightHistograms:
    """Weighted histograms per reweighting: each reweighted class, and the target."""

    def __init__(self, plan: ReweightPlan) -> None:
        self.plan = plan
        self.hists: dict[tuple[int, str], Any] = {}  # (rule, "class:k" | "target") -> Hist

    def fill(
        self,
        columns: Mapping[str, np.ndarray[Any, Any]],
        y: np.ndarray[Any, Any],
        w: np.ndarray[Any, Any],
        dataset: str,
        keep: np.ndarray[Any, Any],
    ) -> None:
        """Add the events of one chunk selected by *keep* (the training split)."""
        if not self.plan.rules or not keep.any():
            return
        groups = self.plan.groups(y[keep])
        weights = np.asarray(w[keep], dtype=np.float64)
        for rule in self.plan.rules:
            x = [np.asarray(columns[v][keep], dtype=np.float64) for v in rule.variables]
            for k, _ in rule.classes:
                self._fill(rule, f"class:{k}", x, weights, groups == k)
            if rule.target_class is not None:
                self._fill(rule, "target", x, weights, groups == rule.target_class)
            elif rule.target_dataset == dataset:
                self._fill(rule, "target", x, weights, np.ones(len(weights), dtype=bool))

    def _fill(
        self,
        rule: Rule,
        key: str,
        x: Sequence[np.ndarray[Any, Any]],
        w: np.ndarray[Any, Any],
        sel: np.ndarray[Any, Any],
    ) -> None:
        if not sel.any():
            return
        h = self.hists.get((rule.index, key))
        if h is None:
            h = self.hists[(rule.index, key)] = _new_hist(rule)
        h.fill(*(xi[sel] for xi in x), weight=w[sel])

    def merge(self, other: ReweightHistograms) -> ReweightHistograms:
        """Add *other*'s histograms bin by bin (exact for the same merge order); returns self."""
        for key, h in other.hists.items():
            mine = self.hists.get(key)
            if mine is None:
                self.hists[key] = h.copy()
            else:
                mine += h
        return self

    def document(self) -> dict[str, Any]:
        """The histograms and factor maps, JSON-ready (``FeatureInfo.reweight``)."""
        if not self.plan.rules:
            return {}
        return {"order": ORDER, "rules": [self._rule_document(r) for r in self.plan.rules]}

    def _rule_document(self, rule: Rule) -> dict[str, Any]:
        shape = tuple(len(e) - 1 for e in rule.edges)
        hists = {key: self._contents(rule, key, shape) for key in self._keys(rule)}
        if rule.target == FLAT:
            target = _bin_sizes(rule.edges)
        else:
            target = np.asarray(hists["target"]["sum_w"], dtype=np.float64)
        classes = {}
        for k, name in rule.classes:
            h = hists[f"class:{k}"]
            classes[name] = {"index": k, **_factors(h, target, rule.max_weight)}
        return {
            "variables": list(rule.variables),
            "edges": [list(e) for e in rule.edges],
            "target": rule.target,
            "max_weight": rule.max_weight,
            "histograms": {self._label(rule, key): h for key, h in hists.items()},
            "classes": classes,
        }

    def _keys(self, rule: Rule) -> list[str]:
        return [f"class:{k}" for k, _ in rule.classes] + ([] if rule.target == FLAT else ["target"])

    def _label(self, rule: Rule, key: str) -> str:
        if key == "target":
            return rule.target
        k = int(key.removeprefix("class:"))
        return "class:" + next(n for i, n in rule.classes if i == k)

    def _contents(self, rule: Rule, key: str, shape: tuple[int, ...]) -> dict[str, Any]:
        h = self.hists.get((rule.index, key))
        if h is None:
            zeros = np.zeros(shape)
            return {"sum_w": zeros.tolist(), "sum_w2": zeros.tolist(), "outside": 0.0}
        inner = tuple(slice(1, -1) for _ in shape)
        values, variances = h.values(flow=True), h.variances(flow=True)
        return {
            "sum_w": values[inner].tolist(),
            "sum_w2": variances[inner].tolist(),
            "outside": float(values.sum() - values[inner].sum()),
        }


def _new_hist(rule: Rule) -> Any:
    import hist

    axes = [
        hist.axis.Variable(edges, name=f"x{j}", label=var, underflow=True, overflow=True)
        for j, (var, edges) in enumerate(zip(rule.variables, rule.edges, strict=True))
    ]
    return hist.Hist(*axes, storage=hist.storage.Weight())


def _bin_sizes(edges: Sequence[Sequence[float]]) -> np.ndarray[Any, Any]:
    """Width (1D) or area (2D) of every bin: the histogram of a flat density."""
    sizes = [np.diff(np.asarray(e, dtype=np.float64)) for e in edges]
    return sizes[0] if len(sizes) == 1 else np.multiply.outer(sizes[0], sizes[1])


def _factors(
    h: Mapping[str, Any], target: np.ndarray[Any, Any], max_weight: float
) -> dict[str, Any]:
    """The clipped factor map of one class, and what it does to the class's weight."""
    sum_w = np.asarray(h["sum_w"], dtype=np.float64)
    total_h, total_t = float(sum_w.sum()), float(target.sum())
    raw = np.ones_like(sum_w)
    if total_h > 0 and total_t > 0:
        filled = sum_w > 0
        raw[filled] = (target[filled] / total_t) / (sum_w[filled] / total_h)
    clipped = raw > max_weight
    factors = np.clip(raw, 0.0, max_weight)
    outside = float(h["outside"])
    return {
        "factors": factors.tolist(),
        "clipped_bins": int(clipped.sum()),
        "clipped_weight": float(sum_w[clipped].sum()),
        "total_before": total_h + outside,
        "total_after": float((sum_w * factors).sum()) + outside,
    }
