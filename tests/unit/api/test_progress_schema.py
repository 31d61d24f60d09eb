"""The job document's ``progress``: the job's message, its counts and the whole-job ETA."""

from __future__ import annotations

import time
from typing import Any

import pytest

from mlaas4hep.api.schemas import Job
from mlaas4hep.jobs import progress as prog
from mlaas4hep.jobs.records import JobRecord
from mlaas4hep.jobs.states import State


def _record(progress: dict[str, Any], state: State = State.RUNNING) -> JobRecord:
    now = time.time()
    return JobRecord(
        id="0" * 32, owner="o", name="j", state=state, spec="{}", request_hash="",
        idempotency_key=None, needs_network=False, attempt=1, max_attempts=1,
        cancel_requested=False, worker=None, lease_until=None, pgid=None, created_at=now - 60,
        updated_at=now, started_at=now - 60, finished_at=None, reason=None, progress=progress,
        result_dir=None,
    )  # fmt: skip


def test_the_first_pass_shows_its_message_counts_and_an_eta() -> None:
    line = (
        '{"phase": "prepare", "events": 2500, "total": 10000, "elapsed_s": 5.0,'
        ' "eta_s": 15.0, "message": "computing feature statistics"}'
    )
    stored = prog.merge(None, prog.parse_line(line) or {})
    doc = Job.of(_record(stored)).model_dump(mode="json")["progress"]
    assert doc["message"] == "computing feature statistics"
    assert (doc["events"], doc["total"]) == (2500, 10000)
    # the job's 15 s for the rest of the pass, then the rest of the run at that pace
    p = prog.PREPARE_WEIGHT
    assert doc["eta_seconds"] == pytest.approx(15 + 20 * (1 - p) / p)
    assert "elapsed_s" not in doc  # the job's timing feeds the ETA, it is not shown


def test_an_ended_job_has_no_eta_and_no_message_is_null() -> None:
    doc = Job.of(_record({"phase": "done", "events": 0}, State.SUCCEEDED)).model_dump()
    assert doc["progress"]["eta_seconds"] is None
    assert doc["progress"]["message"] is None
