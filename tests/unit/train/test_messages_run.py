"""``train.device: cuda`` fails before any data is read; a failed run leaves no debris."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from mlaas4hep.errors import DataQualityError, TrainingError
from mlaas4hep.spec import PipelineSpec
from mlaas4hep.train import run as run_module
from mlaas4hep.train.run import run_pipeline, run_source

from .conftest import make_spec
from .fakes import FakeSource


def two_datasets(**train: Any) -> PipelineSpec:
    """``make_spec`` with a background dataset, so that a ``Preprocessor`` accepts it."""
    spec = make_spec(None, **train)
    background = spec.data.datasets[0].model_copy(update={"name": "bkg", "label": 0})
    data = spec.data.model_copy(update={"datasets": [spec.data.datasets[0], background]})
    return spec.model_copy(update={"data": data})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a GPU")
def test_cuda_without_a_gpu_fails_before_reading_any_data(tmp_path: Path) -> None:
    source = FakeSource()
    out = tmp_path / "new" / "run"
    with pytest.raises(TrainingError) as info:
        run_source(make_spec(None, device="cuda"), source, out)
    assert source.calls == []  # no first pass, no batch
    assert "train.device" in str(info.value)
    assert "'cpu'" in str(info.value)
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a GPU")
def test_cuda_check_comes_before_the_first_pass_of_run_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_data(*_: Any, **__: Any) -> Any:
        raise AssertionError("the data was read")

    monkeypatch.setattr("mlaas4hep.preprocess.pipeline.Preprocessor.fit", no_data)
    with pytest.raises(TrainingError, match="no CUDA device"):
        run_pipeline(two_datasets(device="cuda"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def fail_after(write: dict[str, str], error: Exception) -> Any:
    """A ``run_source`` that writes *write* (path -> text) under the output, then fails."""

    def fake(spec: Any, source: Any, out: Path, **_: Any) -> Any:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in write.items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_text(text)
        raise error

    return fake


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


PARTIAL = {
    "work/pages/0.bin": "scratch",
    "cache/features-abc/X.npy": "features",
    "cache/.features-tmp/X.npy": "features",
    "cache/fit-0123.json": "{}",  # the first-pass cache: kept, a rerun skips the first pass
    "plots/history.png": "png",
}


def test_a_failed_run_removes_the_directories_it_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_module, "run_source", fail_after(PARTIAL, DataQualityError("NaN")))
    out = tmp_path / "runs" / "tth"
    with pytest.raises(DataQualityError):
        run_pipeline(two_datasets(), out)
    assert tree(tmp_path) == {"runs/tth/cache/fit-0123.json"}


def test_a_failed_run_with_nothing_worth_keeping_leaves_no_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    partial = {k: v for k, v in PARTIAL.items() if "fit-" not in k}
    monkeypatch.setattr(run_module, "run_source", fail_after(partial, TrainingError("boom")))
    with pytest.raises(TrainingError):
        run_pipeline(two_datasets(), tmp_path / "runs" / "tth")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_run_keeps_the_users_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "mine"
    (out / "plots").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "plots" / "mine.png").write_text("mine")
    monkeypatch.setattr(run_module, "run_source", fail_after(PARTIAL, TrainingError("boom")))
    with pytest.raises(TrainingError):
        run_pipeline(two_datasets(), out)
    assert tree(out) == {
        "notes.txt",
        "plots/mine.png",
        "plots/history.png",  # in a folder the user had: not ours to judge
        "cache/fit-0123.json",
    }


def test_a_failed_run_that_can_be_resumed_keeps_its_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resumable = {**PARTIAL, "checkpoints/latest.json": "{}"}
    monkeypatch.setattr(run_module, "run_source", fail_after(resumable, TrainingError("parity")))
    out = tmp_path / "out"
    with pytest.raises(TrainingError):
        run_pipeline(two_datasets(), out)
    assert tree(out) == set(resumable) - {"work/pages/0.bin"}
