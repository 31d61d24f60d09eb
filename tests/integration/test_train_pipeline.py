"""The whole pipeline on the generated NanoAOD-like sample: real ROOT files, real
Preprocessor, every engine, the ``mlaas4hep run`` command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlaas4hep.cli import main
from mlaas4hep.data.samples import write_sample_set
from mlaas4hep.spec import load_spec
from mlaas4hep.train.export import PARITY_TOLERANCE
from mlaas4hep.train.run import run_pipeline

TORCH_MODEL = """
import torch

def build_model(n_inputs, n_outputs):
    return torch.nn.Sequential(
        torch.nn.Linear(n_inputs, 64), torch.nn.ReLU(), torch.nn.Linear(64, n_outputs)
    )
"""

ENGINES: dict[str, dict[str, Any]] = {
    "mlp": {"kind": "mlp", "hidden": [64, 32]},
    "xgboost": {"kind": "xgboost", "n_estimators": 60, "max_depth": 4},
    "sgd": {"kind": "sgd"},
    "python": {"kind": "python", "module": "MODULE"},
}


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("samples")
    write_sample_set(directory, 6000, seed=11)
    (directory / "user_model.py").write_text(TORCH_MODEL)
    return directory


def spec_dict(samples: Path, model: dict[str, Any], **train: Any) -> dict[str, Any]:
    if model.get("module") == "MODULE":
        model = model | {"module": str(samples / "user_model.py")}
    return {
        "name": "tth-test",
        "data": {
            "tree": "Events",
            "step_size": 2000,
            "datasets": [
                {"name": "ttH", "files": [str(samples / "signal.root")], "label": 1},
                {"name": "QCD", "files": [str(samples / "background.root")], "label": 0},
            ],
        },
        "preprocess": {
            "define": {
                "HT": "sum(Jet_pt[Jet_pt > 30])",
                "nGoodJet": "count(Jet_pt[(Jet_pt > 30) & (abs(Jet_eta) < 2.4)])",
            },
            "cuts": ["nGoodJet >= 1"],
            "features": {
                "scalars": ["MET_pt", "HT", "nGoodJet"],
                "objects": {"Jet": {"fields": ["pt", "eta", "btagDeepB"], "length": 4}},
            },
        },
        "model": model,
        "train": {"epochs": 6, "batch_size": 256, "lr": 3e-3, "device": "cpu", "seed": 3} | train,
        "deploy": {"name": "tth-test"},
    }


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(ENGINES))
def test_every_engine_learns_the_generated_sample(kind: str, samples: Path, tmp_path: Path) -> None:
    spec = load_spec(spec_dict(samples, ENGINES[kind]))
    result = run_pipeline(spec, tmp_path, allow_user_code=kind == "python")
    assert result.metrics["test"]["auc"] >= 0.8
    assert result.metrics["onnx"]["max_abs_diff"] < PARITY_TOLERANCE
    assert "nGoodJet >= 1" in (tmp_path / "README.md").read_text()  # the cut flow


def test_run_command_writes_the_bundle_and_json_progress(
    samples: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_file = tmp_path / "pipeline.yaml"
    spec_file.write_text(yaml.safe_dump(spec_dict(samples, ENGINES["xgboost"], epochs=3)))
    out = tmp_path / "out"
    assert main(["run", str(spec_file), "--out", str(out), "--progress-json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    phases = [line["phase"] for line in lines]
    assert phases[0] == "prepare"
    assert phases[-1] == "done"
    assert {"train", "validate", "export", "evaluate"} <= set(phases)
    validate = [line for line in lines if line["phase"] == "validate"]
    assert [v["epoch"] for v in validate] == [1, 2, 3]
    assert "val_auc" in validate[-1]["metrics"]
    assert lines[-1]["metrics"]["auc"] >= 0.8
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["onnx"]["ok"]
    assert (out / "plots" / "roc.png").is_file()


def test_run_command_reports_user_errors_in_one_line(
    samples: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_file = tmp_path / "pipeline.yaml"
    spec_file.write_text(yaml.safe_dump(spec_dict(samples, ENGINES["python"])))
    assert main(["run", str(spec_file), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "does not allow" in err
    assert "Traceback" not in err
