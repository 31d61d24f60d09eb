"""The whole pipeline of one spec, locally: preprocess, train, evaluate, export, bundle.

``run_pipeline`` is what ``mlaas4hep run`` and a service job call. It writes the artifact
bundle (``bundle.py``) into ``out_dir`` and returns a ``RunResult``. Progress goes to the
``progress`` callback (``progress.py``). ``run_source`` is the same with an already built
feature source, so tests and benchmarks can feed it any ``FeatureSource``.

Settings that can be checked without data (the engine's library, ``train.device: cuda``
on a machine without a GPU) are checked before the first pass reads anything. A run that
fails removes what it made and cannot be resumed from: ``work/``, the feature cache, and
every file or folder of ``out_dir`` it created, keeping only the first-pass cache
(``cache/fit-*.json``, so that the next run skips the first pass); once a checkpoint exists
(``--resume``), only ``work/`` goes. Files that were there before are never touched.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mlaas4hep.artifact import CHECKPOINTS_DIR, METRICS_FILE, MODEL_FILE, PROP_SPEC_HASH
from mlaas4hep.errors import Conflict, DataQualityError, TrainingError
from mlaas4hep.train.bundle import write_bundle
from mlaas4hep.train.diagnostics import run_warnings
from mlaas4hep.train.engine import Engine, EngineContext, create_engine, engine_class
from mlaas4hep.train.evaluate import ScoreAccumulator
from mlaas4hep.train.export import (
    PARITY_TOLERANCE,
    export_onnx,
    onnx_scorer,
    parity_pass,
    session,
)
from mlaas4hep.train.feature_cache import CachingSource
from mlaas4hep.train.fold_run import run_folds
from mlaas4hep.train.folds import FoldSettings, check_folds
from mlaas4hep.train.importance import ReservoirSample, SamplingSource
from mlaas4hep.train.loop import LoopConfig, TrainingLoop, score_split
from mlaas4hep.train.progress import Progress, ProgressCallback, ignore_progress
from mlaas4hep.train.report import evaluate_run
from mlaas4hep.train.stream import BatchSource, Split

if TYPE_CHECKING:
    from mlaas4hep.preprocess.partitioned import Distributor
    from mlaas4hep.preprocess.pipeline import FeatureInfo, ReadProgress
    from mlaas4hep.spec import PipelineSpec
    from mlaas4hep.train.tune import TuneOptions

# Epochs after the first read the train features from a local cache up to this size.
DEFAULT_FEATURE_CACHE_BYTES = 4 << 30
# Train scores for the overtraining plot: a bounded sample is enough for a histogram.
_TRAIN_PLOT_EVENTS = 500_000
_STATISTICS = "computing feature statistics"


class FeatureSource(BatchSource, Protocol):
    """A ``Preprocessor``: fits the feature statistics, then streams batches.

    ``fit`` reports the first pass's entries read and entries in all to *progress*.
    """

    def fit(self, *, progress: ReadProgress | None = None) -> FeatureInfo: ...

    def cutflow(self) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class RunResult:
    """What a finished run produced; every path is inside ``out_dir``."""

    out_dir: Path
    model_path: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    plots: tuple[Path, ...]


def run_pipeline(
    spec: PipelineSpec,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: ProgressCallback = ignore_progress,
    allow_user_code: bool = False,
    checkpoint_every_s: float = 300.0,
    feature_cache_bytes: int = DEFAULT_FEATURE_CACHE_BYTES,
    distributor: Distributor | None = None,
    tune: TuneOptions | None = None,
) -> RunResult:
    """Run ``spec`` end to end into ``out_dir``.

    ``resume`` continues from the latest checkpoint in ``out_dir``; without it, a directory
    holding another run's checkpoints is refused (``Conflict``). ``allow_user_code`` must be
    set for ``model.kind: python``. ``checkpoint_every_s``: checkpoint period inside an epoch.
    ``feature_cache_bytes``: disk budget of the train-feature cache (``feature_cache.py``;
    0 = always stream from ROOT). ``distributor``: preprocess partitions there (a Dask
    cluster) and stream the results here, where training runs. ``tune``: where a
    ``tune:`` search keeps its study and runs its trials (``train/tune.py``). Raises
    ``DataQualityError`` (NaN/inf, empty split), ``TrainingError`` (the model fails, the
    device is missing, or ONNX parity is above 1e-4), ``UserCodeError``. A failed run
    cleans up after itself (see the module docstring).
    """
    from mlaas4hep.preprocess.pipeline import Preprocessor

    out = Path(out_dir)
    check_engine(spec)  # before the Preprocessor: nothing is created for a bad device
    check_folds(spec, resume=resume, distributed=distributor is not None)
    made = _Made.before(out)
    source = Preprocessor(spec, cache_dir=out / "cache", distributor=distributor)
    try:
        return run_source(
            spec, source, out, resume=resume, progress=progress,
            allow_user_code=allow_user_code, checkpoint_every_s=checkpoint_every_s,
            feature_cache_bytes=feature_cache_bytes, tune=tune,
        )  # fmt: skip
    except Conflict:
        raise  # another run's directory: not ours to clean
    except Exception:
        made.clean_up(out)
        raise


def check_engine(spec: PipelineSpec) -> None:
    """What can be checked before any data is read: the engine's library and device.

    Raises:
        TrainingError: the library is not installed (with what to install), or
            ``train.device`` is ``cuda`` and torch finds no GPU (use ``auto`` or ``cpu``).
    """
    check_spec = getattr(engine_class(spec.model.kind), "check_spec", None)
    if check_spec is not None:  # e.g. set-based models need masked object collections
        check_spec(spec)
    if spec.model.kind in _TORCH_KINDS and spec.train.device == "cuda":
        from mlaas4hep.train.torch_mlp import resolve_device

        resolve_device(spec.train.device)


# Engines that run on torch and so honour train.device (xgboost falls back to the CPU
# itself, with a warning; scikit-learn has no device).
_TORCH_KINDS = frozenset({"mlp", "python", "deepsets", "transformer"})
_FIT_CACHE_PREFIX = "fit-"  # cache/fit-<key>.json: kept after a failure (preprocess/cache.py)


@dataclass(frozen=True)
class _Made:
    """What ``out_dir`` held before a run, so that a failed run removes only what it made."""

    existed: frozenset[str]  # entries of out_dir before the run
    first_created: Path | None  # the outermost folder the run creates (out_dir or a parent)

    @classmethod
    def before(cls, out: Path) -> _Made:
        missing = [p for p in (out, *out.parents) if not p.exists()]
        existed = frozenset(p.name for p in out.iterdir()) if out.is_dir() else frozenset()
        return cls(existed, missing[-1] if missing else None)

    def clean_up(self, out: Path) -> None:
        """Remove the run's scratch, and what it created unless it can be resumed."""
        shutil.rmtree(out / "work", ignore_errors=True)  # never of use after the process
        if (out / CHECKPOINTS_DIR / "latest.json").exists() or not out.is_dir():
            return  # --resume continues from here
        cache = out / "cache"
        if cache.is_dir():
            for entry in cache.iterdir():  # the feature cache (features-*, .features-*)
                if "features-" in entry.name:
                    _remove(entry)
        for entry in out.iterdir():
            if entry.name in self.existed:
                continue
            if entry.name == "cache" and any(
                p.name.startswith(_FIT_CACHE_PREFIX) for p in entry.iterdir()
            ):
                continue
            _remove(entry)
        self._remove_empty_folders(out)

    def _remove_empty_folders(self, out: Path) -> None:
        if self.first_created is None:
            return
        for folder in (out, *out.parents):
            with contextlib.suppress(OSError):  # not empty: the first-pass cache is kept
                folder.rmdir()
            if folder == self.first_created:
                return


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def run_source(
    spec: PipelineSpec,
    source: FeatureSource,
    out: Path,
    *,
    resume: bool = False,
    progress: ProgressCallback = ignore_progress,
    allow_user_code: bool = False,
    checkpoint_every_s: float = 300.0,
    feature_cache_bytes: int = DEFAULT_FEATURE_CACHE_BYTES,
    tune: TuneOptions | None = None,
) -> RunResult:
    """``run_pipeline`` with an already built feature source (no clean-up on failure)."""
    started = time.monotonic()
    check_engine(spec)
    check_folds(spec, resume=resume)
    _prepare_out_dir(out, resume)
    progress(Progress("prepare", message=_STATISTICS))
    info = source.fit(progress=_first_pass_progress(progress))
    if spec.train.folds:  # k models, every event scored out of fold (train/folds.py)
        settings = FoldSettings(allow_user_code, checkpoint_every_s, feature_cache_bytes)
        folded = run_folds(spec, info, out, settings, progress)
        return _finish(spec, source, info, folded, started, progress)
    ctx = EngineContext(
        info, spec.model, spec.train, out / "work", allow_user_code, spec.preprocess.features
    )
    # Scratch left by an interrupted run (its process is gone) is of no use: start clean.
    shutil.rmtree(ctx.work_dir, ignore_errors=True)
    ctx.work_dir.mkdir(parents=True)
    config = LoopConfig(
        spec.train, spec.spec_hash(), out / CHECKPOINTS_DIR,
        has_validation=spec.preprocess.split.validation > 0, checkpoint_every_s=checkpoint_every_s,
    )  # fmt: skip
    cache = CachingSource(
        source, out / "cache" / f"features-{spec.spec_hash()[:16]}", feature_cache_bytes
    )
    tuned = None
    if spec.tune is not None:  # the search trains; its best trial becomes this run's model
        from mlaas4hep.train.tune import adopt_best

        tuned = adopt_best(spec, source, out, progress, tune, ctx, config)
        spec, ctx, config, cache, resume = tuned.spec, tuned.ctx, tuned.config, tuned.source, True
    trained = _train(create_engine(ctx), cache, info, config, progress, resume)
    shutil.rmtree(cache.directory, ignore_errors=True)  # only training reads it
    result = _evaluate(spec, source, info, out, trained, progress)
    if tuned is not None:
        result.metrics["tune"] = tuned.summary
    result.metrics["seconds"] = round(time.monotonic() - started, 3)
    for warning in result.metrics["warnings"]:  # also in metrics.json and the model card
        progress(Progress("evaluate", message=f"warning: {warning['message']}"))
    write_bundle(out, spec, info, result.metrics, source.cutflow(), _branch_types(source))
    shutil.rmtree(ctx.work_dir, ignore_errors=True)
    parity = result.metrics["onnx"]
    if not parity["ok"]:
        msg = (
            f"the ONNX model differs from the trained model by up to {parity['max_abs_diff']:.3g} "
            f"(tolerance {PARITY_TOLERANCE}); it is not safe to deploy. Details in {str(out)!r}"
        )
        raise TrainingError(msg)
    progress(
        Progress("done", metrics=_headline(result.metrics["test"]), message=str(result.model_path))
    )
    return result


