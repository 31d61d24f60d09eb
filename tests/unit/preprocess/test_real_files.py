"""The preprocessor and its commands on real (generated) ROOT files through mlaas4hep.data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from mlaas4hep.cli import main
from mlaas4hep.data.samples import write_sample, write_sample_set
from mlaas4hep.preprocess.pipeline import Preprocessor
from mlaas4hep.spec import PipelineSpec, load_spec

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("samples")
    write_sample_set(root / "data", 3000, seed=3)
    write_sample(root / "data" / "signal_2.root", "signal", 1500, seed=9)
    write_sample(root / "data" / "signal_3.root", "signal", 1000, seed=10)
    return root


def example(samples: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> PipelineSpec:
    monkeypatch.chdir(samples)  # example files name data/... relative to the working dir
    return load_spec(EXAMPLES / name)


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_every_example_runs_its_first_pass(
    samples: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    prep = Preprocessor(example(samples, name, monkeypatch))
    info = prep.fit()
    assert len(info.names) == prep.spec.preprocess.feature_count()
    assert sum(e["train"] for e in info.events.values()) > 0
    batch = next(prep.batches("train"))
    assert batch.X.shape[1] == len(info.names)
    assert np.isfinite(batch.X).all()


def test_split_is_stable_across_step_size_and_file_order(
    samples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = example(samples, "tth-vs-qcd.yaml", monkeypatch)
    files = ["data/signal.root", "data/signal_2.root", "data/signal_3.root"]

    def assignment(order: list[str], step: int) -> dict[tuple[float, float], int]:
        raw = spec.model_dump(mode="json")
        raw["data"]["datasets"][0]["files"] = order
        raw["data"]["step_size"] = step
        prep = Preprocessor(PipelineSpec.model_validate(raw))
        out = {}
        for r in prep.chunks(["ttH"]):
            out.update(
                {
                    (float(a), float(b)): int(s)
                    for a, b, s in zip(r.X[:, 0], r.X[:, 1], r.split, strict=True)
                }
            )
        return out

    first = assignment(files, 700)
    again = assignment(list(reversed(files)), 4096)
    assert first == again
    assert len(first) > 2000
    counts = np.bincount(list(first.values()), minlength=3) / len(first)
    assert counts == pytest.approx([0.6, 0.2, 0.2], abs=0.04)


def test_preview_prints_features_cutflow_and_stats(
    samples: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(samples)
    assert main(["preview", str(EXAMPLES / "tth-vs-qcd.yaml"), "--events", "3"]) == 0
    out = capsys.readouterr().out
    for text in ("Jet_pt_0", "Jet_mask_5", ">= 2 good jets", "MET_pt > 20", "feature statistics"):
        assert text in out
    assert main(["preview", str(EXAMPLES / "tth-vs-qcd.yaml"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cutflow"][0]["cut"] == ">= 2 good jets"
    assert len(data["first_events"]) == 5
    assert set(data["stats"]) == set(data["features"])


def test_preview_reports_a_bad_expression(
    samples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    raw = yaml.safe_load((EXAMPLES / "tth-vs-qcd.yaml").read_text())
    raw["preprocess"]["define"]["HT"] = "sum(Jet_ptt)"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(samples)
    assert main(["preview", str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err
    assert "unknown name 'Jet_ptt'" in err
    assert "closest: 'Jet_pt'" in err


def test_convert_legacy_end_to_end(
    samples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(samples / "data", tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.json").write_text(json.dumps({
        "nevts": 4000, "chunk_size": 1000, "epochs": 3, "batch_size": 64,
        "identifier": "run,event,luminosityBlock", "branch": "Events",
        "selected_branches": ["MET_pt", "nJet", "Jet_pt", "Jet_eta", "nMuon"],
        "exclude_branches": "", "redirector": "",
    }))  # fmt: skip
    (tmp_path / "preproc.json").write_text(json.dumps({
        "new_branch": {"ht": {"def": "np.sum(Jet_pt)", "type": "flat"}},
        "flat_cut": {"nJet": {"cut": "2<=nJet<=12", "remove": "False"}},
        "jagged_cut": {"Jet_eta": {"cut": ["abs(Jet_eta)<4", "all"], "remove": "False"}},
    }))  # fmt: skip
    (tmp_path / "files.txt").write_text("data/signal.root\ndata/background.root\n")
    (tmp_path / "labels.txt").write_text("1\n0\n")
    args = ["convert-legacy", "--params", "params.json", "--preproc", "preproc.json",
            "--files", "files.txt", "--labels", "labels.txt", "-o", "pipeline.yaml"]  # fmt: skip
    assert main(args) == 0
    spec = load_spec(tmp_path / "pipeline.yaml")
    assert spec.preprocess.cuts == ["2<=nJet<=12", "all(abs(Jet_eta)<4)"]
    assert spec.preprocess.define == {"ht": "sum(Jet_pt)"}
    jets = spec.preprocess.features.objects["Jet"]
    assert jets.fields == ["pt", "eta"]
    assert 8 <= jets.length <= 30  # the largest multiplicity in the scanned events
    info = Preprocessor(spec).fit()
    assert info.names[:4] == ("MET_pt", "nJet", "nMuon", "ht")
    assert sum(e["read"] for e in info.events.values()) == 4000
