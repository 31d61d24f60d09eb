"""The Dask executor: the local executor's claims and records, attempts on a Dask cluster.

``executor: {kind: dask, address: tcp://scheduler:8786}``. Claiming, leases, recovery,
retention and recording outcomes are the local executor's (this class extends it); only
*where an attempt runs* changes:

```
 service (DaskExecutor)                       Dask worker (any)
   claim job ── submit run_attempt_on_worker ──► AttemptRunner: `mlaas4hep run SPEC
   heartbeat lease ◄── progress events ──────────   --dask-scheduler ADDR` (limits,
   cancel ──► distributed.Event ───────────────►   sandbox), which streams its
   finish(outcome) ◄── future result ────────────   partitions through the cluster
```

* Progress goes from the worker as ``log_event`` messages on one topic; the executor keeps
  the latest per attempt and writes it to the store with each heartbeat (which also
  renews the lease and picks up cancel requests).
* Logs are written by the attempt itself into ``<data_dir>/jobs/<id>/logs``: the workers
  and the service share ``data_dir`` (one host, or a shared volume).
* Cancel sets the attempt's ``distributed.Event``; the worker stops the job process within
  one heartbeat (SIGTERM, grace, SIGKILL) and returns; then the future is cancelled.
* A worker that dies takes the attempt with it; the scheduler reruns the task elsewhere
  (up to ``distributed.scheduler.allowed-failures``). The rerun notes it in the job log and
  the job's progress carries ``restarts``; past the budget the job fails with the reason.
* Training runs inside the attempt, on its worker: a ``train.device: cuda`` job asks for
  ``resources={"GPU": 1}`` (start GPU workers with ``--resources GPU=1``).
* An apply job runs the same way: ``mlaas4hep apply --dask-scheduler ADDR``, whose
  partitions (file, entry range) are scored on the cluster (``mlaas4hep.apply.distributed``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from distributed import Event, Future, KilledWorker, get_client, get_worker, secede

from mlaas4hep.config import MLAAS4HEP_ARGV, Settings
from mlaas4hep.jobs.attempt import AttemptOutcome, AttemptRunner
from mlaas4hep.jobs.dask_map import ClusterClient, connect
from mlaas4hep.jobs.executor_local import LocalExecutor
from mlaas4hep.jobs.layout import job_paths, owner_dir, remove_tree
from mlaas4hep.jobs.sandbox import Sandbox, probe, resolve
from mlaas4hep.jobs.store import JobRecord, JobStore, LeaseLost

log = logging.getLogger(__name__)
TOPIC = "mlaas4hep-attempts"
_CANCEL_WAIT_EXTRA_S = 30.0


def attempt_key(job: JobRecord) -> str:
    """The Dask key of *job*'s current attempt (one task per attempt)."""
    return f"mlaas4hep-attempt-{job.id}-{job.attempt}"


def resources_for(spec: dict[str, Any]) -> dict[str, float] | None:
    """Worker resources an attempt needs: one GPU for ``train.device: cuda``."""
    train = spec.get("train")
    if isinstance(train, dict) and train.get("device") == "cuda":
        return {"GPU": 1}
    return None


def lost_reason(exc: BaseException) -> str:
    """The job's reason when its attempt's task could not be completed by the cluster."""
    if isinstance(exc, KilledWorker):
        return (
            "the Dask workers running this job died too often; the scheduler gave up "
            "(distributed.scheduler.allowed-failures). Check the workers' memory and logs: "
            f"{exc}"
        )
    return f"the job's task failed on the Dask worker: {type(exc).__name__}: {exc}"


