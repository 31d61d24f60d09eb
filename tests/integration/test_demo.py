"""``mlaas4hep demo`` end to end: the newcomer's first command must keep working."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "mlaas4hep.cli", "demo", "--workdir", str(tmp_path / "demo")]
    argv += ["--events", "4000", "--epochs", "2"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "test metrics: accuracy=" in out
    assert "V2    POST /v2/models/tth-demo/infer -> scores = [" in out
    assert "TFaaS POST /json -> [" in out
    assert (tmp_path / "demo" / "results" / "roc.png").stat().st_size > 0
    # Everything was shut down: no service or xrootd left listening on the ports it used.
    assert "did not stop" not in out
