"""Permutation importance, for every engine, through the model's predict function.

The importance of a feature is how much the model gets worse when that feature's column
is shuffled across events (which keeps its distribution and breaks its relation to
everything else): the drop of the weighted ROC AUC (binary; the mean one-vs-rest AUC for
multiclass) or the rise of the weighted mean squared error (regression), averaged over
``REPEATS`` (3) shuffles, with their standard deviation. A feature the model ignores
scores about 0; a negative value is noise.

It runs on a bounded, seeded sample of the test split (``SAMPLE_EVENTS``: 20,000 events
drawn uniformly from the whole split by ``ReservoirSample`` while the split streams past
for the metrics, so no extra read), through any ``predict(X) -> scores`` (``run.py``
passes the exported ONNX model, which is the same for every engine). Columns: one per
feature while there are at most ``MAX_COLUMNS`` (64); beyond that, object features are
shuffled per field (``Jet_pt_0 .. Jet_pt_5`` together as ``Jet_pt_*``) and the repeats
drop to 1, so the cost stays about ``64 * 3`` predictions of the sample.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mlaas4hep.train.evaluate import Task, loss, mean_auc

if TYPE_CHECKING:
    from mlaas4hep.preprocess.pipeline import FeatureBatch
    from mlaas4hep.train.stream import BatchSource, Split

SAMPLE_EVENTS = 20_000
REPEATS = 3
MAX_COLUMNS = 64
SEED = 20260
_INDEXED = re.compile(r"^(.+)_(\d+)$")

Predict = Callable[[np.ndarray], np.ndarray]
Metric = Callable[[np.ndarray], float]


@dataclass
class ReservoirSample:
    """A uniform random sample of at most ``size`` events of a stream, seeded.

    Every event gets a random key; the ``size`` smallest keys are kept. Memory: ``size``
    feature rows.
    """

    size: int = SAMPLE_EVENTS
    seed: int = SEED
    _rng: np.random.Generator = field(init=False)
    _keys: np.ndarray = field(init=False)
    _X: np.ndarray | None = field(default=None, init=False)
    _y: np.ndarray = field(init=False)
    _w: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._keys, self._y, self._w = np.zeros(0), np.zeros(0), np.zeros(0, np.float32)

    def add(self, X: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        """Offer one batch of events."""
        keys = np.r_[self._keys, self._rng.random(len(y))]
        X_all = X if self._X is None else np.concatenate([self._X, X])
        y_all, w_all = np.r_[self._y, y], np.r_[self._w, w]
        if len(keys) > self.size:
            keep = np.sort(np.argpartition(keys, self.size - 1)[: self.size])
            keys, X_all, y_all, w_all = keys[keep], X_all[keep], y_all[keep], w_all[keep]
        self._keys, self._X, self._y, self._w = keys, X_all, y_all, w_all

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(X, y, w) of the sample, None when nothing was offered."""
        return None if self._X is None else (self._X, self._y, self._w)


@dataclass(frozen=True)
class SamplingSource:
    """A ``BatchSource`` that lets the batches of one split fill a ``ReservoirSample``."""

    source: BatchSource
    split: Split
    sample: ReservoirSample

    def batches(
        self, split: Split | None = None, *, shuffle: bool = False, seed: int = 0
    ) -> Iterator[FeatureBatch]:
        for batch in self.source.batches(split, shuffle=shuffle, seed=seed):
            if split == self.split and len(batch.y):
                self.sample.add(batch.X, batch.y, batch.w)
            yield batch


def feature_groups(
    names: Sequence[str], max_columns: int = MAX_COLUMNS
) -> list[tuple[str, list[int]]]:
    """(label, column indices) to shuffle together: one per feature, or per object field."""
    if len(names) <= max_columns:
        return [(n, [i]) for i, n in enumerate(names)]
    groups: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        match = _INDEXED.match(n)
        groups.setdefault(f"{match.group(1)}_*" if match else n, []).append(i)
    return list(groups.items())


def permutation_importance(
    predict: Predict,
    X: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    task: Task,
    n_classes: int,
    names: Sequence[str],
    *,
    repeats: int = REPEATS,
    seed: int = SEED,
    max_columns: int = MAX_COLUMNS,
) -> dict[str, Any]:
    """``metrics.json`` → ``permutation_importance`` (module docstring), most important first."""
    groups = feature_groups(names, max_columns)
    if len(groups) < len(names):
        repeats = 1
    rng = np.random.default_rng(seed)
    score = _metric(task, y, w, n_classes)
    baseline = score(predict(X))
    rows = []
    for label, columns in groups:
        drops = []
        for _ in range(repeats):
            shuffled = X.copy()
            shuffled[:, columns] = X[np.ix_(rng.permutation(len(X)), np.asarray(columns))]
            value = score(predict(shuffled))
            drops.append(baseline - value if task != "regression" else value - baseline)
        rows.append({"name": label, "importance": float(np.mean(drops)),
                     "std": float(np.std(drops))})  # fmt: skip
    rows.sort(key=_rank)
    return {
        "metric": "mse" if task == "regression" else "auc",
        "events": len(y),
        "repeats": repeats,
        "seed": seed,
        "grouping": "column" if len(groups) == len(names) else "object field",
        "baseline": baseline,
        "features": rows,
    }


def _rank(row: dict[str, Any]) -> float:
    value = float(row["importance"])
    return -value if np.isfinite(value) else np.inf


def _metric(task: Task, y: np.ndarray, w: np.ndarray, n_classes: int) -> Metric:
    if task == "regression":
        return lambda s: loss("regression", s.reshape(len(y), -1), y, w)
    return lambda s: mean_auc(task, s.reshape(len(y), -1), y, w, n_classes)


def onnx_predict(session: Any) -> Predict:
    """``predict`` of an ONNX Runtime session of an exported model (raw features in)."""
    from mlaas4hep import artifact

    def predict(X: np.ndarray) -> np.ndarray:
        feed = {artifact.INPUT_TENSOR: np.ascontiguousarray(X, artifact.INPUT_DTYPE)}
        return np.asarray(session.run([artifact.OUTPUT_TENSOR], feed)[0])

    return predict
