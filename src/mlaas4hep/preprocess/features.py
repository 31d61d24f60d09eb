"""Feature columns: names and order, and turning object collections into fixed length.

Order: the scalars as listed, then each collection in the order given, field by field,
object by object (``Jet_pt_0 .. Jet_pt_5, Jet_eta_0 ..``), then its mask columns
(``Jet_mask_0 ..``: 1.0 where an object is present, 0.0 where padded).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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


# Rows written per block: a block of the row-major matrix stays in the CPU cache while all
# of its columns are written, instead of every column pass streaming the whole matrix.
_BLOCK_ROWS = 16384


def build_matrix(
    columns: Mapping[str, Any], features: FeaturesSpec, keep: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    """The float32 feature matrix (events where *keep*, n_features) from the columns.

    *columns* holds 1-D numpy arrays for scalars (already filtered by *keep*) and awkward
    ``var`` arrays for object fields (all events, selections applied); types were checked
    when the pipeline was bound.
    """
    index = np.flatnonzero(keep)
    n = len(index)
    n_features = len(features.scalars) + sum(
        o.length * (len(o.fields) + int(o.mask)) for o in features.objects.values()
    )
    X = np.empty((n, n_features), dtype=np.float32)
    scalars = [columns[name] for name in features.scalars]
    blocks = [_ObjectBlock.prepare(columns, c, o) for c, o in features.objects.items()]
    for start in range(0, n, _BLOCK_ROWS):
        rows = slice(start, min(start + _BLOCK_ROWS, n))
        part = X[rows]
        for j, column in enumerate(scalars):
            part[:, j] = column[rows]
        j = len(scalars)
        for block in blocks:
            j = block.fill(part, j, index[rows])
    return X


@dataclass(frozen=True)
class _ObjectBlock:
    """One collection's fields, checked and (if needed) sorted once per chunk."""

    obj: ObjectFeatureSpec
    offsets: np.ndarray[Any, Any]
    contents: list[np.ndarray[Any, Any]]
    order: np.ndarray[Any, Any] | None  # flat permutation sorting each event, if needed

    @classmethod
    def prepare(cls, columns: Mapping[str, Any], coll: str, obj: ObjectFeatureSpec) -> _ObjectBlock:
        flat = [_flat(columns[f"{coll}_{f}"]) for f in obj.fields]
        offsets = flat[0][0]
        for f, (other, _) in zip(obj.fields[1:], flat[1:], strict=True):
            if not jagged.same_lists(offsets, other):
                msg = (
                    f"{coll}_{f} and {coll}_{obj.fields[0]} have different numbers of objects "
                    f"per event, so they are not fields of one collection {coll!r}"
                )
                raise DataQualityError(msg)
        order = _sort_order(columns, coll, obj, offsets)
        return cls(obj, offsets, [content for _, content in flat], order)

    def fill(self, X: np.ndarray[Any, Any], j: int, index: np.ndarray[Any, Any]) -> int:
        """Write this block's columns of the rows of events *index* from column *j* on.

        Works per (event, slot) rather than per object: a gather of ``length`` values per
        event and field, padded where the event has fewer objects. Returns the next column.
        """
        obj, offsets = self.obj, self.offsets
        length = obj.length
        src = np.add.outer(offsets.take(index), np.arange(length))  # flat position per slot
        valid = src < offsets.take(index + 1)[:, None]
        total = int(offsets[-1])
        np.minimum(src, max(total - 1, 0), out=src)  # padded slots read any valid object
        if self.order is not None:
            src = self.order.take(src)
        padded = np.flatnonzero(~valid)  # (event, slot) cells without an object, flat
        for content in self.contents:
            if total:
                values = content.take(src)
                values.reshape(-1)[padded] = obj.pad
                X[:, j : j + length] = values
            else:
                X[:, j : j + length] = obj.pad
            j += length
        if obj.mask:
            X[:, j : j + length] = valid.view(np.uint8)  # uint8 -> float32 casts much faster
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
