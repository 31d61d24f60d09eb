"""``mlaas4hep run --progress-json`` on real ROOT files: the first pass reports entries read
and the total, and the service turns the lines into a job's progress with an ETA."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlaas4hep.cli import main
from mlaas4hep.cli import run as run_cli
from mlaas4hep.data.samples import write_sample
from mlaas4hep.jobs import progress as prog

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tth-vs-qcd.yaml"
ENTRIES = {"signal_1": 2000, "signal_2": 1500, "background": 3000}


def _spec(root: Path) -> dict[str, Any]:
    """examples/tth-vs-qcd.yaml on a few thousand generated events, small and quick."""
    files = {
        name: write_sample(root / f"{name}.root", name.split("_")[0], n, seed=i)
        for i, (name, n) in enumerate(ENTRIES.items())
    }
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["data"]["datasets"][0]["files"] = [str(files["signal_1"]), str(files["signal_2"])]
    raw["data"]["datasets"][1]["files"] = [str(files["background"])]
    raw["data"]["step_size"] = 500
    raw["model"] = {"kind": "sgd"}
    raw["train"] = {"epochs": 2, "batch_size": 256, "device": "cpu", "seed": 1}
    return raw


def test_first_pass_lines_carry_growing_counts_and_the_total(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(yaml.safe_dump(_spec(tmp_path / "data")))
    # Every update printed: the real one-per-second throttle would leave 2 lines of a pass.
    monkeypatch.setattr(run_cli, "JsonLines", functools.partial(run_cli.JsonLines, interval_s=0))
    assert main(["run", str(spec), "--out", str(tmp_path / "out"), "--progress-json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    total = sum(ENTRIES.values())
    first = [line for line in lines if line["phase"] == "prepare"]
    assert lines[0] == first[0]
    assert first[0]["events"] == 0
    assert first[0]["message"] == "computing feature statistics"
    counts = [line["events"] for line in first[1:]]
    assert len(counts) == 4 + 3 + 6 + 1  # one per 500-entry chunk, then the end
    assert counts == sorted(counts)
    assert counts[-1] == total
    assert {line.get("total") for line in first[1:]} <= {None, total}
    assert first[-1]["total"] == total  # the count from the file metadata arrived
    assert all(line["message"] == "computing feature statistics" for line in first)
    assert any("eta_s" in line for line in first[1:-1])
    assert lines.index(first[-1]) < next(i for i, x in enumerate(lines) if x["phase"] == "train")

    # What the service makes of the same lines: the job's progress, with a growing fraction.
    stored: dict[str, Any] | None = None
    fractions = []
    for line in lines:
        update = prog.parse_line(json.dumps(line))
        assert update is not None
        stored = prog.merge(stored, update)
        fractions.append(prog.fraction(stored))
        if line["phase"] == "prepare" and line.get("total") and "eta_s" in line:
            assert stored["message"] == "computing feature statistics"
            assert prog.eta_seconds(stored, None, 0.0) is not None
    known = [f for f in fractions if f is not None]
    assert known == sorted(known)
    assert 0 < known[-1] < 1
    assert stored is not None
    assert stored["phase"] == "done"
    assert "total" not in stored  # the first pass's total did not leak into later phases
