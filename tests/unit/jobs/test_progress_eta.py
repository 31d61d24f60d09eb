"""How far a job is and how long it has left: the weights of the first pass, the epochs and
the end, the job's own ETA, and what a progress line keeps."""

from __future__ import annotations

import json

import pytest

from mlaas4hep.jobs import progress as prog

P, F = prog.PREPARE_WEIGHT, prog.FINISH_WEIGHT
T = 1 - P - F


def test_the_first_pass_counts_for_its_weight() -> None:
    assert prog.fraction({"phase": "prepare", "events": 0}) == 0.0
    assert prog.fraction({"phase": "prepare", "events": 500}) == 0.0  # total not yet known
    assert prog.fraction({"phase": "prepare", "events": 250, "total": 1000}) == pytest.approx(P / 4)
    # a quarter of the first pass in 10 s: the whole run is 10 / (P / 4) s
    left = prog.eta_seconds({"phase": "prepare", "events": 250, "total": 1000}, 0.0, 10.0)
    assert left == pytest.approx(10 / (P / 4) - 10)


def test_epochs_count_from_the_epoch_in_progress() -> None:
    def at(epoch: int, events: int, phase: str = "train") -> float | None:
        p = {"phase": phase, "epoch": epoch, "epochs": 4, "events": events, "total": 100}
        return prog.fraction(p)

    assert at(1, 0) == pytest.approx(P)  # epoch 1 just started: only the first pass is done
    assert at(2, 50) == pytest.approx(P + T * 1.5 / 4)
    assert at(4, 0) == pytest.approx(P + T * 3 / 4)
    assert at(4, 100, "validate") == pytest.approx(1 - F)


def test_the_last_epoch_leaves_time_on_the_clock() -> None:
    # The old estimate read epoch/epochs: 4/4 done, ETA 0:00:00 for the whole last epoch.
    halfway = {"phase": "train", "epoch": 4, "epochs": 4, "events": 50, "total": 100}
    f = P + T * 3.5 / 4
    left = prog.eta_seconds(halfway, 1000.0, 1100.0)
    assert left == pytest.approx(100 * (1 - f) / f)
    assert left > 0


def test_the_fraction_never_reaches_one_while_the_job_runs() -> None:
    steps = [
        {"phase": "prepare", "events": 10, "total": 10},
        {"phase": "train", "epoch": 3, "epochs": 3, "events": 10, "total": 10},
        {"phase": "validate", "epoch": 3, "epochs": 3, "events": 10, "total": 10},
        {"phase": "export"},
        {"phase": "evaluate"},
        {"phase": "done", "events": 0},
        {"phase": "apply", "events": 40, "total": 40},
    ]
    seen = [prog.fraction(p) for p in steps]
    assert all(f is not None and 0 < f < 1 for f in seen)
    assert seen[:-1] == sorted(seen[:-1])  # monotonic through a training run
    assert all(prog.eta_seconds(p, 0.0, 60.0) for p in steps)  # never 0:00:00 before the end


def test_lines_without_a_phase_and_odd_values() -> None:
    assert prog.fraction({"epoch": 2, "epochs": 4}) == pytest.approx(P + T / 4)
    assert prog.fraction({"events": 25, "total": 100}) == 0.25
    assert prog.fraction({"phase": "train", "epoch": 9, "epochs": 4}) is None  # no sense
    assert prog.fraction({"phase": "train", "events": 5}) is None
    assert prog.eta_seconds({"phase": "prepare", "events": 0}, 0.0, 10.0) is None
    assert prog.eta_seconds({"events": 1, "total": 2}, None, 10.0) is None


def test_the_jobs_own_eta_is_kept_and_extended_to_the_rest_of_the_run() -> None:
    # Epoch 2 of 4 has run 30 s and has 10 s left by the job's own rate: an epoch is 40 s.
    p = {"phase": "train", "epoch": 2, "epochs": 4, "events": 75, "total": 100,
         "elapsed_s": 30.0, "eta_s": 10.0}  # fmt: skip
    left = prog.eta_seconds(p, started_at=0.0, now=5000.0)  # the job's start does not matter
    end = P + T * 2 / 4
    assert left == pytest.approx(10 + 40 * (1 - end) / (T / 4))
    assert left == pytest.approx(10 + 2 * 40 + 40 * F / (T / 4))  # 2 more epochs, then the end
    # The first pass: its own ETA, then the rest at the weights.
    first = {"phase": "prepare", "events": 50, "total": 100, "elapsed_s": 5.0, "eta_s": 5.0}
    assert prog.eta_seconds(first, None, 0.0) == pytest.approx(5 + 10 * (1 - P) / P)
    # Not for phases without a per-pass ETA: the service estimates from the elapsed time.
    validate = {"phase": "validate", "epoch": 4, "epochs": 4, "events": 100, "total": 100,
                "elapsed_s": 30.0, "eta_s": 0.0}  # fmt: skip
    assert prog.eta_seconds(validate, 0.0, 100.0) == pytest.approx(100 * F / (1 - F))


def test_parse_line_keeps_message_and_the_jobs_timing() -> None:
    line = json.dumps(
        {"phase": "prepare", "events": 10, "total": 50, "elapsed_s": 1.5, "eta_s": 6,
         "message": "computing feature statistics"}
    )  # fmt: skip
    assert prog.parse_line(line) == {
        "phase": "prepare",
        "events": 10,
        "total": 50,
        "elapsed_s": 1.5,
        "eta_s": 6.0,
        "message": "computing feature statistics",
    }
    for bad in (-1, "soon", True, 1e300, None):
        kept = prog.parse_line(json.dumps({"phase": "train", "eta_s": bad, "elapsed_s": bad}))
        assert kept == {"phase": "train"}, bad
    assert prog.parse_line('{"phase": "train", "eta_s": NaN}') in (None, {"phase": "train"})
    long = prog.parse_line(json.dumps({"message": "x" * 10_000}))
    assert long is not None
    assert len(long["message"]) == 200


def test_a_new_report_replaces_the_previous_counts_timing_and_message() -> None:
    first = prog.parse_line(
        '{"phase": "prepare", "events": 900, "total": 900, "elapsed_s": 9.0, "eta_s": 0.0,'
        ' "message": "computing feature statistics"}'
    )
    train = prog.parse_line(
        '{"phase": "train", "epoch": 1, "epochs": 2, "events": 10, "elapsed_s": 0.1}'
    )
    assert first is not None
    assert train is not None
    merged = prog.merge(prog.merge(None, first), train)
    assert merged == {"phase": "train", "epoch": 1, "epochs": 2, "events": 10, "elapsed_s": 0.1}
    after = prog.merge(merged, {"phase": "export", "message": "exporting model.onnx"})
    assert after == {"phase": "export", "epoch": 1, "epochs": 2, "message": "exporting model.onnx"}
    assert prog.merge(after, {"metrics": {"auc": 0.9}})["message"] == "exporting model.onnx"
