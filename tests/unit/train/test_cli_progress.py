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


def test_first_pass_lines_are_throttled_but_keep_the_start_and_the_end() -> None:
    out = io.StringIO()
    show = JsonLines(out, interval_s=3600)
    show(Progress("prepare", message="computing feature statistics"))
    for events in (100, 200, 300):
        show(Progress("prepare", events=events, total=300, elapsed_s=1, message="stats"))
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line.get("events") for line in lines] == [0, 300]  # 100, 200: within the second
    assert lines[-1]["total"] == 300
    assert lines[-1]["message"] == "stats"


def test_first_pass_bar_and_plain_lines() -> None:
    p = Progress("prepare", events=1_000, total=4_000, elapsed_s=0.5, message="stats")
    assert bar_line(p).startswith("first pass [#######.......................] 1,000/4,000 events")
    assert "ETA 0:00:01" in bar_line(p)
    out = io.StringIO()
    show = ProgressBar(out)  # not a terminal: the phase line only, no line per chunk
    show(Progress("prepare", message="computing feature statistics"))
    show(p)
    show.close()
    assert out.getvalue() == "[prepare] computing feature statistics\n"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_first_pass_bar_stays_when_training_starts() -> None:
    out = _Terminal()
    show = ProgressBar(out)
    show(Progress("prepare", message="computing feature statistics"))
    show(Progress("prepare", events=50, total=100, elapsed_s=1.0))
    show(Progress("prepare", events=100, total=100, elapsed_s=2.0))
    show(Progress("train", epoch=1, epochs=2, events=10, total=60, elapsed_s=1.0))
    show.close()
    lines = out.getvalue().split("\n")
    assert lines[0] == "[prepare] computing feature statistics"
    assert lines[1].split("\r")[-1].startswith("first pass [" + "#" * 30 + "] 100/100 events")
    assert lines[2].startswith("\repoch 1/2 [#####")


def test_a_run_reports_the_first_pass_then_training(tmp_path: Path) -> None:
    seen: list[Progress] = []
    run_source(make_spec({"kind": "sgd"}, epochs=1), FakeSource(events=3000), tmp_path,
               progress=seen.append)  # fmt: skip
    first = [p for p in seen if p.phase == "prepare"]
    assert first[0].events == 0
    assert first[0].message == "computing feature statistics"
    counts = [p.events for p in first[1:]]
    assert counts == sorted(counts)
    assert counts[-1] == 3000
    assert all(p.total == 3000 and p.elapsed_s >= 0 for p in first[1:])
    assert seen.index(first[-1]) < min(i for i, p in enumerate(seen) if p.phase == "train")


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
