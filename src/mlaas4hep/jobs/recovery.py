"""Recovery of lost attempts and retention of old jobs' files.

A running job whose lease ran out (its executor crashed, was killed or partitioned), or
whose executor is known dead (same host, process gone), gets :class:`LeaseExpired`: it is
requeued while attempts remain, else failed with the reason. What the lost attempt left
behind (processes, the ``.partial`` directory) is removed first.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import Row

from mlaas4hep.errors import Conflict
from mlaas4hep.jobs.attempt import sweep
from mlaas4hep.jobs.layout import job_paths, remove_tree
from mlaas4hep.jobs.states import CleanupAttempt, LeaseExpired
from mlaas4hep.jobs.store import JobStore

log = logging.getLogger(__name__)


def make_worker_id() -> str:
    """A worker id ``host:pid:start:nonce``; lets recovery tell a dead local worker."""
    start = int(psutil.Process().create_time() * 1000)
    return f"{socket.gethostname()}:{os.getpid()}:{start}:{uuid.uuid4().hex[:8]}"


def worker_is_dead(worker: str, alive: frozenset[str] = frozenset()) -> bool:
    """True when *worker* is on this host and its process is gone; False when alive or
    unknown (another host, or this very process, which may run several executors: the
    lease decides).
    """
    parts = worker.split(":")
    if len(parts) != 4 or parts[0] != socket.gethostname():
        return False
    if worker in alive:
        return False
    try:
        pid, start = int(parts[1]), int(parts[2])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        return int(psutil.Process(pid).create_time() * 1000) != start
    except psutil.Error:
        return True


def recover(store: JobStore, data_dir: Path, alive: frozenset[str] = frozenset()) -> list[str]:
    """Expire lost attempts (requeue or fail them); returns the ids of the jobs touched."""
    dead = [w for w in store.running_workers() if worker_is_dead(w, alive)]
    touched = []
    for job_id in store.expired(dead_workers=dead):
        seen: dict[str, Any] = {}

        def still_lost(row: Row[Any], seen: dict[str, Any] = seen) -> dict[str, Any]:
            lease = row.lease_until
            if row.worker not in dead and lease is not None and lease >= time.time():
                msg = f"job {row.id!r} heartbeated again"
                raise Conflict(msg)
            seen["pgid"] = row.pgid
            return {"pgid": None, "progress": None}

        try:
            record, decision = store.transition(job_id, LeaseExpired(), extra=still_lost)
        except Conflict:
            continue
        for step in decision.instructions:
            if isinstance(step, CleanupAttempt):
                _cleanup(data_dir, job_id, step, seen.get("pgid"))
        log.warning("job %s: %s", job_id, record.reason)
        touched.append(job_id)
    return touched


def _cleanup(data_dir: Path, job_id: str, step: CleanupAttempt, pgid: int | None) -> None:
    if step.worker and step.worker.split(":")[0] == socket.gethostname():
        sweep(job_id, pgid, step.attempt)
    remove_tree(job_paths(data_dir, job_id).partial(step.attempt))


def purge_old(store: JobStore, data_dir: Path, retention_days: float | None) -> int:
    """Delete jobs that finished more than *retention_days* ago, files first."""
    if retention_days is None:
        return 0
    cutoff = time.time() - retention_days * 86400
    count = 0
    for job in store.finished_before(cutoff):
        remove_tree(job_paths(data_dir, job.id).root)
        try:
            store.delete(job.id, None)
        except Conflict:
            continue
        count += 1
    return count
