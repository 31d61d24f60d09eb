"""Feature columns: names and order, and turning object collections into fixed length.

Order: the scalars as listed, then each collection in the order given, field by field,
object by object (``Jet_pt_0 .. Jet_pt_5, Jet_eta_0 ..``), then its mask columns
(``Jet_mask_0 ..``: 1.0 where an object is present, 0.0 where padded).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import awkward as ak
import numpy as np

from mlaas4hep.errors import DataQualityError
from mlaas4hep.preprocess import jagged
from mlaas4hep.spec import FeaturesSpec, ObjectFeatureSpec


def feature_names(features: FeaturesSpec) -> tuple[str, ...]:
    """The feature column names in matrix order."""
    names = list(features.scalars)
    for coll, obj in features.objects.items():
        for f in obj.fields:
            names += [f"{coll}_{f}_{i}" for i in range(obj.length)]
        if obj.mask:
            names += [f"{coll}_mask_{i}" for i in range(obj.length)]
    return tuple(names)


def object_columns(coll: str, obj: ObjectFeatureSpec) -> list[str]:
    """Column names an object feature block reads (fields, then the sort key)."""
    cols = [f"{coll}_{f}" for f in obj.fields]
    if obj.sort_by is not None and f"{coll}_{obj.sort_by}" not in cols:
        cols.append(f"{coll}_{obj.sort_by}")
    return cols


def build_matrix(
    columns: Mapping[str, Any], features: FeaturesSpec, keep: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    """The float32 feature matrix (events where *keep*, n_features) from the columns.

    *columns* holds 1-D numpy arrays for scalars (already filtered by *keep*) and awkward
    ``var`` arrays for object fields (all events, selections applied); types were checked
    when the pipeline was bound.
    """
    n = int(keep.sum())
    n_features = len(features.scalars) + sum(
        o.length * (len(o.fields) + int(o.mask)) for o in features.objects.values()
    )
    X = np.empty((n, n_features), dtype=np.float32)
    j = 0
    for name in features.scalars:
        X[:, j] = columns[name]
        j += 1
    index = np.flatnonzero(keep)
    for coll, obj in features.objects.items():
        j = _fill_objects(X, j, columns, index, coll, obj)
    return X


def _fill_objects(
    X: np.ndarray[Any, Any],
    j: int,
    columns: Mapping[str, Any],
    index: np.ndarray[Any, Any],
    coll: str,
    obj: ObjectFeatureSpec,
) -> int:
    """Write one collection's block of columns starting at column *j*; returns the next j.

    Works per (kept event, slot) rather than per object: a gather of ``length`` values per
    event and field, padded where the event has fewer objects.
    """
    length, nf = obj.length, len(obj.fields)
    flat = [_flat(columns[f"{coll}_{f}"]) for f in obj.fields]
    offsets = flat[0][0]
    for f, (other, _) in zip(obj.fields[1:], flat[1:], strict=True):
        if not jagged.same_lists(offsets, other):
            msg = (
                f"{coll}_{f} and {coll}_{obj.fields[0]} have different numbers of objects "
                f"per event, so they are not fields of one collection {coll!r}"
            )
            raise DataQualityError(msg)
    counts = np.diff(offsets).take(index)
    slots = np.arange(length)
    valid = slots[None, :] < counts[:, None]
    total = int(offsets[-1])
    src = offsets[:-1].take(index)[:, None] + slots[None, :]
    np.minimum(src, max(total - 1, 0), out=src)  # padded slots read any valid object
    order = _sort_order(columns, coll, obj, offsets)
    if order is not None:
        src = order.take(src)
    padded = np.flatnonzero(~valid)  # (event, slot) cells without an object, flat
    for k, (_, content) in enumerate(flat):
        block = X[:, j + k * length : j + (k + 1) * length]
        if not total:
            block[...] = obj.pad
            continue
        values = content.take(src)
        values.reshape(-1)[padded] = obj.pad
        block[...] = values
    j += nf * length
    if obj.mask:
        X[:, j : j + length] = valid
        j += length
    return j


def _flat(column: Any) -> jagged.Parts:
    found = jagged.parts(column)
    if found is not None:
        return found
    packed = ak.to_packed(column)  # unusual layout (e.g. after awkward slicing): normalise
    counts = np.asarray(ak.num(packed, axis=1), dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return offsets, np.asarray(ak.to_numpy(ak.flatten(packed, axis=1)))


def _sort_order(
    columns: Mapping[str, Any],
    coll: str,
    obj: ObjectFeatureSpec,
    offsets: np.ndarray[Any, Any],
) -> np.ndarray[Any, Any] | None:
    """Flat permutation that sorts objects within each event, or None if already sorted."""
    if obj.sort_by is None:
        return None
    key = _flat(columns[f"{coll}_{obj.sort_by}"])[1]
    if jagged.is_sorted(key, offsets, descending=obj.descending):
        return None
    local = ak.argsort(jagged.make(offsets, key), axis=1, ascending=not obj.descending, stable=True)
    flat_local = np.asarray(ak.to_numpy(ak.flatten(local, axis=1)), dtype=np.int64)
    return np.asarray(flat_local + np.repeat(offsets[:-1], np.diff(offsets)))
