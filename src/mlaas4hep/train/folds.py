"""k-folding (``train.folds: k``): k models, every event scored by the one that never saw it.

HEP's "folding": the events are cut into k folds by ``preprocess.split.assign_fold`` (the
same hash of the identifiers as the train/validation/test split, mixed once more, so the
fold is independent of the split fractions). Model ``i`` trains on every event *outside*
fold ``i``: those the split codes ``validation`` drive its early stopping, all the others
(``train`` and ``test`` codes alike) train it. Then each event of fold ``i`` is scored by
model ``i`` (its *out-of-fold* score), and the test metrics, plots and working points of
the run are computed on those scores: all of the simulation is used for training and for
testing, and no score comes from a model that trained on its event.

The folds are filtered on the raw chunks, before any preprocessing (the fold depends only
on the identifiers), by a ``Preprocessor`` per fold over a filtered data stream; the
first pass (normalisation statistics, class balance, cut flow) is the run's, shared by
every fold (label-free constants; the cut flow counts the whole sample).

The k models are exported into one ONNX graph (``fold_onnx.py``): input ``features`` plus
an optional ``fold`` (int64 per row: which model; -1 or absent: their mean, for data).
The parity check runs per fold: fold ``i``'s out-of-fold events through the graph with
``fold = i`` against model ``i``'s own scores, and the average against the mean of the k
models' scores on the first chunk of each fold.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import awkward as ak
import numpy as np
import onnx

from mlaas4hep import artifact
from mlaas4hep.errors import SpecError, TrainingError
from mlaas4hep.preprocess.folds import event_folds
from mlaas4hep.preprocess.partitioned import chunk_columns
from mlaas4hep.preprocess.pipeline import Preprocessor
from mlaas4hep.preprocess.shuffle import take
from mlaas4hep.preprocess.split import VALIDATION
from mlaas4hep.train.atomic import temp_path_for
from mlaas4hep.train.engine import Engine, EngineContext, create_engine
from mlaas4hep.train.evaluate import ScoreAccumulator
from mlaas4hep.train.export import export_onnx, onnx_metadata
from mlaas4hep.train.feature_cache import CachingSource
from mlaas4hep.train.fold_onnx import combine_folds
from mlaas4hep.train.loop import LoopConfig, TrainingLoop, score_split
from mlaas4hep.train.onnx_graph import add_metadata
from mlaas4hep.train.progress import Progress, ProgressCallback
from mlaas4hep.train.stream import Split

if TYPE_CHECKING:
    from mlaas4hep.preprocess.pipeline import FeatureBatch, FeatureInfo, StreamFn
    from mlaas4hep.spec import PipelineSpec

#: Model kinds whose exported graph has the one ``features`` input the combiner takes.
FOLD_KINDS = ("mlp", "xgboost", "sgd", "python")
#: Train scores (in-fold) for the overtraining plot, over all folds together.
_TRAIN_PLOT_EVENTS = 500_000
OUT_OF_FOLD = "out-of-fold"


def check_folds(spec: PipelineSpec, *, resume: bool = False, distributed: bool = False) -> None:
    """What can be checked before any data is read; SpecError/TrainingError otherwise."""
    k = spec.train.folds
    if k is None:
        return
    if spec.model.kind not in FOLD_KINDS:
        msg = (
            f"train.folds: {k} is not available for model.kind {spec.model.kind!r}; use one of "
            f"{list(FOLD_KINDS)}, or set train.folds: null"
        )
        raise SpecError(msg)
    if spec.tune is not None:
        msg = (
            f"train.folds: {k} and a tune: search cannot run together yet; tune with "
            "train.folds: null, then train the best options with folds"
        )
        raise SpecError(msg)
    if not spec.data.identifiers:
        msg = "train.folds needs data.identifiers: the fold of an event is a hash of them"
        raise SpecError(msg)
    if resume:
        msg = "--resume does not continue a k-folded run (train.folds); run it again afresh"
        raise TrainingError(msg)
    if distributed:
        msg = (
            "train.folds runs its preprocessing locally; drop the Dask cluster for this run "
            "(or set train.folds: null)"
        )
        raise TrainingError(msg)


# -- the fold streams ------------------------------------------------------------------


@dataclass(frozen=True)
class _Chunk:
    """A data chunk restricted to some folds (``preprocess.pipeline.ChunkLike``)."""

    arrays: Any
    dataset: str
    file: str


def fold_stream(
    spec: PipelineSpec, keep: Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]]
) -> StreamFn:
    """The data stream of *spec* keeping the events whose fold passes *keep*."""
    from mlaas4hep.data.stream import stream

    def stream_fn(data: Any, branches: Sequence[str], datasets: Sequence[str] | None) -> Any:
        for chunk in stream(data, branches, datasets=datasets):
            mask = keep(event_folds(spec, chunk_columns(chunk.arrays)))
            yield _Chunk(_rows(chunk.arrays, mask), chunk.dataset, chunk.file)

    return stream_fn


def _rows(arrays: Any, mask: np.ndarray[Any, Any]) -> Any:
    if isinstance(arrays, dict):
        return {k: v[mask] for k, v in arrays.items()}
    # packed: the preprocessing reads plain list layouts, not an index over the chunk
    return ak.to_packed(arrays[mask])


class _FoldPreprocessor(Preprocessor):
    """A ``Preprocessor`` over some folds that reuses the run's first pass."""

    def __init__(self, spec: PipelineSpec, info: FeatureInfo, stream_fn: StreamFn) -> None:
        super().__init__(spec, stream_fn=stream_fn)
        self._known = info

    def fit(self, *, strict: bool = True, progress: Any = None) -> FeatureInfo:
        return self._known


