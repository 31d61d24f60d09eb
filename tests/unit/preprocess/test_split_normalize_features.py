"""Split by identifier hash, streaming statistics, fixed-length object features, labels."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlaas4hep.errors import SpecError
from mlaas4hep.preprocess.features import build_matrix, feature_names
from mlaas4hep.preprocess.labels import plan_labels
from mlaas4hep.preprocess.normalize import FeatureStats, offset_scale
from mlaas4hep.preprocess.split import assign_split, event_hash
from mlaas4hep.spec import FeaturesSpec, validate_spec

from .conftest import spec_dict


def ids(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        np.full(n, 1, dtype=np.uint32),
        rng.integers(1, 1000, n).astype(np.uint32),
        rng.permutation(n * 10)[:n].astype(np.uint64),
    ]


def test_split_depends_only_on_the_event() -> None:
    cols = ids(20_000)
    whole = assign_split(cols, validation=0.2, test=0.1, seed=3)
    perm = np.random.default_rng(1).permutation(20_000)
    shuffled = assign_split([c[perm] for c in cols], validation=0.2, test=0.1, seed=3)
    assert np.array_equal(whole[perm], shuffled)
    pieces = np.concatenate(
        [
            assign_split([c[i : i + 777] for c in cols], validation=0.2, test=0.1, seed=3)
            for i in range(0, 20_000, 777)
        ]
    )
    assert np.array_equal(whole, pieces)
    frac = np.bincount(whole, minlength=3) / len(whole)
    assert frac == pytest.approx([0.7, 0.2, 0.1], abs=0.015)
    other_seed = assign_split(cols, validation=0.2, test=0.1, seed=4)
    assert (other_seed != whole).mean() > 0.3


def test_split_hash_mixes_every_identifier() -> None:
    base = ids(1000)
    h = event_hash(base, seed=0)
    for i in range(3):
        changed = [c.copy() for c in base]
        changed[i] = changed[i] + 1
        assert (event_hash(changed, seed=0) != h).all()
    assert len(np.unique(h)) == 1000


def test_no_validation_or_test_means_all_train() -> None:
    assert not assign_split(ids(50), validation=0.0, test=0.0, seed=1).any()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 400), min_size=1, max_size=6), st.integers(0, 2**31))
def test_streaming_stats_equal_numpy(sizes: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    X = rng.normal(1e4, 3.0, (sum(sizes), 3)).astype(np.float32)
    X[rng.random(X.shape) < 0.05] = np.nan
    stats = FeatureStats(3)
    start = 0
    for s in sizes:
        stats.update(X[start : start + s])
        start += s
    for j in range(3):
        col = X[:, j][np.isfinite(X[:, j])].astype(np.float64)
        assert stats.count[j] == len(col)
        assert stats.nonfinite[j] == len(X) - len(col)
        if len(col):
            assert stats.mean[j] == pytest.approx(col.mean(), rel=1e-12)
            assert stats.std()[j] == pytest.approx(col.std(), rel=1e-6, abs=1e-9)
            assert stats.min[j] == col.min()


def test_offset_scale_never_divides_by_zero() -> None:
    stats = FeatureStats(3)
    stats.update(np.array([[1.0, 5.0, 0.0], [3.0, 5.0, 2.0]], dtype=np.float32))
    off, sc = offset_scale(stats, "standard")
    assert off.tolist() == [2.0, 5.0, 1.0]
    assert sc.tolist() == [1.0, 1.0, 1.0]  # std 1, constant -> 1, std 1
    off, sc = offset_scale(stats, "minmax")
    assert off.tolist() == [1.0, 5.0, 0.0]
    assert sc.tolist() == [2.0, 1.0, 2.0]
    off, sc = offset_scale(stats, "none")
    assert off.dtype == np.float32
    assert sc.tolist() == [1.0, 1.0, 1.0]


def test_objects_are_sorted_clipped_padded_and_masked() -> None:
    features = FeaturesSpec.model_validate(
        {
            "scalars": ["MET"],
            "objects": {
                "Jet": {
                    "fields": ["pt", "eta"],
                    "sort_by": "pt",
                    "length": 2,
                    "pad": -9,
                    "mask": True,
                }
            },
        }
    )
    cols = {
        "MET": np.array([1.0, 2.0, 3.0]),
        "Jet_pt": ak.Array([[10.0, 30.0, 20.0], [], [5.0]]),
        "Jet_eta": ak.Array([[0.1, 0.3, 0.2], [], [0.5]]),
    }
    X = build_matrix(cols, features, np.ones(3, dtype=bool))
    assert feature_names(features) == (
        "MET",
        "Jet_pt_0",
        "Jet_pt_1",
        "Jet_eta_0",
        "Jet_eta_1",
        "Jet_mask_0",
        "Jet_mask_1",
    )
    assert X.dtype == np.float32
    np.testing.assert_allclose(
        X,
        [
            [1, 30, 20, 0.3, 0.2, 1, 1],
            [2, -9, -9, -9, -9, 0, 0],
            [3, 5, -9, 0.5, -9, 1, 0],
        ],
        rtol=1e-6,
    )


def test_labels_binary_multiclass_regression() -> None:
    d = spec_dict()
    plan = plan_labels(validate_spec(d))
    assert (plan.task, plan.n_classes, plan.class_names) == ("binary", 1, ("bkg", "sig"))
    d["data"]["datasets"].append({"name": "ttbar", "files": ["t.root"], "label": 2})
    plan = plan_labels(validate_spec(d))
    assert (plan.task, plan.n_classes) == ("multiclass", 3)
    assert plan.targets == {"sig": 1.0, "bkg": 0.0, "ttbar": 2.0}
    d["preprocess"]["task"] = "binary"
    with pytest.raises(SpecError, match="0 and 1"):
        plan_labels(validate_spec(d))
    d = spec_dict(label="MET_pt * 2")
    assert plan_labels(validate_spec(d)).task == "regression"
    d = spec_dict()
    for ds in d["data"]["datasets"]:
        ds["label"] = None
    with pytest.raises(SpecError, match="no label"):
        plan_labels(validate_spec(d))
    d["preprocess"]["task"] = "multiclass"
    assert plan_labels(validate_spec(d)).class_names == ("sig", "bkg")
