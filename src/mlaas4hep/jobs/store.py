"""The persistent job store: transactional transitions, claims, leases and heartbeats.

Every transition reads the row, asks :func:`mlaas4hep.jobs.states.decide` for the new
status, and writes it with ``UPDATE ... WHERE version = <read version>``; a concurrent
writer makes the update match nothing and the transition is retried on fresh data.

Claiming is the hot, contended path:

* PostgreSQL: ``SELECT id ... WHERE state = 'queued' ORDER BY created_at LIMIT 1
  FOR UPDATE SKIP LOCKED`` and an update in the same transaction, so several executors
  never wait on, nor take, the same row;
* SQLite (one writer at a time anyway): a single ``UPDATE ... WHERE id = (SELECT ...)
  AND state = 'queued' RETURNING``.

Work done by a worker (heartbeat, finish) is fenced by ``(worker, attempt)``: a worker
whose lease expired and whose job was requeued cannot overwrite the new attempt.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, cast

from sqlalchemy import Row, Table, and_, or_, select, text, update
from sqlalchemy.exc import IntegrityError

from mlaas4hep.errors import Conflict, NotFound
from mlaas4hep.jobs.models import JobRow, make_engine
from mlaas4hep.jobs.records import JobRecord, NewJob, record_of
from mlaas4hep.jobs.states import (
    CancelRequested,
    Claim,
    Decision,
    Event,
    Exited,
    State,
    Status,
    decide,
)

Clock = Callable[[], float]
JOBS = cast(Table, JobRow.__table__)
_CAS_RETRIES = 20


class LeaseLost(Conflict):
    """A worker reported on an attempt it no longer owns (its lease expired)."""


class JobStore:
    """Jobs in a SQL database (SQLite file or PostgreSQL server)."""

    def __init__(self, url: str, *, clock: Clock = time.time) -> None:
        self.engine = make_engine(url)
        self._clock = clock
        self._pg = self.engine.dialect.name == "postgresql"

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    def ping(self) -> None:
        """Run a trivial query; raises if the database cannot be reached."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    # ---- submission and reads ------------------------------------------------------------

    def create(self, new: NewJob) -> tuple[JobRecord, bool]:
        """Store a queued job; returns ``(job, created)``.

        With an idempotency key already used by this owner, returns the earlier job and
        ``created=False`` if the request is the same.

        Raises:
            IdempotencyKeyReused: the key was used for a different request.
        """
        if new.idempotency_key is not None:
            earlier = self.replay(new)
            if earlier is not None:
                return earlier, False
        now = self._clock()
        values = {
            "id": new.job_id or uuid.uuid4().hex,
            "owner": new.owner,
            "name": new.name,
            "state": State.QUEUED.value,
            "version": 1,
            "spec": new.spec,
            "request_hash": new.request_hash,
            "idempotency_key": new.idempotency_key,
            "needs_network": new.needs_network,
            "max_attempts": new.max_attempts,
            "attempt": 0,
            "cancel_requested": False,
            "created_at": now,
            "updated_at": now,
            "run_name": new.run_name,
            "tags": json.dumps(new.tags, sort_keys=True) if new.tags else None,
            "parent": new.parent,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(JOBS.insert().values(**values))
        except IntegrityError:
            # Two requests with the same key raced; the other one won.
            earlier = self._by_key(new.owner, new.idempotency_key or "")
            if earlier is None:
                raise
            return _replay(earlier, new), False
        return self.get(str(values["id"])), True

    def replay(self, new: NewJob) -> JobRecord | None:
        """The job an earlier request with the same idempotency key created, if any.

        Raises:
            IdempotencyKeyReused: the key was used for a different request.
        """
        if new.idempotency_key is None:
            return None
        earlier = self._by_key(new.owner, new.idempotency_key)
        return None if earlier is None else _replay(earlier, new)

    def get(self, job_id: str, owner: str | None = None) -> JobRecord:
        """The job *job_id*; with *owner*, only if it is theirs.

        Raises:
            NotFound: no such job, or it belongs to someone else (indistinguishable, so
                other users' job ids are not revealed).
        """
        with self.engine.connect() as conn:
            row = conn.execute(select(JOBS).where(JobRow.id == job_id)).first()
        if row is None or (owner is not None and row.owner != owner):
            msg = f"no job {job_id!r} among yours; `mlaas4hep jobs` lists them"
            raise NotFound(msg)
        return record_of(row)

    def list_jobs(
        self,
        owner: str | None,
        *,
        states: Sequence[State] = (),
        limit: int = 50,
        before: tuple[float, str] | None = None,
    ) -> list[JobRecord]:
        """Jobs, newest first; *owner* None lists everyone's (admins).

        *before* is the ``(created_at, id)`` of the last job of the previous page.
        """
        table = JOBS
        query = select(table).order_by(JobRow.created_at.desc(), JobRow.id.desc()).limit(limit)
        if owner is not None:
            query = query.where(JobRow.owner == owner)
        if states:
            query = query.where(JobRow.state.in_([s.value for s in states]))
        if before is not None:
            created, last_id = before
            query = query.where(
                or_(
                    JobRow.created_at < created,
                    and_(JobRow.created_at == created, JobRow.id < last_id),
                )
            )
        with self.engine.connect() as conn:
            return [record_of(r) for r in conn.execute(query)]

    # ---- executor side -------------------------------------------------------------------

    def claim(self, worker: str, lease_s: float) -> JobRecord | None:
        """Take the oldest queued job for *worker*, or None if the queue is empty."""
        now = self._clock()
        table = JOBS
        claimed = decide(Status(State.QUEUED), Claim(worker)).status
        values = {
            "state": claimed.state.value,
            "worker": worker,
            "attempt": JobRow.attempt + 1,
            "lease_until": now + lease_s,
            "started_at": now,
            "updated_at": now,
            "version": JobRow.version + 1,
            "pgid": None,
            "progress": None,
        }
        oldest = (
            select(JobRow.id)
            .where(JobRow.state == State.QUEUED.value)
            .order_by(JobRow.created_at, JobRow.id)
            .limit(1)
        )
        with self.engine.begin() as conn:
            if self._pg:
                job_id = conn.execute(oldest.with_for_update(skip_locked=True)).scalar()
                if job_id is None:
                    return None
                target = JobRow.id == job_id
            else:
                target = JobRow.id == oldest.scalar_subquery()
            stmt = (
                update(table)
                .where(target, JobRow.state == State.QUEUED.value)
                .values(**values)
                .returning(*table.c)
            )
            row = conn.execute(stmt).first()
        return None if row is None else record_of(row)

    def heartbeat(
        self,
        job_id: str,
        worker: str,
        attempt: int,
        lease_s: float,
        *,
        progress: dict[str, Any] | None = None,
        pgid: int | None = None,
    ) -> bool:
        """Extend the lease of a running attempt; returns whether cancel was requested.

        Raises:
            LeaseLost: the attempt is no longer this worker's (requeued, cancelled, deleted).
        """
        now = self._clock()
        values: dict[str, Any] = {"lease_until": now + lease_s, "updated_at": now}
        if progress is not None:
            values["progress"] = json.dumps(progress)
        if pgid is not None:
            values["pgid"] = pgid
        stmt = (
            update(JOBS)
            .where(*self._fence(job_id, worker, attempt))
            .values(**values)
            .returning(JobRow.cancel_requested)
        )
        with self.engine.begin() as conn:
            cancel = conn.execute(stmt).scalar()
        if cancel is None:
            msg = f"job {job_id!r} attempt {attempt} is no longer run by {worker!r}"
            raise LeaseLost(msg)
        return bool(cancel)

    def finish(
        self,
        job_id: str,
        worker: str,
        attempt: int,
        event: Exited,
        result_dir: str | None,
        progress: dict[str, Any] | None = None,
    ) -> JobRecord:
        """Record the end of an attempt (succeeded, failed or cancelled).

        Raises:
            LeaseLost: the attempt is no longer this worker's; its outcome is discarded.
        """

        def fenced(row: Row[Any]) -> dict[str, Any]:
            if row.worker != worker or row.attempt != attempt:
                msg = f"job {job_id!r} attempt {attempt} is no longer run by {worker!r}"
                raise LeaseLost(msg)
            values: dict[str, Any] = {"result_dir": result_dir if event.ok else None}
            if progress is not None:
                values["progress"] = json.dumps(progress)
            return values

        try:
            record, _ = self.transition(job_id, event, extra=fenced)
        except Conflict as exc:
            if isinstance(exc, LeaseLost):
                raise
            msg = f"job {job_id!r} attempt {attempt} ended after it was taken away: {exc}"
            raise LeaseLost(msg) from exc
        return record

    def expired(self, now: float | None = None, dead_workers: Sequence[str] = ()) -> list[str]:
        """Ids of running jobs whose lease ran out or whose worker is known to be dead."""
        now = self._clock() if now is None else now
        cond = JobRow.lease_until < now
        if dead_workers:
            cond = or_(cond, JobRow.worker.in_(list(dead_workers)))
        query = select(JobRow.id).where(JobRow.state == State.RUNNING.value, cond)
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def running_workers(self) -> list[str]:
        """Distinct workers currently holding running jobs."""
        query = select(JobRow.worker).where(JobRow.state == State.RUNNING.value).distinct()
        with self.engine.connect() as conn:
            return [w for w in conn.execute(query).scalars() if w]

    # ---- user actions --------------------------------------------------------------------

    def request_cancel(self, job_id: str, owner: str | None) -> tuple[JobRecord, Decision]:
        """Cancel a queued job now, or flag a running one for its executor to stop.

        Raises:
            NotFound: see :meth:`get`.
            InvalidTransition: the job already succeeded or failed.
        """
        return self.transition(job_id, CancelRequested(), owner=owner)

    def delete(self, job_id: str, owner: str | None) -> JobRecord:
        """Delete a finished job's row; the caller removes its files.

        Raises:
            NotFound: see :meth:`get`.
            Conflict: the job is still queued or running (cancel it first).
        """
        job = self.get(job_id, owner)
        if not job.state.terminal:
            msg = f"job {job_id!r} is {job.state.value}; cancel it first, then delete it"
            raise Conflict(msg)
        with self.engine.begin() as conn:
            conn.execute(
                JOBS.delete().where(
                    JobRow.id == job_id, JobRow.state.in_([s.value for s in _TERMINAL])
                )
            )
        return job

    def finished_before(self, cutoff: float, limit: int = 500) -> list[JobRecord]:
        """Terminal jobs that finished before *cutoff* (for retention)."""
        query = (
            select(JOBS)
            .where(JobRow.state.in_([s.value for s in _TERMINAL]), JobRow.finished_at < cutoff)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [record_of(r) for r in conn.execute(query)]

    # ---- the one transition primitive ----------------------------------------------------

    def transition(
        self,
        job_id: str,
        event: Event,
        *,
        owner: str | None = None,
        extra: Callable[[Row[Any]], dict[str, Any]] | None = None,
    ) -> tuple[JobRecord, Decision]:
        """Apply *event* to a job atomically (compare-and-set on its version).

        *extra* may add column values, or raise to veto, after seeing the current row.
        """
        table = JOBS
        for _ in range(_CAS_RETRIES):
            with self.engine.begin() as conn:
                query = select(table).where(JobRow.id == job_id)
                row = conn.execute(query.with_for_update() if self._pg else query).first()
                if row is None or (owner is not None and row.owner != owner):
                    msg = f"no job {job_id!r} among yours; `mlaas4hep jobs` lists them"
                    raise NotFound(msg)
                decision = decide(record_of(row).status, event)
                values = self._values(decision, row)
                if extra is not None:
                    values.update(extra(row))
                stmt = (
                    update(table)
                    .where(JobRow.id == job_id, JobRow.version == row.version)
                    .values(**values)
                    .returning(*table.c)
                )
                new = conn.execute(stmt).first()
            if new is not None:
                return record_of(new), decision
        msg = f"job {job_id!r} changed concurrently {_CAS_RETRIES} times; try again"
        raise Conflict(msg)

    def _values(self, decision: Decision, row: Row[Any]) -> dict[str, Any]:
        status, now = decision.status, self._clock()
        values: dict[str, Any] = {
            "state": status.state.value,
            "attempt": status.attempt,
            "cancel_requested": status.cancel_requested,
            "worker": status.worker,
            "reason": status.reason,
            "updated_at": now,
            "version": row.version + 1,
        }
        if status.state.terminal and row.finished_at is None:
            values["finished_at"] = now
        if status.state is not State.RUNNING:
            values["lease_until"] = None
        return values

    def _fence(self, job_id: str, worker: str, attempt: int) -> list[Any]:
        return [
            JobRow.id == job_id,
            JobRow.state == State.RUNNING.value,
            JobRow.worker == worker,
            JobRow.attempt == attempt,
        ]

    def _by_key(self, owner: str, key: str) -> JobRecord | None:
        query = select(JOBS).where(JobRow.owner == owner, JobRow.idempotency_key == key)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else record_of(row)


_TERMINAL = (State.SUCCEEDED, State.FAILED, State.CANCELLED)


class IdempotencyKeyReused(Conflict):
    """An ``Idempotency-Key`` was sent again with a different request (HTTP 422)."""


def _replay(earlier: JobRecord, new: NewJob) -> JobRecord:
    if earlier.request_hash != new.request_hash:
        msg = (
            f"the Idempotency-Key {new.idempotency_key!r} was already used for job "
            f"{earlier.id!r} with a different request; use a new key for a new job"
        )
        raise IdempotencyKeyReused(msg)
    return earlier


__all__ = ["IdempotencyKeyReused", "JobRecord", "JobStore", "LeaseLost", "NewJob"]
