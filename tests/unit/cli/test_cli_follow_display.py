"""What ``submit --wait`` and ``wait`` show, on a fixed 80-column console: phase, events,
rate and ETA fit, from the first pass through training to the end."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from mlaas4hep.cli.follow import Rate, _Lines, fraction, render, status_line, summary


def _job(state: str = "running", **progress: Any) -> dict[str, Any]:
    return {
        "id": "3f2c" * 8,
        "name": "tth",
        "state": state,
        "attempt": 0 if state == "queued" else 1,
        "max_attempts": 3,
        "cancel_requested": False,
        "reason": None,
        "progress": progress or None,
        "deployed": None,
    }


def _screen(job: dict[str, Any], rate: float | None = None) -> list[str]:
    console = Console(width=80, file=io.StringIO(), force_terminal=True, record=True)
    console.print(render(job, rate))
    lines = console.export_text().splitlines()
    assert all(len(line) <= 80 for line in lines)
    return lines


def test_first_pass_shows_phase_events_and_rate() -> None:
    first = _screen(_job(phase="prepare", events=1_234_567), rate=45_000.0)[0]
    assert "running  preprocessing  1.2M events" in first
    assert "45.0k ev/s" in first
    first = _screen(_job(phase="prepare", events=0))[0]
    assert first.strip() == "running  preprocessing"


def test_first_pass_shows_events_of_total_eta_and_the_message_within_80_columns() -> None:
    job = _job(
        phase="prepare", events=123_456, total=987_654, eta_seconds=4_523.0,
        message="computing feature statistics",
    )  # fmt: skip
    first, second = _screen(job, rate=98_765.0)
    assert first.strip() == (
        "running  preprocessing  123,456/987,654 events  ETA 1:15:23  98.8k ev/s"
    )
    assert "12%" in second  # of the first pass
    assert second.rstrip().endswith("computing feature statistics")
    big = _job(phase="prepare", events=12_345_678_901, total=98_765_432_109,
               eta_seconds=360_000.0, message="computing feature statistics " * 4)  # fmt: skip
    first, second = _screen(big, rate=123_456_789.0)
    assert "preprocessing  12.3G/98.8G events  ETA 100:00:00  123.5M ev/s" in first
    assert second.rstrip().endswith("…")  # a long message is cut, never wrapped


def test_metrics_win_over_the_message_on_the_second_line() -> None:
    job = _job(phase="train", epoch=1, epochs=2, events=5, total=10, message="warming up",
               metrics={"val_auc": 0.8})  # fmt: skip
    assert "val_auc 0.8" in _screen(job)[1]
    assert "warming up" not in _screen(job)[1]


def test_plain_lines_carry_the_first_pass_message() -> None:
    out = io.StringIO()
    lines = _Lines(Console(width=80, file=out), Rate())
    lines(_job(phase="prepare", events=0, message="computing feature statistics"))
    lines(_job(phase="prepare", events=10, total=40, message="computing feature statistics"))
    lines(_job(phase="train", epoch=1, epochs=2, events=10, total=20))
    assert out.getvalue().splitlines() == [
        "running  preprocessing  computing feature statistics",
        "running  training  epoch 1/2  10/20 events",
    ]


def test_training_line_keeps_phase_events_and_eta_within_80_columns() -> None:
    job = _job(
        phase="train", epoch=12, epochs=100, events=123_456_789, total=987_654_321,
        eta_seconds=45_296.0, metrics={"val_auc": 0.91234, "val_loss": 0.3, "seconds": 9.0},
    )  # fmt: skip
    lines = _screen(job, rate=1_234_567.0)
    assert "training  epoch 12/100  123.5M/987.7M events  ETA 12:34:56" in lines[0]
    assert "val_auc 0.9123" in lines[1]
    assert "seconds" not in lines[1]
    assert "11%" in lines[1]  # 11.1 of 100 epochs


def test_eta_from_the_measured_rate_when_the_service_has_none() -> None:
    rate = Rate()
    job = _job(phase="train", epoch=1, epochs=2, events=1_000, total=101_000)  # exact < 1M
    assert rate.observe(job, now=100.0) is None
    job["progress"]["events"] = 11_000
    assert rate.observe(job, now=101.0) == pytest.approx(10_000.0)
    line = status_line(job, rate.value)
    assert "11,000/101,000 events  ETA 0:00:09  10.0k ev/s" in line
    job["progress"].update(phase="validate")  # a new phase starts a new measurement
    assert rate.observe(job, now=102.0) is None


def test_fraction_counts_finished_epochs() -> None:
    assert fraction(_job(phase="train", epoch=3, epochs=4, events=50, total=100)) == 0.625
    assert fraction(_job(phase="prepare", events=10)) is None
    assert fraction(_job(phase="prepare", events=10, total=40)) == 0.25  # the first pass
    assert fraction(_job(phase="apply", events=10, total=40)) == 0.25


def test_ended_and_queued_jobs_are_one_line() -> None:
    assert _screen(_job("queued")) == ["queued"]
    requeued = _job("queued", phase="train", epoch=1, epochs=5)
    requeued["attempt"], requeued["reason"] = 1, "worker lost"
    assert _screen(requeued) == ["queued  requeued (attempt 1/3)"]
    done = _job("succeeded", phase="done", epoch=2, epochs=2, metrics={"auc": 0.9})
    assert _screen(done) == ["succeeded"]


class _Answer:
    content = b'{"evaluated_on": "test", "test": {"auc": 0.93, "accuracy": 0.88, "n": 5}}'


class _Artifacts:
    """The two calls :func:`summary` makes, answering like a succeeded training job."""

    def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        return [{"name": n} for n in ("metrics.json", "model.onnx", "plots/roc.png")]

    def request(self, method: str, path: str) -> _Answer:
        assert path.endswith("/artifacts/metrics.json")
        return _Answer()


def test_summary_names_metrics_plots_and_the_deployed_model() -> None:
    job = _job("succeeded", phase="done", metrics={"auc": 0.5})
    job["deployed"] = {"model": "tth-classifier", "version": 3}
    console = Console(width=80, file=io.StringIO(), record=True)
    summary(_Artifacts(), job, console)  # type: ignore[arg-type]
    text = console.export_text()
    assert f"job {job['id']} succeeded" in text
    assert "test metrics: auc 0.93  accuracy 0.88  n 5" in text
    assert "plots: plots/roc.png" in text
    assert f"mlaas4hep download {job['id']} --out DIR" in text
    assert "deployed: model tth-classifier version 3" in text
    assert "mlaas4hep models show tth-classifier:3" in text


def test_the_reason_is_shown_as_written_never_as_markup() -> None:
    job = _job("failed")
    job["reason"] = "exit status 1: [red]not markup[/red]"
    console = Console(width=80, file=io.StringIO(), record=True)
    summary(_Artifacts(), job, console)  # type: ignore[arg-type]
    text = console.export_text()
    assert "[red]not markup[/red]" in text
    assert f"mlaas4hep logs {job['id']}" in text


def test_status_rows_show_the_first_pass_and_its_message() -> None:
    from mlaas4hep.cli.status import rows

    job = _job(phase="prepare", events=2_500, total=10_000, eta_seconds=90.0,
               message="computing feature statistics")  # fmt: skip
    job["id"], job["name"] = "j1", "tth"
    shown = dict(rows(job))
    assert shown["phase"] == "preprocessing"
    assert shown["progress"] == "2,500/10,000 events (25%)"
    assert shown["doing"] == "computing feature statistics"
    assert shown["ETA"] == "0:01:30"
    assert "doing" not in dict(rows(_job("succeeded", phase="done", message="/x/model.onnx")))
