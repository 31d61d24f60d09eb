"""One trial of a search, runnable anywhere: a thread, a process, a Dask worker.

A trial only retrains. The preprocessing ran once: its train and validation batches are
``.npy`` shards in a ``FeatureStore`` that every trial reads (workers of a cluster through
the shared file system, as they read the job's directory already). ``run_trial`` takes a
picklable ``TrialTask`` (the trial's own spec, already validated) and returns a
``TrialOutcome``; it never touches the study's database. Pruning is decided in the trial
from a snapshot of the finished trials the driver sends along (Optuna's ``MedianPruner``
on an in-memory copy): the driver records the trial's per-epoch values afterwards.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from mlaas4hep.artifact import CHECKPOINTS_DIR
from mlaas4hep.errors import Mlaas4hepError
from mlaas4hep.preprocess.info import FeatureBatch, FeatureInfo
from mlaas4hep.preprocess.split import SPLIT_CODES
from mlaas4hep.spec import PipelineSpec, PruningSpec
from mlaas4hep.train.engine import EngineContext, create_engine
from mlaas4hep.train.loop import LoopConfig, TrainingLoop
from mlaas4hep.train.progress import Progress
from mlaas4hep.train.stream import BatchSource, Split

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial, Trial

_FIELDS = ("X", "y", "w", "split")
_INDEX = "index.json"
_STORED: tuple[Split, ...] = ("train", "validation")
TrialState = Literal["complete", "pruned", "failed"]


@dataclass(frozen=True)
class FeatureStore:
    """The train and validation feature batches of a run, as shards in ``directory``."""

    directory: Path

    @classmethod
    def write(cls, source: BatchSource, directory: Path, seed: int) -> FeatureStore:
        """Stream *source* once (shuffled with *seed*) into shards of each stored split."""
        directory.mkdir(parents=True, exist_ok=True)
        names: dict[str, list[str]] = {s: [] for s in _STORED}
        for batch in source.batches(None, shuffle=True, seed=seed):
            for split in _STORED:
                keep = batch.split == SPLIT_CODES[split]
                if keep.any():
                    part = FeatureBatch(batch.X[keep], batch.y[keep], batch.w[keep],
                                        batch.split[keep])  # fmt: skip
                    names[split].append(_save(directory, f"{split}-{len(names[split]):06d}", part))
        (directory / _INDEX).write_text(json.dumps(names))
        return cls(directory)

    def batches(
        self, split: Split | None = None, *, shuffle: bool = False, seed: int = 0
    ) -> Iterator[FeatureBatch]:
        """The shards of *split* (train or validation), in an order drawn from *seed*."""
        if split not in _STORED:
            msg = f"the search's feature store holds {_STORED}, not {split!r}"
            raise ValueError(msg)
        shards: list[str] = json.loads((self.directory / _INDEX).read_text())[split]
        order = np.random.default_rng(seed).permutation(len(shards)) if shuffle else None
        for i in order if order is not None else range(len(shards)):
            base = self.directory / shards[int(i)]
            yield FeatureBatch(*(np.load(f"{base}.{name}.npy") for name in _FIELDS))


def _save(directory: Path, name: str, batch: FeatureBatch) -> str:
    for f in _FIELDS:
        np.save(directory / f"{name}.{f}.npy", getattr(batch, f))
    return name


@dataclass(frozen=True)
class TrialTask:
    """Everything one trial needs; picklable, sent to wherever the trial runs."""

    number: int
    spec: PipelineSpec  # the trial's spec: the search's values set, validated
    info: FeatureInfo
    features: Path  # a FeatureStore
    directory: Path  # the trial's own: checkpoints/ stay for the driver, work/ goes
    metric: str
    direction: Literal["minimize", "maximize"]
    pruning: PruningSpec
    finished: tuple[FrozenTrial, ...] = ()  # for the pruner: the trials done so far
    allow_user_code: bool = False


@dataclass(frozen=True)
class TrialOutcome:
    """How a trial ended: its value (the metric at the best epoch) and per-epoch curve."""

    number: int
    state: TrialState
    value: float | None
    curve: dict[int, float] = field(default_factory=dict)  # epoch (1-based) -> metric
    seconds: float = 0.0
    epochs: int = 0
    error: str | None = None
    pid: int = 0  # of the process that ran it (a Dask worker's, say)


class _Pruned(Exception):
    """Raised from the loop's end-of-epoch progress event to stop a pruned trial."""


class _PruningHook:
    """The loop's progress callback: records the metric per epoch, stops a pruned trial.

    The training loop reports every finished epoch (phase ``validate``, with its metrics)
    synchronously, so raising here stops the trial right after that epoch's checkpoint.
    """

    def __init__(self, task: TrialTask) -> None:
        self.metric = task.metric
        self.curve: dict[int, float] = {}
        self._trial = _shadow_trial(task) if task.pruning.enabled else None

    def __call__(self, p: Progress) -> None:
        if p.phase != "validate" or p.epoch is None or self.metric not in p.metrics:
            return
        value = float(p.metrics[self.metric])
        self.curve[p.epoch] = value
        if self._trial is not None and math.isfinite(value):
            self._trial.report(value, p.epoch)
            if self._trial.should_prune():
                raise _Pruned


def _shadow_trial(task: TrialTask) -> Trial:
    """A trial of an in-memory study holding the finished trials, for the pruner alone."""
    import optuna

    pruner = optuna.pruners.MedianPruner(
        n_startup_trials=task.pruning.startup_trials, n_warmup_steps=task.pruning.warmup_epochs
    )
    study = optuna.create_study(direction=task.direction, pruner=pruner)
    study.add_trials(list(task.finished))
    return study.ask()


def run_trial(task: TrialTask) -> TrialOutcome:
    """Train the trial's model on the stored features; never raises a project error.

    A project error (a diverging loss, a model that does not fit) makes a ``failed``
    trial with the message; the search goes on.
    """
    started = time.monotonic()
    hook = _PruningHook(task)
    spec = task.spec
    work = task.directory / "work"
    shutil.rmtree(task.directory, ignore_errors=True)
    work.mkdir(parents=True)
    state: TrialState = "complete"
    error: str | None = None
    loop: TrainingLoop | None = None
    try:
        ctx = EngineContext(task.info, spec.model, spec.train, work, task.allow_user_code,
                            features=spec.preprocess.features)  # fmt: skip
        config = LoopConfig(spec.train, spec.spec_hash(), task.directory / CHECKPOINTS_DIR,
                            checkpoint_every_s=math.inf)  # fmt: skip
        loop = TrainingLoop(create_engine(ctx), FeatureStore(task.features), task.info, config,
                            hook)  # fmt: skip
        loop.run()
    except _Pruned:
        state = "pruned"
    except Mlaas4hepError as exc:
        state, error = "failed", str(exc)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = round(time.monotonic() - started, 3)
    return TrialOutcome(
        task.number, state, _value(loop, task.metric) if state == "complete" else None,
        dict(hook.curve), seconds, len(hook.curve), error, os.getpid(),
    )  # fmt: skip


def _value(loop: TrainingLoop | None, metric: str) -> float | None:
    """The metric at the epoch whose model the loop kept (the best validation loss)."""
    if loop is None or loop.state.best_epoch is None:
        return None
    record: dict[str, Any] = loop.state.history[loop.state.best_epoch - 1]
    value = record.get(metric)
    return float(value) if value is not None and math.isfinite(float(value)) else None
