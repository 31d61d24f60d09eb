"""What preprocessing hands to training: feature batches and the first-pass summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np


@dataclass(frozen=True)
class FeatureBatch:
    """A batch of events: raw (not normalised) features, targets, weights, split codes."""

    X: np.ndarray[Any, Any]  # float32 (n, n_features)
    y: np.ndarray[Any, Any]  # (n,) float32 binary/regression, int64 class index multiclass
    w: np.ndarray[Any, Any]  # (n,) float32 event weights
    split: np.ndarray[Any, Any]  # (n,) uint8: 0 train, 1 validation, 2 test

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class FeatureInfo:
    """What the first pass learnt: feature order, task, normalisation, statistics."""

    names: tuple[str, ...]
    task: Literal["binary", "multiclass", "regression"]
    n_classes: int
    class_names: tuple[str, ...]
    normalize: Literal["standard", "minmax", "none"]
    offset: np.ndarray[Any, Any]  # float32 (n_features,): normalised = (X - offset) / scale
    scale: np.ndarray[Any, Any]  # float32 (n_features,), never 0
    stats: dict[str, Any]  # feature name -> {count, mean, std, min, max, nonfinite} (train)
    cutflow: list[dict[str, Any]] = field(default_factory=list)
    events: dict[str, dict[str, int]] = field(default_factory=dict)  # dataset -> counts
    class_weights: tuple[float, ...] = ()  # balancing factor per class (empty: none)
    nonfinite: dict[str, int] = field(default_factory=dict)  # column -> NaN/inf count
    # preprocess.reweight: histograms and factor maps (preprocess/reweight_hist.py)
    reweight: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (``from_dict`` reads it back)."""
        return {
            "names": list(self.names),
            "task": self.task,
            "n_classes": self.n_classes,
            "class_names": list(self.class_names),
            "normalize": self.normalize,
            "offset": self.offset.tolist(),
            "scale": self.scale.tolist(),
            "stats": self.stats,
            "cutflow": self.cutflow,
            "events": self.events,
            "class_weights": list(self.class_weights),
            "nonfinite": self.nonfinite,
            "reweight": self.reweight,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureInfo:
        """Inverse of ``to_dict``."""
        return cls(
            names=tuple(d["names"]),
            task=d["task"],
            n_classes=int(d["n_classes"]),
            class_names=tuple(d["class_names"]),
            normalize=d["normalize"],
            offset=np.asarray(d["offset"], dtype=np.float32),
            scale=np.asarray(d["scale"], dtype=np.float32),
            stats=d["stats"],
            cutflow=d.get("cutflow", []),
            events=d.get("events", {}),
            class_weights=tuple(d.get("class_weights", ())),
            nonfinite=d.get("nonfinite", {}),
            reweight=d.get("reweight", {}),
        )
