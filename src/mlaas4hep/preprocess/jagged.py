"""Fast paths for jagged (per-object) columns: work on offsets and flat content in numpy.

Awkward's general slicing machinery is correct for every layout but costs more than the
decompression of the data for the simple case that dominates here: a list of numbers per
event (``ListOffsetArray`` of ``NumpyArray``), as uproot returns for ``Jet_pt``. These
helpers handle that case with a few numpy calls and fall back to awkward for anything
else, so results are identical either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np

Parts = tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]  # (offsets from 0, flat content)


def parts(x: Any) -> Parts | None:
    """``(offsets, content)`` of a list-of-numbers array, or None for other layouts."""
    if not isinstance(x, ak.Array):
        return None
    layout = x.layout
    if not isinstance(layout, ak.contents.ListOffsetArray):
        return None
    inner = layout.content
    if not isinstance(inner, ak.contents.NumpyArray) or inner.data.ndim != 1:
        return None
    offsets = np.asarray(layout.offsets.data, dtype=np.int64)
    content = np.asarray(inner.data)
    if offsets[0] == 0 and len(content) == offsets[-1]:
        return offsets, content  # the common case: no copies, offsets keep their identity
    return offsets - offsets[0], content[offsets[0] : offsets[-1]]


def make(offsets: np.ndarray[Any, Any], content: np.ndarray[Any, Any]) -> ak.Array:
    """An awkward list-of-numbers array from offsets (from 0) and flat content."""
    return ak.Array(
        ak.contents.ListOffsetArray(
            ak.index.Index64(offsets.astype(np.int64, copy=False)), ak.contents.NumpyArray(content)
        )
    )


@dataclass(frozen=True)
class Selection:
    """A per-object mask prepared once, to apply to every column of its collection."""

    offsets: np.ndarray[Any, Any]  # the lists the mask was made for
    new_offsets: np.ndarray[Any, Any]  # the lists after selection
    index: np.ndarray[Any, Any]  # flat positions of the kept objects

    @classmethod
    def from_mask(cls, mask: Parts) -> Selection:
        offsets, keep = mask
        # integer positions + take: several times faster than boolean indexing per column
        index = np.flatnonzero(keep)
        return cls(offsets, _running_count(keep).take(offsets), index)

    def counts(self) -> np.ndarray[Any, Any]:
        """Objects kept per event."""
        return np.diff(self.new_offsets)


def apply_mask(x: Any, mask: Any, selection: Selection | None = None) -> Any:
    """``x[mask]`` for a per-object boolean mask of the same lists (fast when possible)."""
    px = parts(x)
    if selection is None:
        pm = parts(mask)
        selection = Selection.from_mask(pm) if pm is not None else None
    if px is None or selection is None or not same_lists(px[0], selection.offsets):
        return x[mask]
    return make(selection.new_offsets, px[1].take(selection.index))


def same_lists(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> bool:
    """True when two offsets arrays describe the same lists."""
    return a is b or (len(a) == len(b) and bool(np.array_equal(a, b)))


def is_sorted(
    key: np.ndarray[Any, Any], offsets: np.ndarray[Any, Any], *, descending: bool
) -> bool:
    """True when *key* is already ordered within every event (NanoAOD pt usually is)."""
    if len(key) < 2:
        return True
    wrong = key[1:] > key[:-1] if descending else key[1:] < key[:-1]
    # pairs that straddle two events do not count
    cross = offsets[1:-1] - 1
    wrong[cross[(cross >= 0) & (cross < len(wrong))]] = False
    return not bool(wrong.any())


def reduce(f: str, lists: Parts, default: float = np.nan) -> np.ndarray[Any, Any]:
    """Per-event ``count``/``sum``/``any``/``all``/``mean``/``min``/``max`` of lists.

    Same results as the awkward reductions used for other layouts: ``count`` of booleans
    counts the true ones, ``sum`` of booleans too; ``min``/``max``/``mean`` of an empty
    list give *default*; sums of floats are accumulated in float64.
    """
    offsets, content = lists
    counts = np.diff(offsets)
    if f == "count" and content.dtype != np.bool_:
        return counts.astype(np.int64)
    if f == "mean":
        total = _segment_sum(content, offsets, counts, np.float64)
        with np.errstate(all="ignore"):
            return np.where(counts > 0, total / np.maximum(counts, 1), default)
    if f in ("min", "max"):
        if not len(content):
            return np.full(len(counts), default, dtype=np.float64)
        ufunc = np.minimum if f == "min" else np.maximum
        out = np.full(len(counts), default, dtype=np.float64)
        filled = counts > 0
        out[filled] = ufunc.reduceat(content, offsets[:-1][filled])
        return out
    if content.dtype == np.bool_:
        hits = _count_true(content, offsets)
        if f == "any":
            return np.asarray(hits > 0)
        if f == "all":
            return np.asarray(hits == counts)
        return hits  # count / sum of booleans
    acc = np.float64 if content.dtype.kind == "f" else np.int64
    out = _segment_sum(content, offsets, counts, acc)
    return out.astype(content.dtype) if content.dtype.kind == "f" else out


def _count_true(
    content: np.ndarray[Any, Any], offsets: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    """Per-list number of true values: differences of one running count (exact)."""
    return np.diff(_running_count(content).take(offsets))


def _running_count(flags: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``[0, f0, f0+f1, ...]``: the true values before each position."""
    running = np.empty(len(flags) + 1, dtype=np.int64)
    running[0] = 0
    np.cumsum(flags, dtype=np.int64, out=running[1:])  # in place: no concatenated copy
    return running


def event_index(offsets: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The event (list) number of every flat object: ``repeat(arange(n), counts)``, faster."""
    n_objects = int(offsets[-1])
    # each list start bumps the running event number; empty lists bump it at the same place
    starts = np.bincount(offsets[1:-1], minlength=n_objects + 1)[:n_objects]
    return np.cumsum(starts, dtype=np.int64)


def _segment_sum(
    content: np.ndarray[Any, Any],
    offsets: np.ndarray[Any, Any],
    counts: np.ndarray[Any, Any],
    dtype: type[np.generic],
) -> np.ndarray[Any, Any]:
    """Per-list sums accumulated in *dtype* (no converted copy of the content)."""
    if dtype is np.float64 and len(content):
        # one sequential float64 pass, like reduceat's, but without its per-list overhead
        return np.bincount(event_index(offsets), weights=content, minlength=len(counts))
    out = np.zeros(len(counts), dtype=dtype)
    filled = counts > 0
    # reduceat over the starts of non-empty lists only: each then runs exactly to the next
    # one's start (the lists in between are empty), the last to the end of the content
    out[filled] = np.add.reduceat(content, offsets[:-1][filled], dtype=dtype)
    return out