def _finish(
    spec: PipelineSpec,
    source: FeatureSource,
    info: FeatureInfo,
    result: RunResult,
    started: float,
    progress: ProgressCallback,
) -> RunResult:
    """Write the bundle of a k-folded run; raise when a fold's ONNX parity fails."""
    out = result.out_dir
    result.metrics["seconds"] = round(time.monotonic() - started, 3)
    for warning in result.metrics["warnings"]:
        progress(Progress("evaluate", message=f"warning: {warning['message']}"))
    write_bundle(out, spec, info, result.metrics, source.cutflow(), _branch_types(source))
    shutil.rmtree(out / "work", ignore_errors=True)
    parity = result.metrics["onnx"]
    if not parity["ok"]:
        msg = (
            f"the ONNX graph of the {spec.train.folds} fold models differs from them by up to "
            f"{parity['max_abs_diff']:.3g} (tolerance {PARITY_TOLERANCE}); it is not safe to "
            f"deploy. Per fold in {str(out / METRICS_FILE)!r}"
        )
        raise TrainingError(msg)
    progress(
        Progress("done", metrics=_headline(result.metrics["test"]), message=str(result.model_path))
    )
    return result


def _first_pass_progress(progress: ProgressCallback) -> ReadProgress:
    """The first pass's (entries read, entries in all) as ``prepare`` events, timed."""
    started = time.monotonic()

    def report(events: int, total: int | None) -> None:
        elapsed = time.monotonic() - started
        progress(Progress("prepare", events=events, total=total, elapsed_s=elapsed,
                          message=_STATISTICS))  # fmt: skip

    return report


