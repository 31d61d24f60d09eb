"""A one-file spec labelled by an expression trains end to end through ``mlaas4hep run``,
and its bundle scores with the global or the dataset's steps (``Model.load(dataset=...)``).

The one-file three-class example runs end to end in ``test_examples.py``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
import uproot
import yaml

from mlaas4hep.apply import Model
from mlaas4hep.cli import main
from mlaas4hep.data.samples import write_sample

pytestmark = pytest.mark.slow
EVENTS = 2500


@pytest.fixture(scope="module")
def signal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample(tmp_path_factory.mktemp("one-file") / "signal.root", "signal", EVENTS, 31)


def run(tmp_path: Path, doc: dict[str, Any]) -> Path:
    doc.setdefault("train", {}).update(epochs=4, device="cpu", batch_size=128, lr=1e-2)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(doc))
    out = tmp_path / "run"
    assert main(["run", str(spec), "--out", str(out)]) == 0
    return out


def test_one_file_binary_trains_and_applies_with_global_or_dataset_steps(
    signal: Path, tmp_path: Path
) -> None:
    ttH = {
        "name": "ttH",
        "files": [str(signal)],
        "define": {"nLepton": "nMuon + nElectron"},
        "cuts": [{"name": "four jets", "expr": "nJet >= 4"}],
        "label": "nLepton >= 1",
    }
    doc = {
        "name": "one-file-binary",
        "data": {"datasets": [ttH]},
        "preprocess": {
            "cuts": ["MET_pt > 10"],
            "task": "binary",
            "features": {
                "scalars": ["MET_pt", "nJet"],
                "objects": {"Muon": {"fields": ["pt"], "length": 2, "mask": True}},
            },
        },
        "model": {"kind": "mlp", "hidden": [16]},
    }
    out = run(tmp_path, doc)
    features = json.loads((out / "features.json").read_text())
    assert features["task"] == "binary"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["auc"] > 0.7  # the muon mask gives much of the label away
    stats = json.loads((out / "stats.json").read_text())
    assert [r["cut"] for r in stats["cutflow"]] == ["MET_pt > 10", "[ttH] four jets"]
    with uproot.open(signal) as f:
        arrays = f["Events"].arrays()
    met, njet = ak.to_numpy(arrays.MET_pt), ak.to_numpy(arrays.nJet)
    assert stats["cutflow"][1]["after"] == int(((met > 10) & (njet >= 4)).sum())
    # apply runs the global steps; with dataset= the dataset's own cut and define too
    everyone = Model.load(out).evaluate(arrays)
    np.testing.assert_array_equal(everyone.passed, met > 10)
    mine = Model.load(out, dataset="ttH").evaluate(arrays)
    np.testing.assert_array_equal(mine.passed, (met > 10) & (njet >= 4))
    np.testing.assert_array_equal(mine.scores[mine.passed], everyone.scores[mine.passed])