def fold_source(spec: PipelineSpec, info: FeatureInfo, fold: int, *, inside: bool) -> Preprocessor:
    """The events of fold *fold* (``inside``) or of every other fold, preprocessed."""

    def keep(folds: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return np.asarray(folds == fold if inside else folds != fold)

    return _FoldPreprocessor(spec, info, fold_stream(spec, keep))


@dataclass(frozen=True)
class TrainingFolds:
    """What model ``fold`` learns from: the events outside its fold (a ``BatchSource``).

    ``train``: every event of the other folds but those coded ``validation`` (so the
    ``test`` codes train too: the out-of-fold scores are the test); ``validation``: those.
    """

    source: Preprocessor
    fold: int

    def batches(
        self, split: Split | None = None, *, shuffle: bool = False, seed: int = 0
    ) -> Iterator[FeatureBatch]:
        if split == "validation":
            return self.source.batches("validation", shuffle=shuffle, seed=seed)
        if split == "train":
            return _training(self.source.batches(None, shuffle=shuffle, seed=seed))
        msg = f"the training folds have train and validation events, not {split!r}"
        raise TrainingError(msg)


def _training(batches: Iterable[FeatureBatch]) -> Iterator[FeatureBatch]:
    for batch in batches:
        keep = batch.split != VALIDATION
        yield batch if keep.all() else take(batch, np.flatnonzero(keep))


# -- training the k models -----------------------------------------------------------------


@dataclass(frozen=True)
class FoldSettings:
    """The run's settings that each fold's training uses (see ``run_pipeline``)."""

    allow_user_code: bool = False
    checkpoint_every_s: float = 300.0
    feature_cache_bytes: int = 4 << 30


@dataclass(frozen=True)
class TrainedFold:
    """One trained fold model: which fold it never saw, its engine and loop, its ONNX."""

    fold: int
    engine: Engine
    loop: TrainingLoop
    seconds: float
    train_scores: ScoreAccumulator
    onnx_path: Path


def train_fold(
    spec: PipelineSpec,
    info: FeatureInfo,
    fold: int,
    work: Path,
    settings: FoldSettings,
    progress: ProgressCallback,
) -> TrainedFold:
    """Train model *fold* on the events outside fold *fold*; export it to ``work``."""
    directory = work / f"fold-{fold}"
    ctx = EngineContext(
        info, spec.model, spec.train, directory / "engine", settings.allow_user_code,
        features=spec.preprocess.features,
    )  # fmt: skip
    ctx.work_dir.mkdir(parents=True)
    config = LoopConfig(
        spec.train, spec.spec_hash(), directory / "checkpoints",
        has_validation=spec.preprocess.split.validation > 0,
        checkpoint_every_s=settings.checkpoint_every_s,
    )  # fmt: skip
    source = TrainingFolds(fold_source(spec, info, fold, inside=False), fold)
    cache = CachingSource(source, directory / "features", settings.feature_cache_bytes)
    engine = create_engine(ctx)
    # events={}: the loop counts this fold's train events itself during the first epoch
    loop = TrainingLoop(
        engine, cache, dataclasses.replace(info, events={}), config,
        _tagged(progress, fold, spec.train.folds or 0),
    )  # fmt: skip
    started = time.monotonic()
    loop.run()
    seconds = time.monotonic() - started
    engine.close()
    k = spec.train.folds or 1
    scores = score_split(engine, cache, "train", info, max_events=_TRAIN_PLOT_EVENTS // k)
    shutil.rmtree(cache.directory, ignore_errors=True)
    onnx_path = directory / artifact.MODEL_FILE
    export_onnx(engine, onnx_path, info, {})
    return TrainedFold(fold, engine, loop, seconds, scores, onnx_path)


def _tagged(progress: ProgressCallback, fold: int, k: int) -> ProgressCallback:
    def report(event: Progress) -> None:
        tag = f"fold {fold + 1}/{k}"
        progress(dataclasses.replace(event, message=f"{tag}: {event.message}".rstrip(": ")))

    return report


def export_folds(
    folds: Sequence[TrainedFold], path: Path, info: FeatureInfo, extra: dict[str, str]
) -> None:
    """The k fold graphs combined into one (``fold_onnx.py``), metadata added, atomically."""
    combined = combine_folds([onnx.load(str(f.onnx_path)) for f in folds])
    add_metadata(combined, onnx_metadata(info, extra))
    tmp = temp_path_for(path)
    try:
        onnx.save(combined, str(tmp))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
