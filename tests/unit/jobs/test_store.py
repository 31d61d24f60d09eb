"""The job store on SQLite: transitions, claims, fencing, idempotency, pagination."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from mlaas4hep.errors import Conflict, NotFound
from mlaas4hep.jobs.states import Exited, InvalidTransition, LeaseExpired, State
from mlaas4hep.jobs.store import IdempotencyKeyReused, JobStore, LeaseLost, NewJob


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 0.001  # strictly increasing, so creation order is the claim order
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> JobStore:
    s = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}", clock=clock)
    yield s
    s.close()


def new(owner: str = "alice", key: str | None = None, digest: str = "h1") -> NewJob:
    return NewJob(owner=owner, name="j", spec="{}", request_hash=digest, idempotency_key=key)


def test_create_then_get_only_for_its_owner(store: JobStore) -> None:
    job, created = store.create(new())
    assert created
    assert job.state is State.QUEUED
    assert store.get(job.id, "alice") == job
    with pytest.raises(NotFound, match="among yours"):
        store.get(job.id, "bob")
    assert store.get(job.id, None).id == job.id  # admins


def test_idempotency_key_replays_and_refuses_a_different_body(store: JobStore) -> None:
    first, created = store.create(new(key="k1"))
    again, created_again = store.create(new(key="k1"))
    assert created
    assert not created_again
    assert again.id == first.id
    with pytest.raises(IdempotencyKeyReused, match="'k1'"):
        store.create(new(key="k1", digest="other"))
    other_user, created_other = store.create(new(owner="bob", key="k1", digest="other"))
    assert created_other
    assert other_user.id != first.id


def test_claim_takes_the_oldest_and_never_twice(store: JobStore) -> None:
    a, _ = store.create(new())
    b, _ = store.create(new())
    first = store.claim("w1", 30)
    second = store.claim("w2", 30)
    assert first is not None
    assert second is not None
    assert (first.id, second.id) == (a.id, b.id)
    assert first.state is State.RUNNING
    assert first.attempt == 1
    assert store.claim("w3", 30) is None


def test_concurrent_claims_hand_out_each_job_once(store: JobStore) -> None:
    ids = {store.create(new())[0].id for _ in range(30)}
    got: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (job := store.claim(name, 30)) is not None:
            with lock:
                got.append(job.id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(ids)


def test_heartbeat_and_finish_are_fenced_by_worker_and_attempt(store: JobStore) -> None:
    store.create(new())
    job = store.claim("w1", 30)
    assert job is not None
    assert store.heartbeat(job.id, "w1", 1, 30, progress={"epoch": 1}, pgid=123) is False
    assert store.get(job.id).progress == {"epoch": 1}
    with pytest.raises(LeaseLost):
        store.heartbeat(job.id, "w2", 1, 30)
    store.transition(job.id, LeaseExpired())  # the janitor decided w1 is gone
    with pytest.raises(LeaseLost):
        store.heartbeat(job.id, "w1", 1, 30)
    with pytest.raises(LeaseLost):
        store.finish(job.id, "w1", 1, Exited(ok=True), "attempt-1")
    again = store.claim("w2", 30)
    assert again is not None
    assert again.attempt == 2
    done = store.finish(job.id, "w2", 2, Exited(ok=True), "attempt-2")
    assert done.state is State.SUCCEEDED
    assert done.result_dir == "attempt-2"
    assert done.finished_at is not None


def test_cancel_queued_now_and_running_through_the_heartbeat(store: JobStore) -> None:
    running, _ = store.create(new())
    queued, _ = store.create(new())
    claimed = store.claim("w1", 30)  # the older one
    assert claimed is not None
    assert claimed.id == running.id
    rec, _ = store.request_cancel(queued.id, "alice")
    assert rec.state is State.CANCELLED
    with pytest.raises(NotFound):
        store.request_cancel(running.id, "bob")
    store.request_cancel(running.id, None)
    assert store.heartbeat(running.id, "w1", 1, 30) is True
    final = store.finish(running.id, "w1", 1, Exited(ok=False, reason="stopped"), None)
    assert final.state is State.CANCELLED


def test_expired_lists_lapsed_leases_and_dead_workers(store: JobStore, clock: Clock) -> None:
    store.create(new())
    store.create(new())
    a = store.claim("w1", 10)
    b = store.claim("w2", 1000)
    assert a is not None
    assert b is not None
    assert store.expired(now=clock.now) == []
    assert store.expired(now=clock.now + 11) == [a.id]
    assert sorted(store.expired(now=clock.now, dead_workers=["w2"])) == [b.id]


def test_delete_refuses_active_jobs(store: JobStore) -> None:
    job, _ = store.create(new())
    with pytest.raises(Conflict, match="cancel it first"):
        store.delete(job.id, "alice")
    store.request_cancel(job.id, "alice")
    store.delete(job.id, "alice")
    with pytest.raises(NotFound):
        store.get(job.id)


def test_finished_job_cannot_be_cancelled(store: JobStore) -> None:
    store.create(new())
    job = store.claim("w", 30)
    assert job is not None
    store.finish(job.id, "w", 1, Exited(ok=True), "attempt-1")
    with pytest.raises(InvalidTransition, match="'succeeded'"):
        store.request_cancel(job.id, "alice")


def test_list_pages_newest_first_and_filters_by_state(store: JobStore) -> None:
    ids = [store.create(new())[0].id for _ in range(5)]
    store.create(new(owner="bob"))
    page1 = store.list_jobs("alice", limit=2)
    assert [j.id for j in page1] == ids[::-1][:2]
    last = page1[-1]
    page2 = store.list_jobs("alice", limit=2, before=(last.created_at, last.id))
    assert [j.id for j in page2] == ids[::-1][2:4]
    store.request_cancel(ids[0], "alice")
    assert [j.id for j in store.list_jobs("alice", states=[State.CANCELLED])] == [ids[0]]
    assert len(store.list_jobs(None, limit=100)) == 6
