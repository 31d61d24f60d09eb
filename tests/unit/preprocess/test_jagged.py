"""The numpy fast paths for jagged columns agree with awkward on any list layout."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlaas4hep.preprocess import jagged

LISTS = st.lists(st.lists(st.floats(-100, 100, allow_nan=False, width=32), max_size=5), max_size=12)


def typed(lists: list[list[float]]) -> ak.Array:
    """A float32 list array (ak.Array([[]]) would have an unknown element type)."""
    flat = np.array([v for sub in lists for v in sub], dtype=np.float32)
    offsets = np.concatenate([[0], np.cumsum([len(sub) for sub in lists], dtype=np.int64)])
    return jagged.make(offsets, flat)


@settings(max_examples=150, deadline=None)
@given(LISTS, st.sampled_from(["count", "sum", "mean", "min", "max"]))
def test_reductions_match_awkward(lists: list[list[float]], f: str) -> None:
    x = typed(lists)
    found = jagged.parts(x)
    assert found is not None
    got = jagged.reduce(f, found, -7.0)
    want = {
        "count": lambda: [len(v) for v in lists],
        "sum": lambda: [sum(np.float32(a) for a in v) for v in lists],
        "mean": lambda: [np.mean(np.float32(v)) if v else -7.0 for v in lists],
        "min": lambda: [min(np.float32(v)) if v else -7.0 for v in lists],
        "max": lambda: [max(np.float32(v)) if v else -7.0 for v in lists],
    }[f]()
    np.testing.assert_allclose(got, np.asarray(want, dtype=np.float64), rtol=1e-5, atol=1e-4)


@settings(max_examples=100, deadline=None)
@given(LISTS, st.floats(-100, 100))
def test_masks_and_boolean_reductions_match_awkward(lists: list[list[float]], cut: float) -> None:
    x = typed(lists)
    m = x > cut
    np.testing.assert_equal(jagged.apply_mask(x, m).to_list(), x[m].to_list())
    found = jagged.parts(m)
    assert found is not None
    assert jagged.reduce("count", found).tolist() == ak.sum(m, axis=1).to_list()
    assert jagged.reduce("any", found).tolist() == ak.any(m, axis=1).to_list()
    assert jagged.reduce("all", found).tolist() == ak.all(m, axis=1).to_list()


def test_sliced_and_unusual_layouts() -> None:
    x = ak.Array([[1.0, 2.0], [], [3.0], [4.0, 5.0, 6.0]])[1:]  # offsets not from 0
    found = jagged.parts(x)
    assert found is not None
    assert found[0].tolist() == [0, 0, 1, 4]
    assert jagged.reduce("sum", found).tolist() == [0.0, 3.0, 15.0]
    assert jagged.parts(ak.Array([[[1.0]]])) is None  # nested lists: awkward's own path
    assert jagged.parts(np.arange(3)) is None


@pytest.mark.parametrize(("descending", "expected"), [(True, True), (False, False)])
def test_is_sorted_ignores_event_boundaries(descending: bool, expected: bool) -> None:
    offsets = np.array([0, 2, 2, 4])
    key = np.array([5.0, 3.0, 9.0, 1.0])  # 3.0 -> 9.0 crosses an event boundary
    assert jagged.is_sorted(key, offsets, descending=descending) is expected
    assert not jagged.is_sorted(np.array([1.0, 3.0, 9.0, 1.0]), offsets, descending=True)
