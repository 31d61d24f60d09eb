"""Histogram reweighting (``preprocess.reweight``) through the streaming Preprocessor.

The statistical checks train the factor maps on the training split and test them on the
independent test split: a chi2 against the target with the variance of both samples
(the test events' sum of squared weights, and the factor's own uncertainty from the
training histograms' sum of squared weights), compared with the chi2 quantile of
probability 0.999. Each check also shows that the same test fails without reweighting.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import stats

from mlaas4hep.errors import ExpressionError, SpecError
from mlaas4hep.preprocess.pipeline import Preprocessor
from mlaas4hep.preprocess.reweight import bin_index
from mlaas4hep.spec import validate_spec

from .conftest import FakeSource, make_events, spec_dict

EVENTS = 24_000  # per class: ~100 test events in the sparsest bin
MET_AXIS = {"expr": "MET_pt", "n": 10, "lo": 0.0, "hi": 100.0}
EDGES = np.linspace(0.0, 100.0, 11)


@pytest.fixture(scope="module")
def big() -> FakeSource:
    return FakeSource(
        {
            "sig": [("sig.root", make_events(EVENTS, 21, signal=True))],
            "bkg": [("bkg.root", make_events(EVENTS, 22, signal=False))],
        }
    )


def doc(**pre: Any) -> dict[str, Any]:
    d = spec_dict(**{"cuts": [], **pre})
    d["data"]["step_size"] = 4000
    d["preprocess"]["split"] = {"validation": 0.1, "test": 0.5}
    return d


def prep(source: FakeSource, d: dict[str, Any]) -> Preprocessor:
    return Preprocessor(validate_spec(d), stream_fn=source.stream, names_fn=source.names)


def split_arrays(p: Preprocessor, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, class, weight) of every event of *split*."""
    batches = list(p.batches(split))  # type: ignore[arg-type]
    return (
        np.concatenate([b.X for b in batches]),
        np.concatenate([b.y for b in batches]).astype(np.int64),
        np.concatenate([b.w for b in batches]).astype(np.float64),
    )


