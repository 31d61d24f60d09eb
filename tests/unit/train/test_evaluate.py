from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlaas4hep.train import evaluate


def test_auc_of_perfect_reversed_and_tied_scores() -> None:
    y = np.array([0, 0, 1, 1])
    w = np.ones(4)
    assert evaluate.roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), y == 1, w) == pytest.approx(1.0)
    assert evaluate.roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), y == 1, w) == pytest.approx(0.0)
    assert evaluate.roc_auc(np.full(4, 0.5), y == 1, w) == pytest.approx(0.5)


def test_auc_is_nan_with_one_class() -> None:
    assert np.isnan(evaluate.roc_auc(np.array([0.1, 0.9]), np.array([True, True]), np.ones(2)))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.booleans(), st.integers(1, 3)), min_size=2, max_size=40
    )
)
def test_weighted_auc_equals_pairwise_probability(rows: list[tuple[int, bool, int]]) -> None:
    s = np.array([r[0] for r in rows], float)
    pos = np.array([r[1] for r in rows])
    w = np.array([r[2] for r in rows], float)
    if pos.all() or not pos.any():
        return
    # P(score_signal > score_background) + 0.5 P(tie), weighted over pairs.
    ws, wb = w[pos], w[~pos]
    diff = s[pos][:, None] - s[~pos][None, :]
    pair_w = ws[:, None] * wb[None, :]
    expected = (pair_w * ((diff > 0) + 0.5 * (diff == 0))).sum() / pair_w.sum()
    assert evaluate.roc_auc(s, pos, w) == pytest.approx(expected)


def test_weight_two_equals_a_duplicated_event() -> None:
    s, y = np.array([0.2, 0.6, 0.4, 0.9]), np.array([0, 0, 1, 1])
    w = np.array([1.0, 2.0, 1.0, 1.0])
    s2, y2 = np.r_[s, 0.6], np.r_[y, 0]
    assert evaluate.roc_auc(s, y == 1, w) == pytest.approx(
        evaluate.roc_auc(s2, y2 == 1, np.ones(5))
    )


def test_confusion_matrix_and_accuracy_are_weighted() -> None:
    scores = np.array([[0.1], [0.7], [0.6], [0.2]], np.float32)
    y = np.array([0, 0, 1, 1], np.float32)
    w = np.array([1.0, 2.0, 1.0, 1.0], np.float32)
    m = evaluate.classification_metrics("binary", scores, y, w, 2)
    assert m["confusion_matrix"] == [[1.0, 2.0], [1.0, 1.0]]
    assert m["accuracy"] == pytest.approx(2 / 5)


def test_multiclass_metrics_one_vs_rest() -> None:
    y = np.array([0, 1, 2, 2])
    scores = np.eye(3, dtype=np.float32)[y] * 0.8 + 0.2 / 3
    m = evaluate.classification_metrics("multiclass", scores, y, np.ones(4), 3)
    assert m["auc_per_class"] == pytest.approx([1.0, 1.0, 1.0])
    assert m["accuracy"] == pytest.approx(1.0)
    assert m["loss"] == pytest.approx(-np.log(0.8 + 0.2 / 3))


def test_losses_match_their_definitions() -> None:
    p = np.array([[0.8], [0.3]], np.float32)
    y = np.array([1.0, 0.0])
    w = np.array([1.0, 3.0])
    bce = (-np.log(0.8) - 3 * np.log(0.7)) / 4
    assert evaluate.loss("binary", p, y, w) == pytest.approx(bce, rel=1e-6)
    assert evaluate.loss("regression", p, y, w) == pytest.approx((0.04 + 3 * 0.09) / 4, rel=1e-6)


def test_accumulator_concatenates_batches() -> None:
    acc = evaluate.ScoreAccumulator("binary", 2)
    acc.add(np.array([[0.9], [0.1]]), np.array([1.0, 0.0]), np.ones(2))
    acc.add(np.array([0.8]), np.array([1.0]), np.ones(1))
    m = acc.metrics()
    assert m["n_events"] == 3
    assert m["auc"] == pytest.approx(1.0)
    assert evaluate.ScoreAccumulator("binary", 2).metrics() == {"n_events": 0, "sum_weights": 0.0}
