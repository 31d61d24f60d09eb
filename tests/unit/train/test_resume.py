"""Checkpoints every epoch (and inside epochs), resume after an interruption."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from mlaas4hep.errors import Conflict, TrainingError
from mlaas4hep.train.progress import Progress
from mlaas4hep.train.run import RunResult, run_source

from .conftest import make_spec
from .fakes import FakeSource

MLP = {"kind": "mlp", "hidden": [16], "dropout": 0.2, "batch_norm": True}


def interrupt_at(phase: str, epoch: int, events: int = 0) -> Any:
    def callback(p: Progress) -> None:
        if p.phase == phase and p.epoch == epoch and p.events >= events:
            raise KeyboardInterrupt

    return callback


def scores(out: Path, X: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    return sess.run(["scores"], {"features": X})[0]


def run(out: Path, model: dict[str, Any], **kw: Any) -> RunResult:
    spec = make_spec(model, epochs=3, early_stopping=None)
    return run_source(spec, FakeSource(), out, checkpoint_every_s=0.0, **kw)


def test_resume_mid_epoch_reproduces_the_uninterrupted_run(tmp_path: Path) -> None:
    reference = run(tmp_path / "ref", MLP)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run(out, MLP, progress=interrupt_at("train", epoch=2, events=1500))
    latest = json.loads((out / "checkpoints" / "latest.json").read_text())["dir"]
    assert latest.startswith("ckpt-0001-")  # inside epoch 2 (0-based 1)
    assert not latest.endswith("-0000000")
    resumed = run(out, MLP, resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    X = next(FakeSource().batches("test")).X
    np.testing.assert_allclose(scores(out, X), scores(tmp_path / "ref", X), atol=1e-6)
    assert resumed.metrics["test"]["auc"] == pytest.approx(reference.metrics["test"]["auc"])


XGB = {"kind": "xgboost", "n_estimators": 30}


@pytest.mark.parametrize(
    ("model", "where"),
    [
        (XGB, ("train", 1, 1000)),  # while streaming into XGBoost's external memory
        (XGB, ("validate", 2, 0)),  # XGBoost reads no data after epoch 1 (it is cached)
        ({"kind": "sgd"}, ("train", 2, 1000)),
    ],
)
def test_resume_after_an_interrupted_epoch_gives_a_valid_model(
    model: dict[str, Any], where: tuple[str, int, int], tmp_path: Path
) -> None:
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, model, progress=interrupt_at(*where))
    gc.collect()  # free the interrupted engine (and XGBoost's cache) as a dead process would
    result = run(tmp_path, model, resume=True)
    assert len(result.history) == 3
    assert result.metrics["test"]["auc"] >= 0.8
    assert result.metrics["onnx"]["ok"]


def test_resume_of_a_finished_run_only_re_exports(tmp_path: Path) -> None:
    first = run(tmp_path, {"kind": "sgd"})
    seen: list[str] = []
    again = run(tmp_path, {"kind": "sgd"}, resume=True, progress=lambda p: seen.append(p.phase))
    assert "train" not in seen
    assert again.metrics["test"]["auc"] == pytest.approx(first.metrics["test"]["auc"])


def test_a_previous_run_is_not_overwritten_without_resume(tmp_path: Path) -> None:
    run(tmp_path, {"kind": "sgd"})
    with pytest.raises(Conflict, match="--resume"):
        run(tmp_path, {"kind": "sgd"})


def test_resume_with_another_spec_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, {"kind": "sgd"}, progress=interrupt_at("train", epoch=2))
    with pytest.raises(TrainingError, match="different spec"):
        run(tmp_path, {"kind": "sgd", "alpha": 0.01}, resume=True)


def test_only_the_latest_and_best_checkpoints_are_kept(tmp_path: Path) -> None:
    run(tmp_path, MLP)
    dirs = [p for p in (tmp_path / "checkpoints").iterdir() if p.is_dir()]
    assert 1 <= len(dirs) <= 2
    assert not [p for p in dirs if p.name.startswith(".tmp")]
