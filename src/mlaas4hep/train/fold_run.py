"""A k-folded run (``train.folds``): train the k models, score out of fold, evaluate.

``run_folds`` is what ``run.run_source`` calls after the first pass when ``train.folds``
is set (``folds.py`` says how the folds are made). ``metrics.json`` is as for one model,
with the test figures computed on the out-of-fold scores (``evaluated_on:
"out-of-fold"``) and a ``folds`` section: per fold, the fold its model never saw, how
many events it trained on and scored, its own out-of-fold figures, its training summary
and history. The history plot and the top-level ``history``/``training`` are fold 0's;
the overtraining tests compare the in-fold (train) scores of every model with the
out-of-fold ones; the permutation importances are those of the averaged model.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlaas4hep import artifact
from mlaas4hep.errors import DataQualityError, TrainingError
from mlaas4hep.train.diagnostics import run_warnings
from mlaas4hep.train.evaluate import ScoreAccumulator
from mlaas4hep.train.export import PARITY_TOLERANCE
from mlaas4hep.train.folds import (
    OUT_OF_FOLD,
    FoldSettings,
    TrainedFold,
    export_folds,
    fold_source,
    train_fold,
)
from mlaas4hep.train.importance import ReservoirSample, onnx_predict
from mlaas4hep.train.progress import Progress, ProgressCallback
from mlaas4hep.train.report import evaluate_run
from mlaas4hep.train.stream import check_finite

if TYPE_CHECKING:
    from mlaas4hep.preprocess.pipeline import FeatureInfo
    from mlaas4hep.spec import PipelineSpec
    from mlaas4hep.train.run import RunResult

_HEADLINE = ("n_events", "loss", "accuracy", "auc", "rmse")


def run_folds(
    spec: PipelineSpec,
    info: FeatureInfo,
    out: Path,
    settings: FoldSettings,
    progress: ProgressCallback,
) -> RunResult:
    """Train, export and evaluate the k fold models of *spec* into *out* (no bundle files)."""
    from mlaas4hep.train.run import RunResult

    k = spec.train.folds or 0
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)  # an interrupted run's scratch
    folds = [train_fold(spec, info, i, work, settings, progress) for i in range(k)]
    progress(
        Progress("export", message=f"combining the {k} fold models into {artifact.MODEL_FILE}")
    )
    model_path = out / artifact.MODEL_FILE
    extra = {
        artifact.PROP_SPEC_HASH: spec.spec_hash(),
        artifact.PROP_FOLDS: json.dumps({"k": k, "seed": spec.preprocess.split.seed,
                                         "identifiers": list(spec.data.identifiers)}),
    }  # fmt: skip
    export_folds(folds, model_path, info, extra)
    progress(Progress("evaluate", message="scoring every event out of fold"))
    sess = _session(model_path)
    scored = score_out_of_fold(spec, info, folds, sess)
    if scored.scores.n_events == 0:
        msg = "no event passes the cuts: nothing to score out of fold; loosen the cuts"
        raise DataQualityError(msg)
    metrics, plots = _evaluate(spec, info, out, folds, scored, sess)
    return RunResult(out, model_path, metrics, metrics["history"], tuple(plots))


def _session(path: Path) -> Any:
    """An ONNX Runtime CPU session of the combined graph, quiet about its ``fold`` default
    (ORT warns that an overridable initializer is not constant-folded: it must not be)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own, unexported exception types
        msg = f"ONNX Runtime cannot load the combined fold model {str(path)!r}: {exc}"
        raise TrainingError(msg) from exc


@dataclass
class OutOfFold:
    """The out-of-fold scores of every event, per fold too, and the parity of the graph."""

    scores: ScoreAccumulator
    per_fold: list[ScoreAccumulator]
    max_abs_diff: list[float]
    average_max_abs_diff: float = 0.0
    compared: int = 0
    sample: ReservoirSample = field(default_factory=ReservoirSample)