class AttemptChannel:
    """The latest progress and the workers seen per attempt, from the workers' events."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._progress: dict[str, dict[str, Any]] = {}
        self._workers: dict[str, list[str]] = {}

    def handle(self, event: Any) -> None:
        """A ``subscribe_topic`` handler: ``event`` is ``(timestamp, message)``."""
        _, msg = event
        if not isinstance(msg, dict) or not isinstance(msg.get("key"), str):
            return
        key = msg["key"]
        with self._lock:
            # (the scheduler adds "worker" to every worker's event; "started" is ours)
            if "started" in msg:
                self._workers.setdefault(key, []).append(str(msg["started"]))
            if isinstance(msg.get("progress"), dict):
                self._progress[key] = msg["progress"]

    def progress(self, key: str, base: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The latest progress of attempt *key* (over *base*), with ``worker``/``restarts``."""
        with self._lock:
            progress = dict(base if base is not None else self._progress.get(key) or {})
            workers = list(self._workers.get(key, ()))
        if workers:
            progress["worker"] = workers[-1]
            if len(workers) > 1:
                progress["restarts"] = len(workers) - 1
        return progress or None

    def forget(self, key: str) -> None:
        with self._lock:
            self._progress.pop(key, None)
            self._workers.pop(key, None)


class CancelFlag:
    """An attempt's cancel request, a ``distributed.Event`` shared with its worker."""

    def __init__(self, key: str, client: Any) -> None:
        make: Callable[..., Any] = Event
        self._event = make(f"{key}-cancel", client=client)

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return bool(self._event.is_set())

    def clear(self) -> None:
        """Forget the flag on the scheduler (after the attempt)."""
        self._event.clear()


class DaskExecutor(LocalExecutor):
    """Runs claimed jobs on the Dask cluster at ``settings.executor.address``."""

    def __init__(self, store: JobStore, settings: Settings) -> None:
        super().__init__(store, settings)
        self.address = str(settings.executor.address)
        self.channel = AttemptChannel()
        self._client: ClusterClient | None = None

    @property
    def client(self) -> ClusterClient:
        """The scheduler client (connected on first use; raises ClusterError if down)."""
        if self._client is None:
            client = connect(self.address)
            client.subscribe_topic(TOPIC, self.channel.handle)
            self._client = client
        return self._client

    def start(self) -> None:
        """Connect to the scheduler (fail fast), then start like the local executor."""
        _ = self.client
        super().start()

    @property
    def alive(self) -> bool:
        """True while the threads run and the client is connected (for readiness)."""
        return super().alive and self._client is not None and self._client.status == "running"

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the threads (running attempts are cancelled and requeued), then disconnect."""
        super().stop(timeout)
        if self._client is not None:
            self._client.close()
            self._client = None

    # ---- one job -------------------------------------------------------------------------

    @property
    def sandbox(self) -> Sandbox:
        """Jobs run on the workers; each task probes its worker's sandbox itself."""
        return Sandbox(
            enabled=self.settings.executor.sandbox != "none",
            where="bwrap, probed by each task on its Dask worker",
        )

    def _run(self, job: JobRecord, slot: int = 0) -> JobRecord:
        key = attempt_key(job)
        resources = resources_for(json.loads(job.spec))
        future = self.client.submit(
            run_attempt_on_worker, job, self.settings,
            key=key, pure=False, resources=resources,
        )  # fmt: skip
        cancel = CancelFlag(key, self.client)
        try:
            outcome = self._follow(job, future, cancel)
        finally:
            # A task still running keeps its flag set, so that it stops its job process.
            if future.status in ("finished", "error"):
                cancel.clear()
            self.client.cancel([future])
        if not outcome.ok and not outcome.lease_lost:
            # A worker that died left its partial directory behind; nothing else will.
            remove_tree(job_paths(self.settings.data_dir, job.id).partial(job.attempt))
        if not outcome.lease_lost:
            outcome = dataclasses.replace(
                outcome, progress=self.channel.progress(key, outcome.progress)
            )
        self.channel.forget(key)
        return self._record(job, outcome)

    def _follow(
        self, job: JobRecord, future: Future[AttemptOutcome], cancel: CancelFlag
    ) -> AttemptOutcome:
        key = attempt_key(job)
        cancelled_at: float | None = None
        grace = self.settings.executor.cancel_grace_s + _CANCEL_WAIT_EXTRA_S
        while not _wait(future, self.settings.executor.heartbeat_s):
            try:
                if self._heartbeat(job, self.channel.progress(key), None) and not cancelled_at:
                    cancel.set()
                    cancelled_at = time.monotonic()
            except LeaseLost:
                cancel.set()
                return AttemptOutcome(False, "lease lost", lease_lost=True)
            if cancelled_at is not None and time.monotonic() - cancelled_at > grace:
                return AttemptOutcome(False, "cancelled by the user")
        return _result(future)


