"""A fake ``Preprocessor``: synthetic, seeded feature chunks with the real contract.

The features look like physics inputs (positive, large scales such as GeV transverse
momenta next to O(1) angles) so that a model that forgot the normalisation would train
badly, and signal/background overlap so that an AUC of about 0.9 is reachable but not 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from mlaas4hep.preprocess.pipeline import FeatureBatch, FeatureInfo

SPLITS = {"train": 0, "validation": 1, "test": 2}
NAMES = ("MET_pt", "HT", "nJet", "Jet0_eta", "Jet0_btag", "lep_pt")


@dataclass
class FakeSource:
    """``events`` synthetic events in chunks of ``chunk``; split 60/20/20 by event index."""

    events: int = 6000
    chunk: int = 1000
    task: Literal["binary", "multiclass", "regression"] = "binary"
    seed: int = 1
    n_classes: int = 3
    nan_at: int | None = None  # put a NaN into this event's HT
    calls: list[str] = field(default_factory=list)

    def _chunk(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, index])
        n = min(self.chunk, self.events - index * self.chunk)
        k = self.n_classes if self.task == "multiclass" else 2
        cls = rng.integers(0, k, n)
        s = cls.astype(np.float64)  # "signal-ness"
        X = np.column_stack(
            [
                rng.exponential(30 + 15 * s),
                rng.normal(200 + 90 * s, 80),
                rng.poisson(3 + 1.5 * s),
                rng.normal(0, 1.6 - 0.3 * np.minimum(s, 1), n),
                rng.beta(1 + s, 3, n),
                rng.exponential(20 + 5 * s),
            ]
        ).astype(np.float32)
        if self.nan_at is not None and index * self.chunk <= self.nan_at < index * self.chunk + n:
            X[self.nan_at - index * self.chunk, 1] = np.nan
        if self.task == "binary":
            y = cls.astype(np.float32)
        elif self.task == "multiclass":
            y = cls.astype(np.int64)
        else:
            y = (0.01 * X[:, 1] + 0.05 * X[:, 0] + rng.normal(0, 0.3, n)).astype(np.float32)
        w = rng.uniform(0.5, 1.5, n).astype(np.float32)
        ids = np.arange(index * self.chunk, index * self.chunk + n)
        split = np.where(ids % 5 < 3, 0, np.where(ids % 5 == 3, 1, 2)).astype(np.uint8)
        return X, y, w, split

    @property
    def n_chunks(self) -> int:
        return -(-self.events // self.chunk)

    def fit(self, *, progress: Callable[[int, int | None], None] | None = None) -> FeatureInfo:
        self.calls.append("fit")
        if progress is not None:  # as the real first pass: entries read, entries in all
            for i in range(self.n_chunks):
                progress(min((i + 1) * self.chunk, self.events), self.events)
        X = np.concatenate([self._chunk(i)[0] for i in range(self.n_chunks)])
        X = X[np.isfinite(X).all(axis=1)]
        mean, std = X.mean(axis=0), X.std(axis=0)
        # As the real Preprocessor: binary counts one class (one output), regression none.
        k = self.n_classes if self.task == "multiclass" else (1 if self.task == "binary" else 0)
        names = ("background", "signal") if k == 1 else tuple(f"c{i}" for i in range(k))
        return FeatureInfo(
            names=NAMES, task=self.task, n_classes=k, class_names=names, normalize="standard",
            offset=mean.astype(np.float32), scale=std.astype(np.float32),
            stats={}, events={"fake": {"train": self._count(0)}},
        )  # fmt: skip

    def _count(self, code: int) -> int:
        return sum(int((self._chunk(i)[3] == code).sum()) for i in range(self.n_chunks))

    def batches(
        self, split: str | None = None, *, shuffle: bool = False, seed: int = 0
    ) -> Iterator[FeatureBatch]:
        self.calls.append(f"batches:{split}")
        order = np.arange(self.n_chunks)
        if shuffle:
            order = np.random.default_rng(seed).permutation(order)
        for i in order:
            X, y, w, sp = self._chunk(int(i))
            sel = np.ones(len(y), bool) if split is None else sp == SPLITS[split]
            yield FeatureBatch(X=X[sel], y=y[sel], w=w[sel], split=sp[sel])

    def cutflow(self) -> list[dict[str, Any]]:
        return [{"cut": "all", "events": self.events}]
