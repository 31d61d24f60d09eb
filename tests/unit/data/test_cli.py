from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mlaas4hep.cli import main
from mlaas4hep.data.target import split_tree


def test_inspect_table_and_json(sample_files, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(sample_files["signal"])
    assert main(["inspect", path]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "tree 'Events': 3000 entries, 21 branches" in out[0]
    assert out[1].split() == ["branch", "type", "kind", "collection", "compressed",
                              "uncompressed"]  # fmt: skip
    jet = next(line for line in out if line.startswith("Jet_pt "))
    assert jet.split()[:4] == ["Jet_pt", "float32", "jagged", "Jet"]
    assert main(["inspect", f"{path}:Events", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["entries"] == 3000
    assert doc["branches"][5] == {
        "name": "nJet", "dtype": "int32", "kind": "counter", "collection": "Jet",
        "compressed_bytes": doc["branches"][5]["compressed_bytes"],
        "uncompressed_bytes": doc["branches"][5]["uncompressed_bytes"],
    }  # fmt: skip


def test_stats_json_and_table(sample_files, tmp_path, capsys) -> None:
    files = [str(sample_files["signal"]), str(sample_files["background"])]
    args = ["stats", *files, "--branches", "MET_pt", "Jet_pt", "--cache-dir", str(tmp_path)]
    assert main([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["entries"] == 6000
    assert doc["scalars"]["MET_pt"]["count"] == 6000
    assert sum(doc["collections"]["Jet"]["multiplicity"].values()) == 6000
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "6000 entries" in table
    assert "Jet: max" in table
    assert main(["stats", files[0], "--max-events", "10", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["entries"] == 10
    assert "Electron_phi" in doc["collections"]["Electron"]["fields"]


def test_sample_data(tmp_path: Path, capsys) -> None:
    assert main(["sample-data", str(tmp_path / "out"), "--events", "200", "--seed", "3"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "background.root", "signal.root",
    ]  # fmt: skip
    assert "200 events" in capsys.readouterr().out


@pytest.fixture
def bad_inputs(tmp_path: Path, sample_files) -> Path:
    data = sample_files["signal"].read_bytes()
    (tmp_path / "text.root").write_text("not root")
    (tmp_path / "cut.root").write_bytes(data[:5000])
    shutil.copyfile(sample_files["signal"], tmp_path / "good.root")
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["inspect", "{d}/absent.root"], "does not exist"),
        (["inspect", "{d}"], "is a directory"),
        (["inspect", "{d}/text.root"], "is not a ROOT file"),
        (["inspect", "{d}/cut.root"], "is truncated"),
        (["inspect", "{d}/good.root:Evnts"], "no tree 'Evnts'"),
        (["stats", "{d}/good.root", "--branches", "Jet_pT"], "'Jet_pT': closest: 'Jet_pt'"),
        (["stats", "{d}/*.nothing"], "matches no file"),
        (["stats", "{d}/good.root", "--tree", "Runs"], "no tree 'Runs'"),
    ],
)
def test_bad_input_is_one_line_exit_2(bad_inputs: Path, capsys, argv, message) -> None:
    assert main([a.format(d=bad_inputs) for a in argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, lines
    assert message in lines[0]
    assert "Traceback" not in captured.err


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("f.root", ("f.root", None)),
        ("f.root:Events", ("f.root", "Events")),
        ("root://host:1094//a/f.root", ("root://host:1094//a/f.root", None)),
        ("root://host:1094//a/f.root:Events", ("root://host:1094//a/f.root", "Events")),
        ("https://h/f.root:T", ("https://h/f.root", "T")),
        ("f.root:", ("f.root:", None)),
    ],
)
def test_split_tree(target: str, expected: tuple[str, str | None]) -> None:
    assert split_tree(target) == expected
