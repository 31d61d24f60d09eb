"""The local executor: a bounded pool of threads, each running one job process at a time.

Each worker thread loops: claim a queued job, run its attempt
(:class:`~mlaas4hep.jobs.attempt.AttemptRunner`, heartbeating the lease and watching for
cancellation), record the outcome. A janitor thread expires lost leases (requeue or fail)
and applies retention. Start-up runs recovery first, so jobs of a crashed predecessor are
requeued before anything new is claimed.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from mlaas4hep.config import Settings
from mlaas4hep.errors import Mlaas4hepError
from mlaas4hep.jobs.attempt import AttemptOutcome, AttemptRunner
from mlaas4hep.jobs.deploy import publish
from mlaas4hep.jobs.layout import job_paths, owner_dir
from mlaas4hep.jobs.recovery import make_worker_id, purge_old, recover
from mlaas4hep.jobs.sandbox import find_bwrap
from mlaas4hep.jobs.states import Exited
from mlaas4hep.jobs.store import JobRecord, JobStore, LeaseLost

log = logging.getLogger(__name__)
_RETENTION_EVERY_S = 3600.0


class LocalExecutor:
    """Runs queued jobs from *store* in up to ``settings.executor.workers`` processes."""

    def __init__(self, store: JobStore, settings: Settings) -> None:
        self.store, self.settings = store, settings
        self.worker_id = make_worker_id()
        self.bwrap = find_bwrap(settings.executor.sandbox)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def sandboxed(self) -> bool:
        """Whether jobs run inside bwrap."""
        return self.bwrap is not None

    def start(self) -> None:
        """Recover lost jobs, then start the worker and janitor threads."""
        self.recover()
        workers = self.settings.executor.workers
        targets: list[Callable[[], None]] = [self._work] * workers + [self._janitor]
        for i, target in enumerate(targets):
            name = f"mlaas4hep-executor-{i}" if i < workers else "mlaas4hep-janitor"
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming and stop running jobs; their leases expire and they are requeued
        by whichever executor runs recovery next (this one at its next start)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._threads.clear()

    @property
    def alive(self) -> bool:
        """True while every thread runs (for readiness)."""
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def recover(self) -> list[str]:
        """Expire lost attempts now (see :func:`mlaas4hep.jobs.recovery.recover`)."""
        return recover(self.store, self.settings.data_dir, frozenset({self.worker_id}))

    def run_once(self) -> JobRecord | None:
        """Claim and run one job synchronously; None if the queue was empty (for tests)."""
        job = self.store.claim(self.worker_id, self.settings.executor.lease_s)
        if job is None:
            return None
        return self._run(job)

    # ---- threads -------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                done = self.run_once()
            except Exception:  # a database hiccup must not kill the pool thread
                log.exception("executor %s: claim/run failed; retrying", self.worker_id)
                done = None
            if done is None:
                self._stop.wait(self.settings.executor.poll_s)

    def _janitor(self) -> None:
        next_purge = 0.0
        interval = max(0.2, min(self.settings.executor.lease_s / 2, 30.0))
        while not self._stop.wait(interval):
            try:
                self.recover()
                if time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + _RETENTION_EVERY_S
                    purge_old(self.store, self.settings.data_dir, self._retention_days)
            except Exception:
                log.exception("executor %s: recovery failed; retrying", self.worker_id)

    @property
    def _retention_days(self) -> float | None:
        return self.settings.executor.retention_days

    # ---- one job -------------------------------------------------------------------------

    def _run(self, job: JobRecord) -> JobRecord:
        paths = job_paths(self.settings.data_dir, job.id)
        runner = AttemptRunner(
            job,
            paths,
            self.settings,
            bwrap=self.bwrap,
            readable=(owner_dir(self.settings.data_dir, job.owner),),
            heartbeat=lambda progress, pgid: self._heartbeat(job, progress, pgid),
        )
        outcome = runner.run()
        return self._record(job, outcome)

    def _heartbeat(
        self, job: JobRecord, progress: dict[str, object] | None, pgid: int | None
    ) -> bool:
        if self._stop.is_set():
            # Shutting down: stop the process now; the job is requeued by recovery.
            raise LeaseLost("executor stopping")
        return self.store.heartbeat(
            job.id,
            self.worker_id,
            job.attempt,
            self.settings.executor.lease_s,
            progress=progress,
            pgid=pgid,
        )

    def _deploy(self, job: JobRecord, outcome: AttemptOutcome) -> AttemptOutcome:
        """Publish the model of a succeeded job before the success is recorded."""
        if not outcome.ok or outcome.result_dir is None or outcome.lease_lost:
            return outcome
        try:
            result = job_paths(self.settings.data_dir, job.id).root / outcome.result_dir
            published = publish(self.settings, job, result)
        except (Mlaas4hepError, OSError) as exc:
            return dataclasses.replace(outcome, ok=False, reason=f"cannot deploy the model: {exc}")
        if published is None:
            return outcome
        name, version = published
        log.info("job %s: published model %s version %d", job.id, name, version)
        progress = {**(outcome.progress or {}), "deployed": {"model": name, "version": version}}
        return dataclasses.replace(outcome, progress=progress)

    def _record(self, job: JobRecord, outcome: AttemptOutcome) -> JobRecord:
        if outcome.lease_lost:
            log.warning("job %s attempt %d: lease lost, outcome dropped", job.id, job.attempt)
            return job
        outcome = self._deploy(job, outcome)
        event = Exited(ok=outcome.ok, reason=outcome.reason)
        try:
            return self.store.finish(
                job.id, self.worker_id, job.attempt, event, outcome.result_dir, outcome.progress
            )
        except LeaseLost as exc:
            log.warning("job %s: %s", job.id, exc)
            return job
        except Mlaas4hepError:
            log.exception("job %s: cannot record the outcome", job.id)
            return job
