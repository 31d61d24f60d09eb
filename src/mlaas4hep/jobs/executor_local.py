"""The local executor: a bounded pool of threads, each running one job process at a time.

Each worker thread loops: claim a queued job, run its attempt
(:class:`~mlaas4hep.jobs.attempt.AttemptRunner`, heartbeating the lease and watching for
cancellation), record the outcome. A janitor thread expires lost leases (requeue or fail)
and applies retention. Start-up runs recovery first, so jobs of a crashed predecessor are
requeued before anything new is claimed.

Start-up also probes the sandbox by running a trivial command in it
(:func:`mlaas4hep.jobs.sandbox.probe`). If the host cannot give the sandbox, the executor
claims nothing (jobs stay queued, none fails), logs why and how to fix it, and
``/readyz`` answers 503 with the same reason. Worker thread *n* runs its jobs as slot
*n* (its own uid when the service is root).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable

from mlaas4hep.config import Settings
from mlaas4hep.errors import Mlaas4hepError
from mlaas4hep.jobs.apply_job import register_outputs
from mlaas4hep.jobs.attempt import AttemptOutcome, AttemptRunner
from mlaas4hep.jobs.deploy import publish
from mlaas4hep.jobs.layout import job_paths, owner_dir
from mlaas4hep.jobs.mlflow_export import export_job
from mlaas4hep.jobs.recovery import make_worker_id, purge_old, recover
from mlaas4hep.jobs.sandbox import UNSAFE_WARNING, Sandbox, probe, resolve
from mlaas4hep.jobs.states import Exited
from mlaas4hep.jobs.store import JobRecord, JobStore, LeaseLost
from mlaas4hep.jobs.tune import record_study

log = logging.getLogger(__name__)
_RETENTION_EVERY_S = 3600.0


class LocalExecutor:
    """Runs queued jobs from *store* in up to ``settings.executor.workers`` processes."""

    def __init__(self, store: JobStore, settings: Settings) -> None:
        self.store, self.settings = store, settings
        self.worker_id = make_worker_id()
        self._sandbox = resolve(settings.executor)
        self._probed = False
        self._probe_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def sandbox(self) -> Sandbox:
        """The sandbox jobs run in, probed on first use (``error`` set: no job runs)."""
        with self._probe_lock:
            if not self._probed:
                self._sandbox = probe(self._sandbox)
                self._probed = True
                _log_sandbox(self._sandbox)
            return self._sandbox

    @property
    def sandboxed(self) -> bool:
        """Whether jobs run inside bwrap."""
        return self.sandbox.enabled and self.sandbox.ready

    def start(self) -> None:
        """Probe the sandbox, recover lost jobs, then start the worker and janitor threads."""
        _ = self.sandbox
        self.recover()
        workers = self.settings.executor.workers
        targets: list[Callable[[], None]] = [
            *(functools.partial(self._work, slot) for slot in range(workers)),
            self._janitor,
        ]
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

    def run_once(self, slot: int = 0) -> JobRecord | None:
        """Claim and run one job synchronously in worker slot *slot*; None if the queue was
        empty or the sandbox is unavailable (jobs then stay queued)."""
        if not self.sandbox.ready:
            return None
        job = self.store.claim(self.worker_id, self.settings.executor.lease_s)
        if job is None:
            return None
        return self._run(job, slot)

    # ---- threads -------------------------------------------------------------------------

    def _work(self, slot: int = 0) -> None:
        while not self._stop.is_set():
            try:
                done = self.run_once(slot)
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

    def _run(self, job: JobRecord, slot: int = 0) -> JobRecord:
        paths = job_paths(self.settings.data_dir, job.id)
        runner = AttemptRunner(
            job,
            paths,
            self.settings,
            sandbox=self.sandbox,
            slot=slot,
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

    def _record_study(self, job: JobRecord, outcome: AttemptOutcome) -> AttemptOutcome:
        """Store a succeeded job's hyperparameter search in the database (``jobs/tune.py``)."""
        if not outcome.ok or outcome.result_dir is None or outcome.lease_lost:
            return outcome
        result = job_paths(self.settings.data_dir, job.id).root / outcome.result_dir
        try:
            name = record_study(self.settings.db_url, job, result)
        except (Mlaas4hepError, OSError) as exc:
            reason = f"cannot store the hyperparameter search: {exc}"
            return dataclasses.replace(outcome, ok=False, reason=reason)
        if name is None:
            return outcome
        return dataclasses.replace(outcome, progress={**(outcome.progress or {}), "study": name})

    def _register(self, job: JobRecord, outcome: AttemptOutcome) -> AttemptOutcome:
        """Register an apply job's outputs as datasets before the success is recorded."""
        if not outcome.ok or outcome.result_dir is None or outcome.lease_lost:
            return outcome
        paths = job_paths(self.settings.data_dir, job.id)
        try:
            names = register_outputs(
                self.settings, self.store, job, paths.root / outcome.result_dir
            )
        except (Mlaas4hepError, OSError) as exc:
            reason = f"cannot register the outputs as datasets: {exc}"
            return dataclasses.replace(outcome, ok=False, reason=reason)
        if not names:
            return outcome
        log.info("job %s: registered datasets %s", job.id, names)
        with paths.log(job.attempt).open("a", encoding="utf-8") as fh:
            fh.write(f"[mlaas4hep] registered as your datasets: {', '.join(names)}\n")
        return dataclasses.replace(
            outcome, progress={**(outcome.progress or {}), "datasets": names}
        )

    def _record(self, job: JobRecord, outcome: AttemptOutcome) -> JobRecord:
        if outcome.lease_lost:
            log.warning("job %s attempt %d: lease lost, outcome dropped", job.id, job.attempt)
            return job
        outcome = self._register(job, self._deploy(job, self._record_study(job, outcome)))
        event = Exited(ok=outcome.ok, reason=outcome.reason)
        try:
            done = self.store.finish(
                job.id, self.worker_id, job.attempt, event, outcome.result_dir, outcome.progress
            )
        except LeaseLost as exc:
            log.warning("job %s: %s", job.id, exc)
            return job
        except Mlaas4hepError:
            log.exception("job %s: cannot record the outcome", job.id)
            return job
        self._export(done)
        return done

    def _export(self, job: JobRecord) -> None:
        """Export a succeeded job to MLflow (``tracking.mlflow_uri``) once it is recorded:
        the export cannot fail or hold up the success (``jobs/mlflow_export.py``)."""
        if self.settings.tracking.mlflow_uri is None:
            return
        try:
            export_job(self.settings, job)
        except Exception:  # the job has succeeded; a bug here must not kill the pool thread
            log.exception("job %s: the MLflow export failed", job.id)


def _log_sandbox(sandbox: Sandbox) -> None:
    if sandbox.error is not None:
        log.error("jobs will NOT run (they stay queued): the job sandbox is unavailable: %s",
                  sandbox.error)  # fmt: skip
    elif not sandbox.enabled:
        log.warning(UNSAFE_WARNING)
    else:
        log.info("job sandbox: %s", sandbox.describe())
