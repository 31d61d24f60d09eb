"""The training loop: epochs over the feature stream, validation, early stopping, resume.

Engine-independent. Each epoch streams the train split through ``engine.train_epoch``
(chunk by chunk; nothing holds the whole split), then scores the validation split and
records its metrics. The validation loss drives early stopping (``train.early_stopping``
epochs of patience) and the choice of the best model, which is restored at the end. With no
validation split configured, the train loss plays that role.

Checkpoints (``checkpoint.py``) are written at the end of every epoch and, for streaming
engines, every ``checkpoint_every_s`` seconds inside an epoch, with the position (epoch,
chunks done). ``resume=True`` restarts from the latest one; chunk order and shuffling are
pure functions of ``(seed, epoch, chunk)`` and the RNG state is in the checkpoint, so a
resumed run sees the same data in the same order as an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlaas4hep.errors import DataQualityError, TrainingError
from mlaas4hep.train.checkpoint import CheckpointStore, LoopState
from mlaas4hep.train.engine import Engine
from mlaas4hep.train.evaluate import ScoreAccumulator
from mlaas4hep.train.progress import Progress, ProgressCallback, ignore_progress
from mlaas4hep.train.stream import BatchSource, EpochBatches, Split, check_finite

if TYPE_CHECKING:
    from mlaas4hep.preprocess.pipeline import FeatureInfo
    from mlaas4hep.spec import TrainSpec

_MIN_IMPROVEMENT = 1e-9


@dataclass(frozen=True)
class LoopConfig:
    """What the loop needs besides the engine and the data."""

    train: TrainSpec
    spec_hash: str
    checkpoint_dir: Path
    has_validation: bool = True
    checkpoint_every_s: float = 300.0
    prefetch: int = 2


def score_split(
    engine: Engine,
    source: BatchSource,
    split: Split,
    info: FeatureInfo,
    *,
    max_events: int | None = None,
) -> ScoreAccumulator:
    """Scores of one split (streamed), collected for metrics; stops after ``max_events``."""
    acc = ScoreAccumulator(info.task, info.n_classes)
    for batch in source.batches(split):
        if len(batch.y) == 0:
            continue
        check_finite(batch, info.names, split)
        acc.add(engine.predict(batch.X), batch.y, batch.w)
        if max_events is not None and acc.n_events >= max_events:
            break
    return acc


class TrainingLoop:
    """Drives one engine over a ``BatchSource``; call ``run()`` once."""

    def __init__(
        self,
        engine: Engine,
        source: BatchSource,
        info: FeatureInfo,
        config: LoopConfig,
        progress: ProgressCallback = ignore_progress,
    ) -> None:
        self.engine, self.source, self.info, self.config = engine, source, info, config
        self.progress = progress
        self.store = CheckpointStore(config.checkpoint_dir)
        self.state = LoopState(spec_hash=config.spec_hash)
        # Known up front when the first pass counted the events per split.
        counted = sum(int(e.get("train", 0)) for e in info.events.values())
        self.events_per_epoch: int | None = counted or None

    def resume(self) -> bool:
        """Load the latest checkpoint if there is one; True when something was resumed."""
        found = self.store.latest()
        if found is None:
            return False
        path, state = found
        if state.spec_hash != self.config.spec_hash:
            msg = (
                f"the checkpoints in {str(self.config.checkpoint_dir)!r} belong to a different "
                "spec; run without --resume, or into a new output directory"
            )
            raise TrainingError(msg)
        self.engine.load(path)
        self.state = state
        if state.history and self.events_per_epoch is None:
            self.events_per_epoch = state.history[0].get("train_events")
        return True

    def run(self) -> list[dict[str, Any]]:
        """Train until ``train.epochs`` or early stopping; returns the per-epoch history."""
        epochs = self.config.train.epochs
        while self.state.epoch < epochs and not self.state.stopped_early:
            self._epoch(self.state.epoch)
        best = self.store.best()
        if best is not None:
            self.engine.load(best)
        return self.state.history

    def summary(self, seconds: float) -> dict[str, Any]:
        """What ``metrics.json`` says of this training (*seconds*: its wall time)."""
        s, events = self.state, self.events_per_epoch or 0
        rate = round(events * len(s.history) / seconds, 1) if seconds > 0 else None
        return {
            "epochs_run": len(s.history),
            "best_epoch": s.best_epoch,
            "best_loss": s.best_loss,
            "stopped_early": s.stopped_early,
            "events_per_epoch": events,
            "seconds": round(seconds, 3),
            "events_per_second": rate,
        }

    def _epoch(self, epoch: int) -> None:
        t = self.config.train
        batches = EpochBatches(
            self.source, self.info.names, epoch, t.seed, self.state.chunks_done,
            prefetch=self.config.prefetch,
        )  # fmt: skip
        counter = _EpochCounter(self, epoch)
        train_loss = self.engine.train_epoch(batches, epoch, counter.on_batch)
        if self.events_per_epoch is None and counter.resumed_from == 0:
            self.events_per_epoch = counter.events
        if not self.events_per_epoch and counter.events == 0:
            # (an engine that caches the data, like XGBoost, reads nothing after epoch 1)
            msg = "the train split is empty after the cuts; loosen the cuts or check the data"
            raise DataQualityError(msg)
        record = self._validate(epoch, train_loss, counter)
        self._finish_epoch(record)

    def _validate(self, epoch: int, train_loss: float, counter: _EpochCounter) -> dict[str, Any]:
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "train_events": self.events_per_epoch,
            "seconds": round(time.monotonic() - counter.start, 3),
        }
        if self.config.has_validation:
            val = score_split(self.engine, self.source, "validation", self.info).metrics()
            if val["n_events"] == 0:
                msg = (
                    "the validation split is empty after the cuts; loosen the cuts, raise "
                    "preprocess.split.validation, or set it to 0"
                )
                raise DataQualityError(msg)
            record["val_loss"] = val["loss"]
            if "auc" in val:
                record["val_auc"] = val["auc"]
            if "accuracy" in val:
                record["val_accuracy"] = val["accuracy"]
        return record

    def _finish_epoch(self, record: dict[str, Any]) -> None:
        s, patience = self.state, self.config.train.early_stopping
        monitored = float(record.get("val_loss", record["train_loss"]))
        improved = s.best_loss is None or monitored < s.best_loss - _MIN_IMPROVEMENT
        if improved and math.isfinite(monitored):
            s.best_loss, s.best_epoch, s.bad_epochs = monitored, record["epoch"], 0
        else:
            s.bad_epochs += 1
        s.history.append(record)
        s.epoch, s.chunks_done = s.epoch + 1, 0
        s.stopped_early = patience is not None and s.bad_epochs >= patience
        self.store.save(self.engine, s, best=improved)
        metrics = {k: float(v) for k, v in record.items() if k not in ("epoch", "train_events")}
        self.progress(
            Progress(
                "validate", epoch=record["epoch"], epochs=self.config.train.epochs,
                events=self.events_per_epoch or 0, total=self.events_per_epoch,
                elapsed_s=float(record["seconds"]), metrics=metrics,
                message="early stop" if s.stopped_early else "",
            )
        )  # fmt: skip


class _EpochCounter:
    """Counts events of an epoch, reports progress, writes mid-epoch checkpoints."""

    def __init__(self, loop: TrainingLoop, epoch: int) -> None:
        self.loop, self.epoch = loop, epoch
        self.start = self.last_checkpoint = time.monotonic()
        self.resumed_from = loop.state.chunks_done
        self.events = 0

    def on_batch(self, n_events: int) -> None:
        loop = self.loop
        loop.state.chunks_done += 1
        self.events += n_events
        now = time.monotonic()
        total = loop.events_per_epoch
        loop.progress(
            Progress(
                "train", epoch=self.epoch + 1, epochs=loop.config.train.epochs,
                events=self.events, total=total, elapsed_s=now - self.start,
            )
        )  # fmt: skip
        every = loop.config.checkpoint_every_s
        if loop.engine.streaming and now - self.last_checkpoint >= every:
            loop.store.save(loop.engine, loop.state)
            self.last_checkpoint = now
