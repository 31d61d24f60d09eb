"""The inputs of set-based models (``model.kind: deepsets | transformer``), without torch.

A set-based model reads the same flat feature matrix as every other engine, so streaming,
the feature cache, normalisation statistics and ``apply`` are unchanged; its exported graph
takes one tensor per object collection instead, ``[N, objects, fields + 1]`` (the fields in
the spec's order, then the mask: 1 present, 0 padded), plus ``scalars`` ``[N, n_scalars]``
when the spec has event-level scalars. ``input_blocks`` is that layout; the bundle records it
(``features.json`` ``inputs``) and ``artifact.onnx_feeds`` cuts a flat matrix into it.

Normalisation must not depend on an object's slot (a permuted event would otherwise score
differently), so each field is normalised with one offset and scale pooled over the slots
(``field_offset_scale``); masks are never normalised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mlaas4hep.artifact import SCALARS_INPUT, InputBlock
from mlaas4hep.errors import SpecError

if TYPE_CHECKING:
    from mlaas4hep.preprocess.pipeline import FeatureInfo
    from mlaas4hep.spec import FeaturesSpec, PipelineSpec

SET_KINDS = frozenset({"deepsets", "transformer"})
MASK_FIELD = "mask"
#: Fields a collection needs for the transformer's pairwise features (``mass`` optional).
KINEMATICS = ("pt", "eta", "phi")


@dataclass(frozen=True)
class Collection:
    """One object collection as a set-based model sees it."""

    name: str
    fields: tuple[str, ...]  # without the mask, which is the tensor's last field
    length: int
    kinematics: tuple[int, ...] | None  # positions of pt, eta, phi[, mass] in fields

    @property
    def width(self) -> int:
        """Fields per object in the input tensor (the mask included)."""
        return len(self.fields) + 1


def collections(features: FeaturesSpec) -> tuple[Collection, ...]:
    """The collections of ``preprocess.features.objects``, in spec order."""
    out = []
    for name, obj in features.objects.items():
        fields = tuple(obj.fields)
        kin: tuple[int, ...] | None = None
        if all(f in fields for f in KINEMATICS):
            kin = tuple(fields.index(f) for f in KINEMATICS)
            kin += (fields.index("mass"),) if "mass" in fields else ()
        out.append(Collection(name, fields, obj.length, kin))
    return tuple(out)


def input_blocks(features: FeaturesSpec) -> tuple[InputBlock, ...]:
    """The exported graph's inputs: one per collection, then the scalars (if any)."""
    blocks = []
    for c in collections(features):
        names = tuple(f"{c.name}_{f}_{i}" for i in range(c.length) for f in (*c.fields, MASK_FIELD))
        blocks.append(InputBlock(c.name, (c.length, c.width), names))
    if features.scalars:
        scalars = tuple(features.scalars)
        blocks.append(InputBlock(SCALARS_INPUT, (len(scalars),), scalars))
    return tuple(blocks)


def check_spec(spec: PipelineSpec) -> None:
    """A set-based model needs masked object collections; raises ``SpecError`` otherwise."""
    kind, objects = spec.model.kind, spec.preprocess.features.objects
    if not objects:
        msg = (
            f"model kind {kind!r} works on object collections, but preprocess.features.objects "
            "is empty; add one, e.g. Jet: {fields: [pt, eta, phi], length: 6, mask: true}"
        )
        raise SpecError(msg)
    unmasked = [name for name, obj in objects.items() if not obj.mask]
    if unmasked:
        msg = (
            f"model kind {kind!r} needs to know which objects are padded: set 'mask: true' "
            f"on preprocess.features.objects {', '.join(repr(n) for n in unmasked)}"
        )
        raise SpecError(msg)
    if getattr(spec.train, "folds", None):
        # the k-fold graph (fold_onnx.py) combines single-input models
        msg = (
            f"train.folds is not supported with model kind {kind!r} yet; train one model "
            "(remove train.folds) or use kind 'mlp' / 'xgboost' for k-folding"
        )
        raise SpecError(msg)
    if SCALARS_INPUT in objects:
        msg = (
            f"a collection named {SCALARS_INPUT!r} would clash with the scalars' input of a "
            f"{kind!r} model; rename it (define its fields under another name)"
        )
        raise SpecError(msg)


def field_offset_scale(info: FeatureInfo, names: tuple[str, ...]) -> tuple[float, float]:
    """One ``(offset, scale)`` for the columns *names* (the slots of one field), pooled.

    ``standard``: mean and standard deviation over all slots' values; ``minmax``: the
    smallest minimum and the range; ``none``: (0, 1). A zero scale becomes 1.
    """
    if info.normalize == "none":
        return 0.0, 1.0
    index = {n: i for i, n in enumerate(info.names)}
    stats = [info.stats.get(n) or {} for n in names]
    if any(s.get("count") is None or s.get("mean") is None for s in stats):
        # no statistics recorded for a slot: average the per-column constants instead
        cols = [index[n] for n in names]
        return float(np.mean(info.offset[cols])), _safe(float(np.mean(info.scale[cols])))
    counts = np.array([s["count"] for s in stats], dtype=np.float64)
    if info.normalize == "minmax":
        lo = min(float(s["min"]) for s in stats)
        hi = max(float(s["max"]) for s in stats)
        return lo, _safe(hi - lo)
    means = np.array([s["mean"] for s in stats], dtype=np.float64)
    stds = np.array([s["std"] for s in stats], dtype=np.float64)
    total = max(float(counts.sum()), 1.0)
    mean = float((counts * means).sum() / total)
    var = float((counts * (stds**2 + (means - mean) ** 2)).sum() / total)
    return mean, _safe(math.sqrt(max(var, 0.0)))


def _safe(scale: float) -> float:
    return scale if scale > 0 and math.isfinite(scale) else 1.0
