"""The training loop's own logic, with a scripted engine (no ML library involved)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlaas4hep.errors import DataQualityError
from mlaas4hep.preprocess.pipeline import FeatureBatch
from mlaas4hep.train.loop import LoopConfig, TrainingLoop
from mlaas4hep.train.progress import Progress
from mlaas4hep.train.stream import EpochBatches, prefetched

from .conftest import make_spec
from .fakes import FakeSource


class ScriptedEngine:
    """Its validation quality per epoch is scripted: ``quality[k]`` after k+1 epochs."""

    streaming = True

    def __init__(self, quality: list[float]) -> None:
        self.quality = quality
        self.version = 0
        self.seen: list[int] = []

    def train_epoch(self, batches: Iterable[FeatureBatch], epoch: int, on_batch: Any) -> float:
        for b in batches:
            self.seen.append(len(b.y))
            on_batch(len(b.y))
        self.version += 1
        return 0.5

    def predict(self, X: np.ndarray) -> np.ndarray:
        # A roughly calibrated score (the FakeSource's HT is larger for signal) shrunk towards
        # 0.5 by the scripted quality in (0, 1]: the higher, the lower the validation loss.
        q = self.quality[self.version - 1]
        p = 1 / (1 + np.exp(-(X[:, 1:2] - 245) / 80))
        return (0.5 + q * (p - 0.5)).astype(np.float32)

    def save(self, directory: Path) -> None:
        (directory / "v.json").write_text(json.dumps(self.version))

    def load(self, directory: Path) -> None:
        self.version = json.loads((directory / "v.json").read_text())

    def export_onnx(self, path: Path) -> None:
        raise NotImplementedError

    def feature_importances(self) -> None:
        return None

    def close(self) -> None:
        pass


def make_loop(tmp_path: Path, engine: ScriptedEngine, source: FakeSource, **train: Any) -> Any:
    spec = make_spec(None, **train)
    config = LoopConfig(spec.train, "h", tmp_path / "ckpt", checkpoint_every_s=1e9)
    events: list[Progress] = []
    loop = TrainingLoop(engine, source, source.fit(), config, events.append)
    return loop, events


def test_early_stopping_keeps_the_best_epoch(tmp_path: Path) -> None:
    engine = ScriptedEngine([0.2, 0.8, 0.5, 0.4, 1.0, 1.0])
    loop, events = make_loop(tmp_path, engine, FakeSource(), epochs=6, early_stopping=2)
    history = loop.run()
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]  # no improvement in epochs 3 and 4
    assert loop.state.stopped_early
    assert loop.state.best_epoch == 2
    assert engine.version == 2  # the best model was restored
    assert events[-1].phase == "validate"
    assert events[-1].message == "early stop"


def test_without_patience_all_epochs_run(tmp_path: Path) -> None:
    engine = ScriptedEngine([0.9, 0.3, 0.3])
    loop, _ = make_loop(tmp_path, engine, FakeSource(), epochs=3, early_stopping=None)
    assert len(loop.run()) == 3
    assert engine.version == 1


def test_progress_counts_events_against_the_known_total(tmp_path: Path) -> None:
    source = FakeSource(events=3000)
    loop, events = make_loop(tmp_path, ScriptedEngine([1.0]), source, epochs=1)
    loop.run()
    train = [e for e in events if e.phase == "train"]
    assert train[-1].events == train[-1].total == sum(len(b.y) for b in source.batches("train"))
    assert train[0].to_dict()["phase"] == "train"
    assert "eta_s" in train[0].to_dict()


def test_nan_in_a_feature_is_reported_by_name(tmp_path: Path) -> None:
    source = FakeSource(nan_at=5)  # event 5 is in the train split
    loop, _ = make_loop(tmp_path, ScriptedEngine([1.0]), source, epochs=1)
    with pytest.raises(DataQualityError, match=r"'HT': 1") as err:
        loop.run()
    assert "nonfinite" in str(err.value)


def test_empty_validation_split_is_an_error(tmp_path: Path) -> None:
    class NoValidation(FakeSource):
        def batches(self, split: Any = None, **kw: Any) -> Any:
            return iter(()) if split == "validation" else super().batches(split, **kw)

    loop, _ = make_loop(tmp_path, ScriptedEngine([1.0]), NoValidation(), epochs=1)
    with pytest.raises(DataQualityError, match="validation split is empty"):
        loop.run()


def test_epoch_batches_skip_and_shuffle_reproducibly() -> None:
    source = FakeSource(events=5000)
    names = source.fit().names
    full = list(EpochBatches(source, names, epoch=1, seed=3))
    again = list(EpochBatches(source, names, epoch=1, seed=3))
    tail = list(EpochBatches(source, names, epoch=1, seed=3, skip=2))
    other = list(EpochBatches(source, names, epoch=2, seed=3))
    assert all(np.array_equal(a.X, b.X) for a, b in zip(full, again, strict=True))
    assert all(np.array_equal(a.X, b.X) for a, b in zip(full[2:], tail, strict=True))
    assert not np.array_equal(full[0].X, other[0].X)


def test_prefetch_passes_errors_and_stops_early() -> None:
    def produce() -> Any:
        yield 1
        yield 2
        raise ValueError("boom")

    it = prefetched(produce(), depth=1)
    assert next(it) == 1
    assert next(it) == 2
    with pytest.raises(ValueError, match="boom"):
        next(it)
    endless = prefetched(iter(range(10**9)), depth=2)
    assert next(endless) == 0
    endless.close()  # must not hang


def test_empty_test_split_is_an_error(tmp_path: Path) -> None:
    from mlaas4hep.train.run import run_source

    class NoTest(FakeSource):
        def batches(self, split: Any = None, **kw: Any) -> Any:
            return iter(()) if split == "test" else super().batches(split, **kw)

    with pytest.raises(DataQualityError, match="test split is empty"):
        run_source(make_spec({"kind": "sgd"}, epochs=1), NoTest(), tmp_path)