@dataclass(frozen=True)
class _Trained:
    engine: Engine
    loop: TrainingLoop
    train_scores: ScoreAccumulator
    seconds: float


def _train(
    engine: Engine,
    source: CachingSource,
    info: FeatureInfo,
    config: LoopConfig,
    progress: ProgressCallback,
    resume: bool,
) -> _Trained:
    """Train (or resume) until done; the engine then holds the best model."""
    loop = TrainingLoop(engine, source, info, config, progress)
    if resume:
        loop.resume()
    started = time.monotonic()
    loop.run()
    seconds = time.monotonic() - started
    engine.close()
    # Train scores for the overtraining plot, read while the feature cache still exists.
    scores = score_split(engine, source, "train", info, max_events=_TRAIN_PLOT_EVENTS)
    return _Trained(engine, loop, scores, seconds)


def _evaluate(
    spec: PipelineSpec,
    source: FeatureSource,
    info: FeatureInfo,
    out: Path,
    trained: _Trained,
    progress: ProgressCallback,
) -> RunResult:
    """Export to ONNX, score the test split natively and with ONNX Runtime, plot."""
    split: Split = "test" if spec.preprocess.split.test > 0 else "validation"
    progress(Progress("export", message=f"exporting {MODEL_FILE}"))
    model_path = out / MODEL_FILE
    export_onnx(trained.engine, model_path, info, {PROP_SPEC_HASH: spec.spec_hash()})
    progress(Progress("evaluate", message=f"scoring the {split} split"))
    onnx_session, sample = session(model_path), ReservoirSample()  # features for importances
    tapped = SamplingSource(source, split, sample)
    parity = parity_pass(trained.engine, onnx_session, tapped, info, split)
    test = _checked_metrics(parity.scores, split)
    history = trained.loop.state.history
    progress(Progress("evaluate", message="working points, KS tests, importances, plots"))
    evaluation = evaluate_run(
        out / "plots", info, history, trained.train_scores, parity.scores,
        predict=onnx_scorer(onnx_session, info, trained.engine), sample=sample,
        model_importances=trained.engine.feature_importances(),
    )  # fmt: skip
    made, test = evaluation.plots, test | evaluation.test
    metrics = {
        "task": info.task,
        "evaluated_on": split,
        "test": test,
        "train_sample": trained.train_scores.metrics(),
        "history": history,
        "training": trained.loop.summary(trained.seconds),
        "onnx": {
            "max_abs_diff": parity.max_abs_diff,
            "events_compared": parity.n_compared,
            "tolerance": PARITY_TOLERANCE,
            "ok": parity.parity_ok,
        },
        "has_importances": any(p.name == "importance.png" for p in made),
        "warnings": run_warnings(spec, info, trained.loop.state, trained.train_scores),
        **evaluation.sections,
    }
    return RunResult(out, model_path, metrics, history, tuple(made))


def _branch_types(source: FeatureSource) -> dict[str, str]:
    """Input branch -> type as the preprocessing bound them (a ``Preprocessor``; else {})."""
    program = getattr(source, "program", None)
    types = getattr(program, "input_types", None)
    return dict(types()) if callable(types) else {}


def _prepare_out_dir(out: Path, resume: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    latest = out / CHECKPOINTS_DIR / "latest.json"
    if latest.exists() and not resume:
        msg = (
            f"{str(out)!r} already holds a run (checkpoints/latest.json); resume it with "
            "--resume, or choose a new output directory"
        )
        raise Conflict(msg)


def _checked_metrics(scores: ScoreAccumulator, split: Split) -> dict[str, Any]:
    if scores.n_events == 0:
        msg = f"the {split} split is empty after the cuts; loosen the cuts or enlarge the split"
        raise DataQualityError(msg)
    return scores.metrics()


def _headline(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(metrics[k]) for k in ("loss", "accuracy", "auc", "rmse") if k in metrics}
