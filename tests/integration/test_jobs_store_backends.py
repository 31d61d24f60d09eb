"""The job store against SQLite and a real PostgreSQL server: claims are exactly-once
under contention (SKIP LOCKED on PostgreSQL), transitions are atomic."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg import postgres_server

from mlaas4hep.jobs.states import (
    CancelRequested,
    Exited,
    InvalidTransition,
    LeaseExpired,
    State,
)
from mlaas4hep.jobs.store import JobStore, LeaseLost, NewJob


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    url: str = request.getfixturevalue("pg_url")
    store = JobStore(url)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM jobs")
        conn.exec_driver_sql("DELETE FROM datasets")
    store.close()
    return url


def new(i: int = 0) -> NewJob:
    return NewJob(owner="alice", name=f"j{i}", spec="{}", request_hash=str(i))


def test_threads_claim_each_job_exactly_once(db_url: str) -> None:
    store = JobStore(db_url)
    ids = {store.create(new(i))[0].id for i in range(40)}
    claimed: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (job := store.claim(name, 30)) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()
    assert len(claimed) == len(ids)
    assert set(claimed) == ids


def test_processes_claim_each_job_exactly_once(db_url: str, tmp_path: Path) -> None:
    store = JobStore(db_url)
    ids = {store.create(new(i))[0].id for i in range(30)}
    store.close()
    script = textwrap.dedent(
        f"""
        import sys
        from mlaas4hep.jobs.store import JobStore
        store = JobStore({db_url!r})
        while (job := store.claim(sys.argv[1], 30)) is not None:
            print(job.id, flush=True)
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, f"p{i}"], stdout=subprocess.PIPE, text=True)
        for i in range(3)
    ]
    claimed = [line.strip() for p in procs for line in p.communicate(timeout=60)[0].splitlines()]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(claimed) == sorted(ids)


def _race_finish_and_cancel(store: JobStore, job_id: str) -> list[Exception]:
    barrier = threading.Barrier(2)
    errors: list[Exception] = []

    def finish() -> None:
        barrier.wait()
        try:
            store.finish(job_id, "w", 1, Exited(ok=True), "attempt-1")
        except LeaseLost as exc:
            errors.append(exc)

    def cancel() -> None:
        barrier.wait()
        try:
            store.transition(job_id, CancelRequested())
        except InvalidTransition as exc:
            errors.append(exc)

    threads = [threading.Thread(target=finish), threading.Thread(target=cancel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_racing_cancel_and_finish_apply_exactly_one_outcome(db_url: str) -> None:
    store = JobStore(db_url)
    for i in range(10):
        store.create(new(i))
    while (job := store.claim("w", 30)) is not None:
        errors = _race_finish_and_cancel(store, job.id)
        final = store.get(job.id)
        # Either the finish came first (succeeded; the cancel is refused as a conflict) or
        # the cancel did (cancel_requested; the finish then records cancelled).
        if final.state is State.SUCCEEDED:
            assert len(errors) == 1
            assert isinstance(errors[0], InvalidTransition)
        else:
            assert final.state is State.CANCELLED
            assert errors == []
    store.close()


def test_lease_expiry_requeues_then_fails(db_url: str) -> None:
    store = JobStore(db_url)
    job, _ = store.create(NewJob("alice", "j", "{}", "h", max_attempts=2))
    for attempt in (1, 2):
        claimed = store.claim(f"w{attempt}", 30)
        assert claimed is not None
        assert claimed.attempt == attempt
        record, _ = store.transition(job.id, LeaseExpired())
    assert record.state is State.FAILED
    assert "last attempt (2 of 2)" in (record.reason or "")
    store.close()
