"""Streaming, mergeable first-pass statistics.

Accumulators see the data one chunk at a time and merge exactly (Chan et al.'s pairwise
update of mean and centred second moment), so per-file results can be computed anywhere
(a worker, a cache) and combined later in any order with the same answer up to rounding.

* ``ScalarStats``: count, sum, min, max, mean, std of finite values; NaN and +/-inf are
  counted apart and left out of the moments.
* ``CollectionStats``: a jagged collection (``Jet``): multiplicity histogram and maximum,
  and a ``ScalarStats`` per field over all objects.
* ``SampleStats``: both, for a set of branches over a sample.

``mlaas4hep.data.stats.first_pass`` computes them for a ``DataSpec`` (per dataset and
overall), caching each file's result on disk.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import awkward as ak
import numpy as np

from mlaas4hep.errors import DataSourceError


@dataclass
class ScalarStats:
    """Moments and range of a stream of numbers (``m2``: sum of squared deviations)."""

    count: int = 0
    sum: float = 0.0
    m2: float = 0.0
    min: float = math.inf
    max: float = -math.inf
    nan: int = 0
    inf: int = 0

    def update(self, values: Any) -> ScalarStats:
        """Add the values of a flat or jagged array (all of them); returns ``self``."""
        arr = _to_numpy(values)
        finite = np.isfinite(arr)
        nan = int(np.isnan(arr).sum())
        self.nan += nan
        self.inf += int(arr.size - finite.sum()) - nan
        good = arr[finite] if not finite.all() else arr
        if good.size:
            mean = float(good.mean())
            part = ScalarStats(
                int(good.size),
                float(good.sum()),
                float(((good - mean) ** 2).sum()),
                float(good.min()),
                float(good.max()),
            )
            self._absorb(part)
        return self

    def merge(self, other: ScalarStats) -> ScalarStats:
        """A new accumulator holding both streams."""
        out = dataclasses.replace(self)
        out._absorb(other)
        out.nan, out.inf = self.nan + other.nan, self.inf + other.inf
        return out

    def _absorb(self, other: ScalarStats) -> None:
        if other.count == 0:
            return
        if self.count == 0:
            self.count, self.sum, self.m2 = other.count, other.sum, other.m2
        else:
            n = self.count + other.count
            delta = other.mean - self.mean
            self.m2 += other.m2 + delta * delta * self.count * other.count / n
            self.count, self.sum = n, self.sum + other.sum
        self.min, self.max = min(self.min, other.min), max(self.max, other.max)

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else math.nan

    @property
    def std(self) -> float:
        """Population standard deviation (``ddof=0``), NaN when empty."""
        return math.sqrt(max(self.m2, 0.0) / self.count) if self.count else math.nan

    @property
    def sumsq(self) -> float:
        return self.m2 + self.sum * self.mean if self.count else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state (``inf`` bounds of an empty accumulator become ``None``)."""
        return {
            "count": self.count,
            "sum": self.sum,
            "m2": self.m2,
            "min": self.min if self.count else None,
            "max": self.max if self.count else None,
            "nan": self.nan,
            "inf": self.inf,
        }

    def summary(self) -> dict[str, Any]:
        """What a person wants to read: count, min, max, mean, std, nan, inf."""
        empty = self.count == 0
        return {
            "count": self.count,
            "min": None if empty else self.min,
            "max": None if empty else self.max,
            "mean": None if empty else self.mean,
            "std": None if empty else self.std,
            "nan": self.nan,
            "inf": self.inf,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ScalarStats:
        lo, hi = d.get("min"), d.get("max")
        return cls(
            int(d["count"]),
            float(d["sum"]),
            float(d["m2"]),
            math.inf if lo is None else float(lo),
            -math.inf if hi is None else float(hi),
            int(d.get("nan", 0)),
            int(d.get("inf", 0)),
        )


@dataclass
class CollectionStats:
    """A jagged collection: how many objects per event, and each field over all objects."""

    multiplicity: dict[int, int] = field(default_factory=dict)  # n objects -> events
    fields: dict[str, ScalarStats] = field(default_factory=dict)

    @property
    def max_multiplicity(self) -> int:
        return max(self.multiplicity, default=0)

    @property
    def events(self) -> int:
        return sum(self.multiplicity.values())

    def update(self, arrays: ak.Array, fields: Sequence[str]) -> CollectionStats:
        """Add one chunk; ``fields`` are branches of the collection (same multiplicity)."""
        if not fields:
            return self
        counts = ak.to_numpy(ak.num(arrays[fields[0]], axis=1))
        for n, events in enumerate(np.bincount(counts)):
            if events:
                self.multiplicity[n] = self.multiplicity.get(n, 0) + int(events)
        for name in fields:
            self.fields.setdefault(name, ScalarStats()).update(arrays[name])
        return self

    def merge(self, other: CollectionStats) -> CollectionStats:
        mult = dict(self.multiplicity)
        for n, events in other.multiplicity.items():
            mult[n] = mult.get(n, 0) + events
        names = list(dict.fromkeys([*self.fields, *other.fields]))
        merged = {
            k: self.fields.get(k, ScalarStats()).merge(other.fields.get(k, ScalarStats()))
            for k in names
        }
        return CollectionStats(dict(sorted(mult.items())), merged)

    def to_dict(self) -> dict[str, Any]:
        return {
            "multiplicity": {str(k): v for k, v in sorted(self.multiplicity.items())},
            "max_multiplicity": self.max_multiplicity,
            "fields": {k: v.to_dict() for k, v in self.fields.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CollectionStats:
        return cls(
            {int(k): int(v) for k, v in d["multiplicity"].items()},
            {k: ScalarStats.from_dict(v) for k, v in d["fields"].items()},
        )


@dataclass
class SampleStats:
    """Statistics of a set of branches over some entries (a file, a dataset, everything).

    ``layout`` says which branches are scalars and how jagged ones group into collections.
    """

    entries: int = 0
    scalars: dict[str, ScalarStats] = field(default_factory=dict)
    collections: dict[str, CollectionStats] = field(default_factory=dict)

    def update(self, arrays: ak.Array, layout: StatsLayout) -> SampleStats:
        """Add one chunk (a record array holding at least the branches of ``layout``)."""
        self.entries += len(arrays)
        for name in layout.scalars:
            self.scalars.setdefault(name, ScalarStats()).update(arrays[name])
        for coll, names in layout.collections.items():
            self.collections.setdefault(coll, CollectionStats()).update(arrays, names)
        return self

    def merge(self, other: SampleStats) -> SampleStats:
        return SampleStats(
            self.entries + other.entries,
            _merge_maps(self.scalars, other.scalars, ScalarStats),
            _merge_maps(self.collections, other.collections, CollectionStats),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "scalars": {k: v.to_dict() for k, v in self.scalars.items()},
            "collections": {k: v.to_dict() for k, v in self.collections.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SampleStats:
        return cls(
            int(d["entries"]),
            {k: ScalarStats.from_dict(v) for k, v in d["scalars"].items()},
            {k: CollectionStats.from_dict(v) for k, v in d["collections"].items()},
        )


@dataclass(frozen=True)
class StatsLayout:
    """Which requested branches are scalars and which jagged ones form each collection."""

    scalars: tuple[str, ...]
    collections: Mapping[str, tuple[str, ...]]


def _merge_maps(a: Mapping[str, Any], b: Mapping[str, Any], empty: type[Any]) -> dict[str, Any]:
    keys = list(dict.fromkeys([*a, *b]))
    return {k: a.get(k, empty()).merge(b.get(k, empty())) for k in keys}


def _to_numpy(values: Any) -> np.ndarray:
    if isinstance(values, ak.Array):
        values = ak.flatten(values, axis=None)
        try:
            arr = ak.to_numpy(values)
        except ValueError as exc:  # option types / records cannot be flattened to numbers
            msg = f"cannot compute statistics of values of type {values.type}; pick numeric data"
            raise DataSourceError(msg) from exc
    else:
        arr = np.asarray(values)
    out: np.ndarray = arr.astype(np.float64, copy=False).ravel()
    return out
