"""What the job store reads and writes: plain frozen records, no database handles."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Row

from mlaas4hep.jobs.states import State, Status


@dataclass(frozen=True)
class RunLabels:
    """What a submission may add to identify a run (all optional; see ``jobs/runs.py``)."""

    name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    parent: str | None = None


@dataclass(frozen=True)
class NewJob:
    """What a submission stores."""

    owner: str
    name: str
    spec: str
    request_hash: str
    idempotency_key: str | None = None
    needs_network: bool = False
    max_attempts: int = 3
    job_id: str | None = None
    run_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    parent: str | None = None


@dataclass(frozen=True)
class JobRecord:
    """A job as read from the store."""

    id: str
    owner: str
    name: str
    state: State
    spec: str
    request_hash: str
    idempotency_key: str | None
    needs_network: bool
    attempt: int
    max_attempts: int
    cancel_requested: bool
    worker: str | None
    lease_until: float | None
    pgid: int | None
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    reason: str | None
    progress: dict[str, Any] | None
    result_dir: str | None
    run_name: str | None = None  # the run labels (docs/ui.md, "Runs")
    tags: dict[str, str] = field(default_factory=dict)
    parent: str | None = None  # the job this run belongs to (e.g. a tuning study's)

    @property
    def title(self) -> str:
        """What lists show: the run name, else the pipeline's name."""
        return self.run_name or self.name

    @property
    def duration(self) -> float | None:
        """Seconds from start to end (to *updated_at* while running); None before start."""
        if self.started_at is None:
            return None
        end = self.finished_at if self.finished_at is not None else self.updated_at
        return max(0.0, end - self.started_at)

    @property
    def status(self) -> Status:
        """The state-machine view of this row."""
        return Status(
            state=self.state,
            attempt=self.attempt,
            max_attempts=self.max_attempts,
            cancel_requested=self.cancel_requested,
            worker=self.worker,
            reason=self.reason,
        )


def record_of(row: Row[Any]) -> JobRecord:
    """The record of one ``jobs`` row."""
    m = row._mapping
    return JobRecord(
        id=m["id"],
        owner=m["owner"],
        name=m["name"],
        state=State(m["state"]),
        spec=m["spec"],
        request_hash=m["request_hash"],
        idempotency_key=m["idempotency_key"],
        needs_network=bool(m["needs_network"]),
        attempt=m["attempt"],
        max_attempts=m["max_attempts"],
        cancel_requested=bool(m["cancel_requested"]),
        worker=m["worker"],
        lease_until=m["lease_until"],
        pgid=m["pgid"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        reason=m["reason"],
        progress=json.loads(m["progress"]) if m["progress"] else None,
        result_dir=m["result_dir"],
        run_name=m["run_name"],
        tags=_tags(m["tags"]),
        parent=m["parent"],
    )


def _tags(raw: str | None) -> dict[str, str]:
    doc = json.loads(raw) if raw else {}
    return {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}
