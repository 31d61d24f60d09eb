"""A whole ``mlaas4hep run`` pipeline trained from ``root://`` inputs through the proxy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from xrootd_servers import XRootDStack, xrootd_stack

from mlaas4hep.cli import main

pytestmark = pytest.mark.xrootd
__all__ = ["xrootd_stack"]  # the fixture, imported for pytest


def pipeline(signal: str, background: str, **data: Any) -> dict[str, Any]:
    return {
        "name": "remote-tth",
        "data": {
            "tree": "Events",
            "step_size": 1000,
            "datasets": [
                {"name": "ttH", "files": [signal], "label": 1},
                {"name": "QCD", "files": [background], "label": 0},
            ],
            **data,
        },
        "preprocess": {
            "define": {"HT": "sum(Jet_pt[Jet_pt > 30])"},
            "features": {
                "scalars": ["MET_pt", "HT", "nJet"],
                "objects": {"Jet": {"fields": ["pt", "eta", "btagDeepB"], "length": 4}},
            },
        },
        "model": {"kind": "xgboost", "n_estimators": 30, "max_depth": 3},
        "train": {"epochs": 1, "device": "cpu", "seed": 3},
    }


def run(spec: dict[str, Any], out: Path) -> dict[str, Any]:
    spec_file = out.with_suffix(".yaml")
    spec_file.write_text(yaml.safe_dump(spec))
    assert main(["run", str(spec_file), "--out", str(out)]) == 0
    return dict(json.loads((out / "metrics.json").read_text()))


def test_run_trains_from_root_urls_through_the_proxy(
    xrootd_stack: XRootDStack, sample_files: dict[str, Path], tmp_path: Path
) -> None:
    signal = xrootd_stack.put(sample_files["signal"], "pipeline/signal.root")
    background = xrootd_stack.put(sample_files["background"], "pipeline/background.root")
    remote = run(
        pipeline(signal, background, xrootd_proxy=xrootd_stack.proxy.url), tmp_path / "remote"
    )
    local = run(
        pipeline(str(sample_files["signal"]), str(sample_files["background"])),
        tmp_path / "local",
    )
    assert remote["onnx"]["ok"]
    assert remote["test"]["auc"] > 0.75
    # The same bytes give the same events, split and model: the same test metrics.
    assert remote["test"] == local["test"]