def hist(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum of weights and of squared weights per MET bin."""
    return np.histogram(x, EDGES, weights=w)[0], np.histogram(x, EDGES, weights=w * w)[0]


def chi2_shapes(a: np.ndarray, var_a: np.ndarray, b: np.ndarray, var_b: np.ndarray) -> float:
    """chi2 of two histograms' shapes (each normalised to its sum); ndf = bins - 1."""
    sa, sb = a.sum(), b.sum()
    return float((((a / sa - b / sb) ** 2) / (var_a / sa**2 + var_b / sb**2)).sum())


LIMIT = float(stats.chi2.ppf(0.999, len(EDGES) - 2))


def factor_rel_var(h: dict[str, Any]) -> np.ndarray:
    """Relative variance of a training histogram's bins (sum w2 / (sum w)^2)."""
    sum_w, sum_w2 = np.asarray(h["sum_w"]), np.asarray(h["sum_w2"])
    return sum_w2 / sum_w**2


def test_flat_target_is_flat_on_independent_events(big: FakeSource) -> None:
    p = prep(big, doc(reweight=[{"variables": [MET_AXIS], "max_weight": 100}]))
    rule = p.fit().reweight["rules"][0]
    assert rule["target"] == "flat"
    assert set(rule["classes"]) == {"sig", "bkg"}
    X, y, w = split_arrays(p, "test")
    flat, no_var = np.diff(EDGES), np.zeros(len(EDGES) - 1)
    for k, name in enumerate(("bkg", "sig")):
        sel = y == k
        c, c2 = hist(X[sel, 0], w[sel])
        var = c2 + c**2 * factor_rel_var(rule["histograms"][f"class:{name}"])
        assert chi2_shapes(c, var, flat, no_var) < LIMIT, name
        # the same test sees the unweighted spectrum (falling) as not flat
        n, _ = hist(X[sel, 0], np.ones(int(sel.sum())))
        assert chi2_shapes(n, n, flat, no_var) > 10 * LIMIT, name


def test_reference_class_target_matches_that_class(big: FakeSource) -> None:
    p = prep(big, doc(reweight=[{"variables": [MET_AXIS], "target": "sig"}]))
    rule = p.fit().reweight["rules"][0]
    assert list(rule["classes"]) == ["bkg"]  # default: every class but the target
    X, y, w = split_arrays(p, "test")
    assert (w[y == 1] == 1).all()  # the target class keeps its weights
    s, s2 = hist(X[y == 1, 0], w[y == 1])
    b, b2 = hist(X[y == 0, 0], w[y == 0])
    rel = factor_rel_var(rule["histograms"]["class:bkg"])
    rel += factor_rel_var(rule["histograms"]["class:sig"])
    assert chi2_shapes(b, b2 + b**2 * rel, s, s2) < LIMIT
    n, _ = hist(X[y == 0, 0], np.ones(int((y == 0).sum())))
    assert chi2_shapes(n, n, s, s2) > 10 * LIMIT


def test_2d_factors_land_on_the_bins_hist_filled(big: FakeSource) -> None:
    met, njet = np.linspace(0, 80, 5), np.asarray([0.0, 3, 5, 20])
    axes = [{"expr": "MET_pt", "n": 4, "lo": 0, "hi": 80}, {"expr": "nJet", "edges": list(njet)}]
    p = prep(big, doc(reweight=[{"variables": axes, "classes": ["sig"], "max_weight": 1e4}]))
    rule = p.fit().reweight["rules"][0]
    assert list(rule["classes"]) == ["sig"]
    entry, h = rule["classes"]["sig"], np.asarray(rule["histograms"]["class:sig"]["sum_w"])
    assert h.shape == (4, 3)
    assert (h > 0).all()
    assert entry["clipped_bins"] == 0
    # the training events' reweighted sums are the flat target exactly (up to float32)
    sums = np.zeros((4, 3))
    for r, b in zip(p.chunks(), p.batches("train"), strict=True):
        train = r.split == 0
        assert np.array_equal(b.y, r.y[train])
        x = [r.columns["MET_pt"][train], r.columns["nJet"][train]]
        index, inside = bin_index(x, [met, njet])
        sel = inside & (b.y == 1)
        np.add.at(sums, (index[0][sel], index[1][sel]), b.w[sel])
        assert (b.w[b.y == 0] == 1).all()
    area = np.multiply.outer(np.diff(met), np.diff(njet))
    np.testing.assert_allclose(sums, h.sum() * area / area.sum(), rtol=1e-4)


def test_factors_are_clipped_at_max_weight(big: FakeSource) -> None:
    p = prep(big, doc(reweight=[{"variables": [MET_AXIS], "classes": ["bkg"], "max_weight": 2}]))
    entry = p.fit().reweight["rules"][0]["classes"]["bkg"]
    factors = np.asarray(entry["factors"])
    assert entry["clipped_bins"] > 0
    assert factors.max() == 2.0
    assert entry["total_after"] < entry["total_before"]
    X, y, w = split_arrays(p, "test")
    bkg = w[y == 0]
    assert bkg.max() == 2.0
    tail = (y == 0) & (X[:, 0] >= 60) & (X[:, 0] < 100)  # the steeply falling tail
    assert (w[tail] == 2.0).all()


def test_weights_go_in_before_and_balance_after(big: FakeSource) -> None:
    d = doc(weight="2.0", balance=True,
            reweight=[{"variables": [MET_AXIS], "classes": ["bkg"], "max_weight": 3}])  # fmt: skip
    p = prep(big, d)
    info = p.fit()
    entry = info.reweight["rules"][0]["classes"]["bkg"]
    n_train = info.events["bkg"]["train"]
    assert entry["total_before"] == pytest.approx(2.0 * n_train)  # after the weight expression
    sig_total = 2.0 * info.events["sig"]["train"]
    totals = np.array([entry["total_after"], sig_total])  # balance sees the reweighted totals
    np.testing.assert_allclose(info.class_weights, totals.sum() / (2 * totals), rtol=1e-9)
    _, y, w = split_arrays(p, "train")
    np.testing.assert_allclose(w[y == 0].sum(), w[y == 1].sum(), rtol=1e-5)


def test_a_regression_is_reweighted_as_one_group(big: FakeSource) -> None:
    d = doc(task="regression", label="MET_pt",
            reweight=[{"variables": [MET_AXIS], "target": "bkg"}])  # fmt: skip
    p = prep(big, d)
    rule = p.fit().reweight["rules"][0]
    assert rule["target"] == "dataset:bkg"
    assert list(rule["classes"]) == ["events"]
    target = np.asarray(rule["histograms"]["dataset:bkg"]["sum_w"])
    both = np.asarray(rule["histograms"]["class:events"]["sum_w"])
    assert (target < both).all()  # the dataset's events only


def test_dropped_events_drop_their_variables_too(big: FakeSource) -> None:
    d = doc(define={"x": "where(MET_pt > 90, log(-MET_pt), MET_pt)"}, nonfinite="drop",
            reweight=[{"variables": [MET_AXIS]}])  # fmt: skip
    d["preprocess"]["features"]["scalars"] = ["MET_pt", "x"]
    p = prep(big, d)
    p.fit()
    results = list(p.chunks())
    assert sum(r.dropped for r in results) > 0
    for r in results:
        assert len(r.columns["MET_pt"]) == len(r.y)


def test_object_expressions_as_variables_follow_the_cuts(source: FakeSource) -> None:
    lead = {"expr": "first(sort_by(Jet_pt, Jet_pt), 0)", "n": 5, "lo": 20, "hi": 220}
    p = prep(source, doc(cuts=["MET_pt > 30"], reweight=[{"variables": [lead]}]))
    column = p.fit().names.index("Jet_pt_0")  # the leading jet, as a feature
    for r in p.chunks():
        assert len(r.y) < r.n_in  # the cut removed events
        np.testing.assert_allclose(r.columns[lead["expr"]], r.X[:, column], rtol=1e-6)


# -- bad specs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ([MET_AXIS] * 3, "takes 1 or 2 variables, got 3"),
        ([{"expr": "MET_pt", "edges": [0, 2, 1]}], "strictly increasing"),
        ([{"expr": "MET_pt", "edges": [0]}], "strictly increasing"),
        ([{"expr": "MET_pt", "n": 5, "lo": 3, "hi": 3}], "lo must be below hi"),
        ([{"expr": "MET_pt", "n": 0, "lo": 0, "hi": 3}], "greater than or equal to 1"),
        ([{"expr": "MET_pt", "edges": [0, 1], "n": 3}], "not both"),
        ([{"expr": "MET_pt", "n": 3, "lo": 0}], "give the binning"),
        ([{"expr": "MET_pt", "n": 1000, "lo": 0, "hi": 1}] * 2, "at most 100000 bins"),
    ],
)
def test_bad_variables_or_binning_are_spec_errors(variables: list[Any], message: str) -> None:
    with pytest.raises(SpecError, match=r"preprocess\.reweight\.0") as err:
        validate_spec(doc(reweight=[{"variables": variables}]))
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"target": "signal"}, "target 'signal' is neither 'flat' nor a class or dataset"),
        ({"classes": ["sgi"]}, "'sgi' is not a class; classes: ['bkg', 'sig'] (closest: 'sig')"),
        ({"target": "sig", "classes": ["sig"]}, "class 'sig' is the target itself"),
    ],
)
def test_unknown_targets_and_classes_are_spec_errors(
    source: FakeSource, rule: dict[str, Any], message: str
) -> None:
    d = doc(reweight=[{"variables": [MET_AXIS], **rule}])
    with pytest.raises(SpecError) as err:
        prep(source, d)
    assert message in str(err.value)
    if "neither" in message:
        assert "choices: ['flat', 'bkg', 'sig'] (closest: 'sig')" in str(err.value)


def test_a_class_reweighted_twice_is_a_spec_error(source: FakeSource) -> None:
    rules = [{"variables": [MET_AXIS]}, {"variables": [MET_AXIS], "classes": ["sig"]}]
    with pytest.raises(SpecError, match=r"class 'sig' is already reweighted by .*\[0\]"):
        prep(source, doc(reweight=rules))


def test_unknown_variable_names_are_spec_errors(source: FakeSource) -> None:
    p = prep(source, doc(reweight=[{"variables": [{**MET_AXIS, "expr": "abs(MET_ptt)"}]}]))
    with pytest.raises(
        SpecError, match=r"variables\[0\] 'abs\(MET_ptt\)' .*'MET_ptt' \(closest: 'MET_pt'"
    ):
        p.fit()


def test_a_per_object_variable_is_refused(source: FakeSource) -> None:
    p = prep(source, doc(reweight=[{"variables": [{**MET_AXIS, "expr": "Jet_pt"}]}]))
    with pytest.raises(ExpressionError, match="one value per event"):
        p.fit()
