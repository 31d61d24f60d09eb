"""``clean_charts``: a run's confusion matrix, regression map and importance reach the job
page as written by training, and a hostile ``curves.json`` brings nothing malformed."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from mlaas4hep.jobs.run_compare import MAX_CELLS, MAX_CLASSES, MAX_FEATURES, clean_charts
from mlaas4hep.train.curves import curves_document
from mlaas4hep.train.evaluate import ScoreAccumulator
from mlaas4hep.train.resolution import regression_report


def written() -> dict[str, Any]:
    """What training writes for a 3-class run and for a regression, merged."""
    rng = np.random.default_rng(1)
    multi = ScoreAccumulator("multiclass", 3)
    multi.add(rng.dirichlet(np.ones(3), 300), rng.integers(0, 3, 300), np.ones(300))
    reg = ScoreAccumulator("regression", 1)
    truth = rng.uniform(1, 10, 300)
    reg.add((truth * 1.1)[:, None], truth, np.ones(300))
    importance = {"metric": "auc", "features": [{"name": "x", "importance": 0.1, "std": 0.01}]}
    doc = curves_document([], multi, multi, ["a", "b", "c"], {"permutation_importance": importance})
    s, y, w = reg.arrays()
    report = {"regression": regression_report(s[:, 0], y, w)}
    return doc | {"regression": curves_document([], reg, reg, [], report)["regression"]}


def test_what_training_writes_passes_unchanged() -> None:
    doc = written()
    assert clean_charts(doc) == {k: doc[k] for k in ("confusion", "regression", "importance")}


def test_malformed_sections_are_dropped_whole() -> None:
    doc = written()
    bad: list[tuple[str, Any]] = [
        ("confusion", {**doc["confusion"], "fraction": doc["confusion"]["fraction"][:2]}),
        ("confusion", {**doc["confusion"], "classes": ["a"] * (MAX_CLASSES + 1)}),
        ("confusion", {**doc["confusion"], "events": [[1, 2, 3], "x", [1, 2, 3]]}),
        ("regression", {**doc["regression"], "edges": doc["regression"]["edges"][::-1]}),
        ("regression", {**doc["regression"], "edges": [0.0, float("nan"), 1.0]}),
        ("regression", {**doc["regression"], "counts": [[0.0] * 60] * 59}),
        ("regression", {**doc["regression"], "edges": list(range(MAX_CELLS + 2))}),
        ("importance", {"metric": "auc", "features": "x"}),
        ("confusion", "<script>"),
    ]
    for key, value in bad:
        assert key not in clean_charts({**doc, key: value}), (key, value)


def test_labels_and_numbers_are_bounded() -> None:
    doc = copy.deepcopy(written())
    doc["confusion"]["classes"][0] = "<b>" + "x" * 100 + "\x00"
    doc["confusion"]["weight"][0][0] = float("inf")
    doc["confusion"]["events"][0][1] = "3"
    doc["importance"]["features"] = [{"name": "\u202e" * 3, "importance": True}] * 500
    doc["regression"]["bins"][0]["response"] = "1"
    out = clean_charts(doc)
    assert out["confusion"]["classes"][0] == "<b>" + "x" * 61  # text, cut; shown as text
    assert out["confusion"]["weight"][0][0] is None
    assert out["confusion"]["events"][0][1] is None
    assert len(out["importance"]["features"]) == MAX_FEATURES
    assert out["importance"]["features"][0] == {"name": "", "importance": None, "std": None}
    assert out["regression"]["bins"][0]["response"] is None
