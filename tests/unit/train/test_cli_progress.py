from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from mlaas4hep.cli.run import JsonLines, ProgressBar, bar_line, summary_line
from mlaas4hep.errors import TrainingError
from mlaas4hep.train.progress import Progress
from mlaas4hep.train.run import run_source

from .conftest import make_spec
from .fakes import FakeSource


def test_bar_shows_epoch_events_rate_and_eta() -> None:
    p = Progress("train", epoch=2, epochs=10, events=12_000, total=30_000, elapsed_s=2.0)
    line = bar_line(p)
    assert line.startswith("epoch 2/10 [############..................]")
    assert "12,000/30,000 events" in line
    assert "6.0k ev/s" in line
    assert "ETA 0:00:03" in line


def test_epoch_summary_line() -> None:
    p = Progress("validate", epoch=1, epochs=3, elapsed_s=1.5, metrics={"val_auc": 0.87654})
    assert summary_line(p) == "epoch 1/3 done in 1.5s  val_auc 0.8765"


def test_json_lines_are_throttled_but_keep_epoch_ends() -> None:
    out = io.StringIO()
    show = JsonLines(out, interval_s=3600)
    for events in (10, 20, 30):
        show(Progress("train", epoch=1, epochs=1, events=events, total=30, elapsed_s=1))
    show(Progress("validate", epoch=1, epochs=1, metrics={"val_loss": float("nan")}))
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["events"] for line in lines[:2]] == [10, 30]
    assert lines[-1]["metrics"] == {"val_loss": None}  # NaN is not JSON


def test_bar_on_a_pipe_prints_only_whole_lines() -> None:
    out = io.StringIO()
    show = ProgressBar(out)
    show(Progress("train", epoch=1, epochs=1, events=5, total=10))
    show(Progress("export", message="exporting model.onnx"))
    show.close()
    assert out.getvalue() == "[export] exporting model.onnx\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a GPU")
def test_cuda_without_a_gpu_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="no CUDA device"):
        run_source(make_spec(None, device="cuda"), FakeSource(), tmp_path)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mlp_trains_on_the_gpu_and_exports_with_parity(tmp_path: Path) -> None:
    result = run_source(make_spec(None, device="cuda"), FakeSource(), tmp_path)
    assert result.metrics["test"]["auc"] >= 0.8
    assert result.metrics["onnx"]["ok"]
