"""The evaluation a physicist would publish: every figure and plot of a finished run.

``evaluate_run`` takes the test scores (all events), the bounded train-score sample, the
bounded test-feature sample and the model's predict function, and returns the sections
of ``metrics.json`` (docs/training.md, "Evaluation") with the plots it wrote:

    working_points          working_points.py   eff_s at fixed eff_b and back, both weightings
    overtraining            overtraining.py     KS tests train vs test per class
    confusion_matrix        evaluate.py         normalised by true class, both weightings
    regression              resolution.py       response and resolution vs truth
    permutation_importance  importance.py       every engine, through predict
    evaluation_seconds      how long each part took

Pure of training: it never sees an engine, so it is tested on fixed scores.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlaas4hep.train import plots
from mlaas4hep.train.curves import CURVES_FILE, write_curves
from mlaas4hep.train.evaluate import (
    ScoreAccumulator,
    confusion_matrix,
    normalized_confusion,
    predicted_class,
)
from mlaas4hep.train.importance import Predict, ReservoirSample, permutation_importance
from mlaas4hep.train.overtraining import ks_tests
from mlaas4hep.train.resolution import regression_report
from mlaas4hep.train.reweight_plots import plot_reweighting
from mlaas4hep.train.working_points import all_working_points

if TYPE_CHECKING:
    from mlaas4hep.preprocess.pipeline import FeatureInfo


@dataclass
class Evaluation:
    """What ``evaluate_run`` produced: ``metrics.json`` sections, headline extras, plots."""

    sections: dict[str, Any] = field(default_factory=dict)
    test: dict[str, Any] = field(default_factory=dict)  # scalars added to metrics["test"]
    plots: list[Path] = field(default_factory=list)


def evaluate_run(
    directory: Path,
    info: FeatureInfo,
    history: Sequence[dict[str, Any]],
    train: ScoreAccumulator,
    test: ScoreAccumulator,
    *,
    predict: Predict | None = None,
    sample: ReservoirSample | None = None,
    model_importances: np.ndarray | None = None,
) -> Evaluation:
    """Compute every figure, write every plot into *directory* (created)."""
    directory.mkdir(parents=True, exist_ok=True)
    out, seconds = Evaluation(), {}
    started = time.monotonic()
    _figures(out, info, train, test)
    seconds["figures"] = time.monotonic() - started
    started = time.monotonic()
    arrays = sample.arrays() if sample is not None else None
    if predict is not None and arrays is not None:
        X, y, w = arrays
        out.sections["permutation_importance"] = permutation_importance(
            predict, X, y, w, info.task, test.n_classes, info.names
        )
    seconds["permutation_importance"] = time.monotonic() - started
    started = time.monotonic()
    out.plots = _plots(directory, info, history, train, test, out.sections, model_importances)
    # The same curves as points, for the web UI's interactive charts (train/curves.py).
    write_curves(directory / CURVES_FILE, history, train, test, info.class_names, out.sections)
    seconds["plots"] = time.monotonic() - started
    out.sections["plots"] = [p.name for p in out.plots]
    out.sections["evaluation_seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    return out


def _figures(
    out: Evaluation, info: FeatureInfo, train: ScoreAccumulator, test: ScoreAccumulator
) -> None:
    scores, y, w = test.arrays()
    if len(y) == 0:
        return
    names = info.class_names
    out.sections["overtraining"] = {"score_sample_events": train.n_events,
                                    "tests": ks_tests(train, test, names)}  # fmt: skip
    if test.task == "regression":
        report = regression_report(scores[:, 0], y, w)
        out.sections["regression"] = report
        keys = ("response", "resolution", "response_unweighted", "resolution_unweighted")
        out.test |= {k: report[k] for k in keys}
        return
    out.sections["working_points"] = all_working_points(test.task, scores, y, w, names)
    pred = predicted_class(test.task, scores)
    k = test.n_classes
    out.sections["confusion_matrix"] = {
        "classes": [names[i] if i < len(names) else f"class {i}" for i in range(k)],
        "normalized_by": "true class",
        "weighted": normalized_confusion(confusion_matrix(y, pred, w, k)).tolist(),
        "unweighted": normalized_confusion(confusion_matrix(y, pred, np.ones(len(y)), k)).tolist(),
    }


def _plots(
    directory: Path,
    info: FeatureInfo,
    history: Sequence[dict[str, Any]],
    train: ScoreAccumulator,
    test: ScoreAccumulator,
    sections: dict[str, Any],
    model_importances: np.ndarray | None,
) -> list[Path]:
    names = info.class_names
    ks = sections.get("overtraining", {}).get("tests", [])
    made = [plots.plot_history(directory / "history.png", history)]
    if test.n_events:
        made.append(plots.plot_scores(directory / "scores.png", train, test, names, ks))
        made.append(
            plots.plot_scores(directory / "scores_log.png", train, test, names, ks, log=True)
        )
    if test.task == "regression" and test.n_events:
        made.append(plots.plot_regression(directory / "regression.png", test))
        made.append(plots.plot_response(directory / "response.png", sections["regression"]))
    elif test.n_events:
        made.append(plots.plot_roc(directory / "roc.png", test, names, train))
        if test.task == "multiclass":
            made.append(plots.plot_confusion(directory / "confusion.png", test, names))
    if "permutation_importance" in sections:
        made.append(
            plots.plot_permutation_importance(
                directory / "permutation_importance.png", sections["permutation_importance"]
            )
        )
    if model_importances is not None:
        made.append(
            plots.plot_importances(directory / "importance.png", info.names, model_importances)
        )
    made += plot_reweighting(directory, info.reweight)  # preprocess.reweight, if any
    return made
