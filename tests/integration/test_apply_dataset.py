"""``mlaas4hep apply --dataset NAME`` runs training dataset NAME's own defines and cuts.

One bundle trained on one file whose dataset overrides a global define used as a feature
(``HT``) and adds a cut: the CLI scores with the global steps by default and with the
dataset's own steps given ``--dataset``, exactly as ``Model.load(dataset=...)`` does;
the distributed apply (``score_inputs``, the Dask task's code) carries the dataset to
its tasks; an unknown name is a one-line error listing the bundle's datasets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
import uproot
import yaml

from mlaas4hep.apply import Model, score_file
from mlaas4hep.apply.distributed import score_inputs
from mlaas4hep.cli import main
from mlaas4hep.data.partition import SerialDistributor
from mlaas4hep.data.samples import write_sample

pytestmark = pytest.mark.slow
EVENTS = 2500
NAME = "one_file"  # the model's name, in the output columns


@pytest.fixture(scope="module")
def signal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample(tmp_path_factory.mktemp("apply-ds") / "signal.root", "signal", EVENTS, 7)


@pytest.fixture(scope="module")
def bundle(signal: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ttH = {
        "name": "ttH",
        "files": [str(signal)],
        "define": {"HT": "sum(Jet_pt[Jet_pt > 60])", "nLepton": "nMuon + nElectron"},
        "cuts": [{"name": "four jets", "expr": "nJet >= 4"}],
        "label": "nLepton >= 1",
    }
    doc = {
        "name": NAME,
        "data": {"datasets": [ttH]},
        "preprocess": {
            "define": {"HT": "sum(Jet_pt[Jet_pt > 30])"},
            "cuts": ["MET_pt > 10"],
            "task": "binary",
            "features": {"scalars": ["MET_pt", "HT", "nJet"]},
        },
        "model": {"kind": "mlp", "hidden": [8]},
        "train": {"epochs": 2, "device": "cpu", "batch_size": 256},
    }
    d = tmp_path_factory.mktemp("apply-ds-run")
    (d / "spec.yaml").write_text(yaml.safe_dump(doc))
    assert main(["run", str(d / "spec.yaml"), "--out", str(d / "run")]) == 0
    return d / "run"


def friend(out: Path, signal: Path) -> dict[str, np.ndarray[Any, Any]]:
    with uproot.open(out / f"signal.{NAME}.friend.root") as f:
        return {k: np.asarray(v) for k, v in f["Events"].arrays(library="np").items()}


def test_apply_dataset_runs_its_own_defines_and_cuts(
    bundle: Path, signal: Path, tmp_path: Path
) -> None:
    with uproot.open(signal) as f:
        events = f["Events"].arrays()
    met, njet = ak.to_numpy(events.MET_pt), ak.to_numpy(events.nJet)
    assert main(["apply", str(bundle), str(signal), "--out", str(tmp_path / "global")]) == 0
    argv = ["apply", str(bundle), str(signal), "--out", str(tmp_path / "ttH"), "--dataset", "ttH"]
    assert main(argv) == 0
    everyone, mine = friend(tmp_path / "global", signal), friend(tmp_path / "ttH", signal)
    np.testing.assert_array_equal(everyone[f"{NAME}_pass"], met > 10)
    passed = mine[f"{NAME}_pass"]
    np.testing.assert_array_equal(passed, (met > 10) & (njet >= 4))
    # the dataset's HT (jets above 60 GeV, not 30) feeds the model: other scores
    expected = Model.load(bundle, dataset="ttH").predict(events)
    np.testing.assert_array_equal(mine[f"{NAME}_score"][passed], expected[passed])
    assert not np.isnan(expected[passed]).any()
    assert (mine[f"{NAME}_score"][passed] != everyone[f"{NAME}_score"][passed]).any()


def test_the_distributed_apply_carries_the_dataset_to_its_tasks(bundle: Path, signal: Path) -> None:
    model = Model.load(bundle, dataset="ttH")
    local = list(score_file([model], str(signal), step_size=700))
    inputs = score_inputs([model], [str(signal)], SerialDistributor(), step_size=700, min_entries=1)
    chunks = list(next(inputs).chunks)  # read before the generator moves on
    assert len(chunks) == len(local) > 1
    for a, b in zip(local, chunks, strict=True):
        assert a.columns.keys() == b.columns.keys()
        for k in a.columns:
            np.testing.assert_array_equal(a.columns[k], b.columns[k])
    # the tasks' models cut like the driver's, not with the global steps only
    everyone = list(score_file([Model.load(bundle)], str(signal), step_size=700))
    n_pass = [sum(int(c.columns[f"{NAME}_pass"].sum()) for c in cs) for cs in (chunks, everyone)]
    assert 0 < n_pass[0] < n_pass[1]


def test_an_unknown_dataset_lists_the_bundles_datasets(
    bundle: Path, signal: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["apply", str(bundle), str(signal), "--out", str(tmp_path), "--dataset", "tth"]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "has no training dataset 'tth'; its datasets: 'ttH'" in err
    assert "Traceback" not in err
    assert not any(tmp_path.iterdir())