def score_out_of_fold(
    spec: PipelineSpec, info: FeatureInfo, folds: list[TrainedFold], sess: Any
) -> OutOfFold:
    """Stream fold ``i``'s events through model ``i`` (natively and in the combined graph
    with ``fold = i``); check the graph's average on the first chunk of each fold."""
    task, n = info.task, info.n_classes
    result = OutOfFold(ScoreAccumulator(task, n), [ScoreAccumulator(task, n) for _ in folds],
                       [0.0] * len(folds))  # fmt: skip
    for trained in folds:
        first = True
        for batch in fold_source(spec, info, trained.fold, inside=True).batches(None):
            if len(batch.y) == 0:
                continue
            check_finite(batch, info.names, OUT_OF_FOLD)
            X = np.ascontiguousarray(batch.X, artifact.INPUT_DTYPE)
            native = trained.engine.predict(X)
            chosen = _run(sess, X, np.full(len(X), trained.fold, np.int64))
            result.max_abs_diff[trained.fold] = max(
                result.max_abs_diff[trained.fold], _diff(chosen, native)
            )
            if first:
                mean = np.mean([f.engine.predict(X) for f in folds], axis=0)
                diff = _diff(_run(sess, X, None), mean)
                result.average_max_abs_diff = max(result.average_max_abs_diff, diff)
                first = False
            result.compared += len(X)
            result.scores.add(native, batch.y, batch.w)
            result.per_fold[trained.fold].add(native, batch.y, batch.w)
            result.sample.add(X, batch.y, batch.w)
    return result


def _run(sess: Any, X: np.ndarray[Any, Any], fold: np.ndarray[Any, Any] | None) -> Any:
    feeds = {artifact.INPUT_TENSOR: X}
    if fold is not None:
        feeds[artifact.FOLD_INPUT] = fold
    return np.asarray(sess.run([artifact.OUTPUT_TENSOR], feeds)[0])


def _diff(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - b), initial=0.0))


def _evaluate(
    spec: PipelineSpec,
    info: FeatureInfo,
    out: Path,
    folds: list[TrainedFold],
    scored: OutOfFold,
    sess: Any,
) -> tuple[dict[str, Any], list[Path]]:
    train = ScoreAccumulator(info.task, info.n_classes)
    for f in folds:
        train.add(*f.train_scores.arrays())
    history = folds[0].loop.state.history
    evaluation = evaluate_run(
        out / "plots", info, history, train, scored.scores,
        predict=onnx_predict(sess), sample=scored.sample,
        model_importances=_mean_importances(folds),
    )  # fmt: skip
    worst = max([*scored.max_abs_diff, scored.average_max_abs_diff])
    metrics = {
        "task": info.task,
        "evaluated_on": OUT_OF_FOLD,
        "test": scored.scores.metrics() | evaluation.test,
        "train_sample": train.metrics(),
        "history": history,
        "training": folds[0].loop.summary(folds[0].seconds)
        | {"seconds": round(sum(f.seconds for f in folds), 3)},
        "onnx": {
            "max_abs_diff": worst,
            "per_fold_max_abs_diff": scored.max_abs_diff,
            "average_max_abs_diff": scored.average_max_abs_diff,
            "events_compared": scored.compared,
            "tolerance": PARITY_TOLERANCE,
            "ok": worst < PARITY_TOLERANCE,
        },
        "folds": _folds_section(spec, folds, scored),
        "has_importances": any(p.name == "importance.png" for p in evaluation.plots),
        "warnings": run_warnings(spec, info, folds[0].loop.state, train),
        **evaluation.sections,
    }
    return metrics, evaluation.plots


def _folds_section(
    spec: PipelineSpec, folds: list[TrainedFold], scored: OutOfFold
) -> dict[str, Any]:
    per_fold = []
    for f in folds:
        figures = scored.per_fold[f.fold].metrics()
        per_fold.append(
            {
                "fold": f.fold,
                "trained_without_fold": f.fold,
                "train_events": f.loop.events_per_epoch or 0,
                "out_of_fold_events": scored.per_fold[f.fold].n_events,
                "test": {k: figures[k] for k in _HEADLINE if k in figures},
                "training": f.loop.summary(f.seconds),
                "history": f.loop.state.history,
            }
        )
    return {
        "k": spec.train.folds,
        "seed": spec.preprocess.split.seed,
        "identifiers": list(spec.data.identifiers),
        "assignment": "preprocess.split.assign_fold of the identifiers",
        "per_fold": per_fold,
    }


def _mean_importances(folds: list[TrainedFold]) -> np.ndarray[Any, Any] | None:
    each = [f.engine.feature_importances() for f in folds]
    if any(e is None for e in each):
        return None
    mean: np.ndarray[Any, Any] = np.mean(np.stack([np.asarray(e, np.float64) for e in each]), 0)
    return mean
