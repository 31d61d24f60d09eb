"""The job state machine: pure, events in, a new status and instructions out.

::

    queued ──Claim──► running ──Exited(ok)──────► succeeded
      │  ▲              │ ├─Exited(error/limit)─► failed
      │  └─LeaseExpired─┘ │  (attempts left)      (LeaseExpired, no attempts left: failed)
      │                   └─CancelRequested──► running + cancel_requested ─Exited─► cancelled
      └──CancelRequested──────────────────────────────────────────────────────────► cancelled

Nothing here does I/O. The store applies a :class:`Decision`'s status in one transaction
(compare-and-set on the row version) and the executor carries out its instructions;
this split lets the whole lifecycle be tested without processes or a database.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum

from mlaas4hep.errors import Conflict


class State(StrEnum):
    """Where a job is in its lifecycle."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True once the job can no longer change."""
        return self in TERMINAL


TERMINAL = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})


class InvalidTransition(Conflict):
    """An event does not apply to the job's current state (HTTP 409)."""


@dataclass(frozen=True)
class Status:
    """The part of a job row the state machine reads and writes."""

    state: State
    attempt: int = 0
    max_attempts: int = 3
    cancel_requested: bool = False
    worker: str | None = None
    reason: str | None = None


# ---- events ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """An executor takes a queued job."""

    worker: str


@dataclass(frozen=True)
class Exited:
    """The attempt's process ended; ``ok`` with a committed result, else ``reason``."""

    ok: bool
    reason: str | None = None


@dataclass(frozen=True)
class CancelRequested:
    """A user asked to cancel."""


@dataclass(frozen=True)
class LeaseExpired:
    """The executor running the job stopped heartbeating (crashed, killed, partitioned)."""


Event = Claim | Exited | CancelRequested | LeaseExpired

# ---- instructions ----------------------------------------------------------------------


@dataclass(frozen=True)
class StartAttempt:
    """Run attempt number ``attempt`` of the job."""

    attempt: int


@dataclass(frozen=True)
class StopProcess:
    """Terminate the running attempt's process group (SIGTERM, grace, SIGKILL)."""


@dataclass(frozen=True)
class CleanupAttempt:
    """Kill what is left of a lost attempt and discard its uncommitted directory."""

    attempt: int
    worker: str | None


Instruction = StartAttempt | StopProcess | CleanupAttempt


@dataclass(frozen=True)
class Decision:
    """The status to store and what the executor must do."""

    status: Status
    instructions: tuple[Instruction, ...] = ()


def decide(status: Status, event: Event) -> Decision:
    """Apply *event* to *status*.

    Raises:
        InvalidTransition: the event makes no sense in this state (e.g. cancelling a
            succeeded job, claiming a running one); the message says what state it is in.
    """
    if isinstance(event, Claim):
        return _claim(status, event)
    if isinstance(event, Exited):
        return _exited(status, event)
    if isinstance(event, CancelRequested):
        return _cancel(status)
    return _lease_expired(status)


def _claim(status: Status, event: Claim) -> Decision:
    _require(status, State.QUEUED, "be claimed")
    attempt = status.attempt + 1
    new = dataclasses.replace(status, state=State.RUNNING, attempt=attempt, worker=event.worker)
    return Decision(new, (StartAttempt(attempt),))


def _exited(status: Status, event: Exited) -> Decision:
    _require(status, State.RUNNING, "finish")
    if status.cancel_requested:
        new = dataclasses.replace(status, state=State.CANCELLED, reason="cancelled by the user")
    elif event.ok:
        new = dataclasses.replace(status, state=State.SUCCEEDED, reason=None)
    else:
        reason = event.reason or "the job process failed without a message"
        new = dataclasses.replace(status, state=State.FAILED, reason=reason)
    return Decision(new)


def _cancel(status: Status) -> Decision:
    if status.state is State.CANCELLED:
        return Decision(status)  # cancelling twice is harmless
    if status.state is State.QUEUED:
        return Decision(
            dataclasses.replace(status, state=State.CANCELLED, reason="cancelled before it started")
        )
    _require(status, State.RUNNING, "be cancelled")
    if status.cancel_requested:
        return Decision(status)
    return Decision(dataclasses.replace(status, cancel_requested=True), (StopProcess(),))


def _lease_expired(status: Status) -> Decision:
    _require(status, State.RUNNING, "lose its lease")
    cleanup = CleanupAttempt(status.attempt, status.worker)
    if status.cancel_requested:
        reason = "cancelled by the user (its executor stopped before confirming)"
        return Decision(
            dataclasses.replace(status, state=State.CANCELLED, worker=None, reason=reason),
            (cleanup,),
        )
    if status.attempt < status.max_attempts:
        reason = (
            f"attempt {status.attempt} of {status.max_attempts} lost: its executor "
            f"{status.worker!r} stopped heartbeating; requeued"
        )
        new = dataclasses.replace(status, state=State.QUEUED, worker=None, reason=reason)
        return Decision(new, (cleanup,))
    reason = (
        f"executor lost on the last attempt ({status.attempt} of {status.max_attempts}); "
        "the job was not retried again. Resubmit it if the cause was transient"
    )
    new = dataclasses.replace(status, state=State.FAILED, worker=None, reason=reason)
    return Decision(new, (cleanup,))


def _require(status: Status, state: State, action: str) -> None:
    if status.state is not state:
        msg = f"a job that is {status.state.value!r} cannot {action}; it must be {state.value!r}"
        raise InvalidTransition(msg)
