"""Streaming per-feature statistics and the normalisation they define.

``FeatureStats`` accumulates count, mean, M2 (Chan et al.'s parallel variance update,
stable where sum/sum-of-squares is not), min, max and the number of non-finite values,
for every column of a feature matrix at once, chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

Normalize = Literal["standard", "minmax", "none"]


class FeatureStats:
    """Column-wise running statistics of a 2-D float array, ignoring NaN/inf (counted)."""

    def __init__(self, n_features: int) -> None:
        self.count = np.zeros(n_features, dtype=np.int64)
        self.mean = np.zeros(n_features, dtype=np.float64)
        self.m2 = np.zeros(n_features, dtype=np.float64)
        self.min = np.full(n_features, np.inf)
        self.max = np.full(n_features, -np.inf)
        self.nonfinite = np.zeros(n_features, dtype=np.int64)

    def update(self, X: np.ndarray[Any, Any]) -> None:
        """Add the rows of *X* (n, n_features)."""
        if len(X) == 0:
            return
        x = X.astype(np.float64, copy=False)
        total = x.sum(axis=0)
        if np.isfinite(total).all():  # the common case: no masking needed
            n_b = np.full(x.shape[1], len(x), dtype=np.int64)
            mean_b = total / len(x)
            m2_b = ((x - mean_b) ** 2).sum(axis=0)
            lo, hi = x.min(axis=0), x.max(axis=0)
        else:
            n_b, mean_b, m2_b, lo, hi = self._masked(x)
        self._absorb(n_b, mean_b, m2_b, lo, hi)

    def merge(self, other: FeatureStats) -> None:
        """Add *other*'s values (computed anywhere: another chunk, partition or worker).

        Exact up to rounding in any order; merging the per-chunk results in stream order
        gives bit for bit what ``update`` on those chunks gives.
        """
        if len(other.count) != len(self.count):
            msg = f"cannot merge statistics of {len(other.count)} features into {len(self.count)}"
            raise ValueError(msg)
        self.nonfinite = self.nonfinite + other.nonfinite
        if other.count.any():
            self._absorb(other.count, other.mean, other.m2, other.min, other.max)

    def _absorb(self, *batch: np.ndarray[Any, Any]) -> None:
        # Chan et al.: combine (count, mean, M2) of two disjoint sets of values.
        n_b, mean_b, m2_b, lo, hi = batch
        self.min = np.minimum(self.min, lo)
        self.max = np.maximum(self.max, hi)
        n_a = self.count
        n = n_a + n_b
        safe_n = np.maximum(n, 1)
        delta = mean_b - self.mean
        # Where one side is empty the other is taken as is, so merging into a fresh
        # accumulator is exact and the order of empty merges never changes a bit.
        mean = self.mean + delta * n_b / safe_n
        m2 = self.m2 + m2_b + delta**2 * n_a * n_b / safe_n
        self.mean = np.where(n_a == 0, mean_b, np.where(n_b == 0, self.mean, mean))
        self.m2 = np.where(n_a == 0, m2_b, np.where(n_b == 0, self.m2, m2))
        self.count = n

    def _masked(self, x: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], ...]:
        """Batch count, mean, M2, min, max over the finite values only (NaN/inf counted)."""
        finite = np.isfinite(x)
        self.nonfinite += (~finite).sum(axis=0)
        n_b = finite.sum(axis=0)
        xz = np.where(finite, x, 0.0)
        mean_b = np.where(n_b > 0, xz.sum(axis=0) / np.maximum(n_b, 1), 0.0)
        m2_b = (np.where(finite, x - mean_b, 0.0) ** 2).sum(axis=0)
        lo = np.where(finite, x, np.inf).min(axis=0)
        hi = np.where(finite, x, -np.inf).max(axis=0)
        return n_b, mean_b, m2_b, lo, hi

    def std(self) -> np.ndarray[Any, Any]:
        """Population standard deviation per column (0 where fewer than two values)."""
        return np.sqrt(np.where(self.count > 1, self.m2 / np.maximum(self.count, 1), 0.0))

    def to_dict(self, names: Sequence[str]) -> dict[str, dict[str, float | int | None]]:
        """``{name: {count, mean, std, min, max, nonfinite}}``, JSON-serialisable."""
        std = self.std()
        out: dict[str, dict[str, float | int | None]] = {}
        for i, name in enumerate(names):
            seen = bool(self.count[i])
            out[name] = {
                "count": int(self.count[i]),
                "mean": float(self.mean[i]) if seen else None,
                "std": float(std[i]) if seen else None,
                "min": float(self.min[i]) if seen else None,
                "max": float(self.max[i]) if seen else None,
                "nonfinite": int(self.nonfinite[i]),
            }
        return out


def offset_scale(
    stats: FeatureStats, method: Normalize
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """``(offset, scale)`` float32 so that ``(X - offset) / scale`` normalises; scale != 0."""
    n = len(stats.count)
    seen = stats.count > 0
    if method == "standard":
        offset, scale = np.where(seen, stats.mean, 0.0), stats.std()
    elif method == "minmax":
        offset = np.where(seen, stats.min, 0.0)
        scale = np.where(seen, stats.max - stats.min, 1.0)
    else:
        offset, scale = np.zeros(n), np.ones(n)
    # constant (or empty) columns: keep them as they are rather than divide by zero
    scale = np.where((scale > 0) & np.isfinite(scale), scale, 1.0)
    return offset.astype(np.float32), scale.astype(np.float32)
