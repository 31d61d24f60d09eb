"""The job state machine, without I/O: every event in every state."""

from __future__ import annotations

import pytest

from mlaas4hep.jobs.states import (
    CancelRequested,
    Claim,
    CleanupAttempt,
    Exited,
    InvalidTransition,
    LeaseExpired,
    StartAttempt,
    State,
    Status,
    StopProcess,
    decide,
)


def test_claim_starts_the_next_attempt() -> None:
    d = decide(Status(State.QUEUED, attempt=1), Claim("w1"))
    assert d.status.state is State.RUNNING
    assert d.status.attempt == 2
    assert d.status.worker == "w1"
    assert d.instructions == (StartAttempt(2),)


@pytest.mark.parametrize("state", [s for s in State if s is not State.QUEUED])
def test_only_queued_jobs_can_be_claimed(state: State) -> None:
    with pytest.raises(InvalidTransition, match=repr(state.value)):
        decide(Status(state), Claim("w"))


def test_exit_ok_succeeds_and_failure_keeps_the_reason() -> None:
    running = Status(State.RUNNING, attempt=1, worker="w")
    assert decide(running, Exited(ok=True)).status.state is State.SUCCEEDED
    failed = decide(running, Exited(ok=False, reason="memory limit 4 GiB exceeded")).status
    assert failed.state is State.FAILED
    assert failed.reason == "memory limit 4 GiB exceeded"
    assert decide(running, Exited(ok=False)).status.reason


def test_exit_after_cancel_request_is_cancelled_even_if_ok() -> None:
    running = Status(State.RUNNING, attempt=1, cancel_requested=True)
    assert decide(running, Exited(ok=True)).status.state is State.CANCELLED


def test_cancel_queued_is_immediate_and_running_needs_the_executor() -> None:
    assert decide(Status(State.QUEUED), CancelRequested()).status.state is State.CANCELLED
    d = decide(Status(State.RUNNING, attempt=1), CancelRequested())
    assert d.status.state is State.RUNNING
    assert d.status.cancel_requested
    assert d.instructions == (StopProcess(),)
    again = decide(d.status, CancelRequested())
    assert again.instructions == ()


def test_cancel_is_idempotent_on_cancelled_and_refused_on_finished() -> None:
    cancelled = Status(State.CANCELLED)
    assert decide(cancelled, CancelRequested()).status == cancelled
    for state in (State.SUCCEEDED, State.FAILED):
        with pytest.raises(InvalidTransition, match="cannot be cancelled"):
            decide(Status(state), CancelRequested())


def test_lease_expiry_requeues_while_attempts_remain_then_fails() -> None:
    lost = Status(State.RUNNING, attempt=1, max_attempts=2, worker="w1")
    d = decide(lost, LeaseExpired())
    assert d.status.state is State.QUEUED
    assert d.status.worker is None
    assert "requeued" in (d.status.reason or "")
    assert d.instructions == (CleanupAttempt(1, "w1"),)
    again = decide(decide(d.status, Claim("w2")).status, LeaseExpired())
    assert again.status.state is State.FAILED
    assert "last attempt (2 of 2)" in (again.status.reason or "")


def test_lease_expiry_of_a_cancel_requested_job_cancels_it() -> None:
    d = decide(Status(State.RUNNING, attempt=1, cancel_requested=True), LeaseExpired())
    assert d.status.state is State.CANCELLED


@pytest.mark.parametrize("state", sorted(State, key=str))
@pytest.mark.parametrize(
    "event", [Claim("w"), Exited(ok=True), CancelRequested(), LeaseExpired()], ids=repr
)
def test_terminal_states_never_change(state: State, event: object) -> None:
    status = Status(state, attempt=1)
    try:
        d = decide(status, event)  # type: ignore[arg-type]
    except InvalidTransition:
        return
    if state.terminal:
        assert d.status.state is state
