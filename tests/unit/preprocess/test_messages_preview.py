"""``mlaas4hep preview`` fails (exit 3) when the data it previews cannot train a model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlaas4hep.cli import main
from mlaas4hep.cli.preview import EXIT_DATA_PROBLEM


def write_spec(tmp_path: Path, files: dict[str, Path], **pre: Any) -> Path:
    raw = {
        "name": "preview-check",
        "data": {
            "tree": "Events",
            "datasets": [
                {"name": "ttH", "files": [str(files["signal"])], "label": 1},
                {"name": "QCD", "files": [str(files["background"])], "label": 0},
            ],
        },
        "preprocess": {"features": {"scalars": ["MET_pt", "logJet"]}, **pre},
    }
    raw["preprocess"].setdefault("define", {"logJet": "first(Jet_pt, 0)"})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def preview(spec: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = main(["preview", str(spec), "--events", "2", *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_exit_status_is_distinct_from_a_user_error() -> None:
    assert EXIT_DATA_PROBLEM not in (0, 1, 2)


def test_a_healthy_spec_still_exits_0(
    tmp_path: Path, sample_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = preview(write_spec(tmp_path, sample_files), capsys)
    assert (code, err) == (0, "")
    assert "cut flow" in out


def test_nan_features_fail_naming_the_features_count_and_first_dataset(
    tmp_path: Path, sample_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    define = {"logJet": "sqrt(MET_pt - 1e9)"}  # NaN in every event
    code, out, err = preview(write_spec(tmp_path, sample_files, define=define), capsys)
    assert code == EXIT_DATA_PROBLEM
    assert "feature statistics" in out  # the tables are still printed first
    assert "NaN/inf" in err
    assert "'logJet'" in err
    assert "'MET_pt'" not in err
    assert "first in dataset 'ttH'" in err
    assert "preprocess.nonfinite: drop" in err
    assert "Traceback" not in err


def test_nan_features_with_nonfinite_drop_are_not_an_error(
    tmp_path: Path, sample_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(
        tmp_path, sample_files, define={"logJet": "log(MET_pt - 30)"}, nonfinite="drop"
    )
    code, _, err = preview(spec, capsys)
    assert (code, err) == (0, "")


def test_a_cut_that_removes_everything_is_named(
    tmp_path: Path, sample_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cuts = ["MET_pt > 0", {"name": "huge MET", "expr": "MET_pt > 1e9"}, "nJet >= 0"]
    code, out, err = preview(write_spec(tmp_path, sample_files, cuts=cuts), capsys, "--json")
    assert code == EXIT_DATA_PROBLEM
    assert json.loads(out)["cutflow"][1]["after"] == 0  # --json output stays valid JSON
    assert "no event passes the cuts" in err
    assert "cut 'huge MET'" in err
    assert "MET_pt > 1e9" in err


def test_a_dataset_that_keeps_nothing_is_named(
    tmp_path: Path, sample_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # |genWeight| is 0.5 in the signal sample and 1 in the background sample
    cuts = ["MET_pt > 0", {"name": "only ttH", "expr": "abs(genWeight) < 0.75"}]
    spec = write_spec(tmp_path, sample_files, cuts=cuts)
    code, _, err = preview(spec, capsys)
    assert code == EXIT_DATA_PROBLEM
    assert "dataset 'QCD' keeps no event" in err
    assert "cut 'only ttH'" in err
    assert "'ttH'" not in err.replace("cut 'only ttH'", "")
