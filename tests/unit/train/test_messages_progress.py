"""JSON progress lines do not depend on the machine's uptime (monotonic time starts near 0)."""

from __future__ import annotations

import io
import json
import types

import pytest

from mlaas4hep.cli import run as cli_run
from mlaas4hep.cli.run import JsonLines
from mlaas4hep.train.progress import Progress


@pytest.mark.parametrize("uptime", [0.0, 0.3, 1e6])
def test_first_train_line_is_written_whatever_the_uptime(
    uptime: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # only the cli.run module sees the frozen clock
    monkeypatch.setattr(cli_run, "time", types.SimpleNamespace(monotonic=lambda: uptime))
    out = io.StringIO()
    show = JsonLines(out, interval_s=1.0)
    show(Progress("train", epoch=1, epochs=1, events=10, total=100, elapsed_s=0.1))
    show(Progress("train", epoch=1, epochs=1, events=20, total=100, elapsed_s=0.2))  # throttled
    assert [json.loads(line)["events"] for line in out.getvalue().splitlines()] == [10]