def _wait(future: Future[AttemptOutcome], timeout: float) -> bool:
    """Wait up to *timeout* for *future*; True when it is over (done, failed, cancelled)."""
    if future.status in ("cancelled", "lost"):
        return True
    try:
        future.result(timeout=timeout)
    except TimeoutError:
        return False
    except Exception:  # the task's own error (or a cancel): over; _result reads the status
        return True
    return True


def _result(future: Future[AttemptOutcome]) -> AttemptOutcome:
    status = future.status
    if status == "finished":
        return future.result()
    if status == "error":
        get_exception: Callable[[], Any] = future.exception
        exc = cast(BaseException, get_exception())
        log.warning("attempt %s failed on the cluster: %s", future.key, exc)
        return AttemptOutcome(False, lost_reason(exc))
    # cancelled or lost with the scheduler: leave the job to lease expiry (requeue)
    log.warning("attempt %s ended as %r on the cluster; the lease will expire", future.key, status)
    return AttemptOutcome(False, f"Dask task {status}", lease_lost=True)


# ---- on the worker -----------------------------------------------------------------------


def run_attempt_on_worker(job: JobRecord, settings: Settings) -> AttemptOutcome:
    """The task: run the attempt like the local executor does, on this worker.

    Leaves the worker's thread pool while the job process runs (the job's own partitions
    may then run on this worker too), sends progress as events, watches the cancel flag.
    The job process reaches the scheduler at the address this worker uses, which may
    differ from the service's (a proxy, another network).
    """
    worker = get_worker()
    address = str(worker.scheduler.address)
    leave_pool: Callable[[], None] = secede
    leave_pool()
    key = attempt_key(job)
    paths = job_paths(settings.data_dir, job.id)
    if paths.partial(job.attempt).exists():
        _note(paths.log(job.attempt), f"restarted on {worker.address} after a worker was lost")
    worker.log_event(TOPIC, {"key": key, "started": worker.address})
    cancel = CancelFlag(key, get_client())

    def heartbeat(progress: dict[str, Any] | None, pgid: int | None) -> bool:
        if progress is not None:
            worker.log_event(TOPIC, {"key": key, "progress": progress})
        return cancel.is_set()

    # Each task probes the worker's sandbox (a trivial sandboxed command, ~0.1 s): a worker
    # that cannot give it fails the attempt with the reason instead of running unsandboxed.
    sandbox = probe(resolve(settings.executor))
    if sandbox.error is not None:
        return AttemptOutcome(False, f"the job sandbox is unavailable on {worker.address}: "
                              f"{sandbox.error}")  # fmt: skip
    # The job process talks to the scheduler: it needs the network even in the sandbox.
    runner = AttemptRunner(
        dataclasses.replace(job, needs_network=True),
        paths,
        _worker_settings(settings, address),
        sandbox=sandbox,
        # Jobs on one worker host share uids by job-id hash: the per-attempt cgroup, not
        # RLIMIT_NPROC, is then the per-job process bound.
        slot=int(job.id[:6], 16) % 1024,
        readable=(owner_dir(settings.data_dir, job.owner),),
        heartbeat=heartbeat,
    )
    return runner.run()


def _worker_settings(settings: Settings, address: str) -> Settings:
    """The job and apply commands of this worker: its interpreter, and the scheduler, so
    that a training job preprocesses and an apply job scores on the cluster."""
    executor = settings.executor.model_copy(
        update={
            "job_command": _on_cluster(settings.executor.job_command, address),
            "apply_command": _on_cluster(settings.executor.apply_command, address),
        }
    )
    return settings.model_copy(update={"executor": executor})


def _on_cluster(prefix: list[str], address: str) -> list[str]:
    command = list(prefix)
    if not Path(command[0]).exists():  # another interpreter path on this worker
        command = [*MLAAS4HEP_ARGV, *command[len(MLAAS4HEP_ARGV) :]]
    # Options go before the positionals the runner appends (SPEC, or MODEL_DIR INPUTS).
    return [*command, "--dask-scheduler", address]


def _note(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(f"[mlaas4hep] {text}\n")
