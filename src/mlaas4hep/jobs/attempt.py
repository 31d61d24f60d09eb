"""Running one attempt of a job as a child process group, under limits, maybe sandboxed.

The attempt writes into ``attempt-<n>.partial/``; only a process that exits 0 (and was
not stopped) gets that directory renamed to ``attempt-<n>/`` (one atomic rename), so a
crash, kill or limit never leaves half-written artifacts where they are served.

Stopping is always: SIGTERM to the process group, the grace period, SIGKILL to the
group, then a sweep that kills any process still carrying this job's marker in its
environment (children that escaped with ``setsid``); inside bwrap the PID namespace makes
the sweep a formality.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil

from mlaas4hep.config import Settings
from mlaas4hep.jobs import cgroups
from mlaas4hep.jobs import limits as lim
from mlaas4hep.jobs import progress as prog
from mlaas4hep.jobs import sandbox as sbx
from mlaas4hep.jobs.apply_job import apply_argv
from mlaas4hep.jobs.credentials import credentials_dir, token_env
from mlaas4hep.jobs.layout import JobPaths, remove_tree
from mlaas4hep.jobs.store import JobRecord, LeaseLost

JOB_MARKER = "MLAAS4HEP_JOB_ID"
#: The attempt number beside the job marker: a sweep for a lost attempt must not kill the
#: next attempt of the same job, which may already run on another executor of this host.
ATTEMPT_MARKER = "MLAAS4HEP_JOB_ATTEMPT"
_TICK_S = 0.2
#: The longest piece of job output held at once (a longer line arrives in pieces).
LINE_CAP = 64 * 1024
_ENV_PASS = ("PATH", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "X509_CERT_DIR", "X509_USER_PROXY")

#: Called every heartbeat with (progress, pgid); returns True when cancel was requested,
#: raises LeaseLost when the attempt was taken away.
Heartbeat = Callable[[dict[str, Any] | None, int | None], bool]


@dataclass(frozen=True)
class AttemptOutcome:
    """How an attempt ended: ``ok`` with ``result_dir`` committed, else ``reason``."""

    ok: bool
    reason: str | None = None
    result_dir: str | None = None
    lease_lost: bool = False
    progress: dict[str, Any] | None = None


class LogSink:
    """A job log with a size cap; thread-safe, keeps the last stderr lines for reasons."""

    def __init__(self, path: Path, cap: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("ab")
        self._cap, self._written, self._truncated = cap, path.stat().st_size, False
        self._lock = threading.Lock()
        self.tail: deque[str] = deque(maxlen=40)

    def write(self, text: str, *, stderr: bool = False) -> None:
        if stderr:
            self.tail.append(text)
        data = text.encode("utf-8", "replace")
        with self._lock:
            if self._truncated:
                return
            if self._written + len(data) > self._cap:
                note = f"\n[mlaas4hep] log truncated at {lim.fmt_bytes(self._cap)}\n".encode()
                self._file.write(note)
                self._truncated = True
            else:
                self._file.write(data)
                self._written += len(data)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


class AttemptRunner:
    """Runs attempt ``job.attempt`` of *job* to the end and reports the outcome."""

    def __init__(
        self,
        job: JobRecord,
        paths: JobPaths,
        settings: Settings,
        *,
        sandbox: sbx.Sandbox,
        slot: int = 0,
        readable: tuple[Path, ...] = (),
        heartbeat: Heartbeat,
    ) -> None:
        self.job, self.paths, self.settings = job, paths, settings
        self.sandbox, self.slot = sandbox, slot
        self.readable, self.heartbeat = readable, heartbeat
        self.limits = settings.limits
        self._cgroup: cgroups.JobCgroup | None = None
        self._progress: dict[str, Any] | None = None
        self._progress_lock = threading.Lock()
        self._stop_reason: str | None = None
        self._cancelled = False
        self._lease_lost = False
        self._oom_killed = self._pids_exhausted = False

    def run(self) -> AttemptOutcome:
        """Run the process; never raises for anything the job does."""
        attempt = self.job.attempt
        partial, log_path = self.paths.partial(attempt), self.paths.log(attempt)
        remove_tree(partial)  # a leftover of a crashed earlier run of this same attempt
        partial.mkdir(parents=True)
        log = LogSink(log_path, self.limits.log_bytes)
        sandbox = self.sandbox.describe()
        log.write(f"[mlaas4hep] attempt {attempt} of job {self.job.id}, sandbox: {sandbox}\n")
        if not self.sandbox.enabled:
            log.write(f"[mlaas4hep] WARNING: {sbx.UNSAFE_WARNING}\n")
        name = f"job-{self.job.id}-{attempt}"
        self._cgroup = cgroups.create(name, self.limits)
        try:
            proc = self._spawn(partial)
        except OSError as exc:
            log.close()
            remove_tree(partial)
            self._remove_cgroup()
            return AttemptOutcome(False, f"cannot start the job command: {exc}")
        try:
            returncode = self._supervise(proc, log)
        finally:
            sweep(self.job.id, proc.pid, attempt)
            self._remove_cgroup()
        outcome = dataclasses.replace(
            self._outcome(returncode, log, partial), progress=self._progress
        )
        log.write(f"[mlaas4hep] attempt {attempt} ended: {outcome.reason or 'succeeded'}\n")
        log.close()
        return outcome

    def _remove_cgroup(self) -> None:
        if self._cgroup is not None:
            self._oom_killed = self._cgroup.oom_killed()
            self._pids_exhausted = self._cgroup.pids_exhausted()
            self._cgroup.remove()

    # ---- process -------------------------------------------------------------------------

    def _spawn(self, partial: Path) -> subprocess.Popen[bytes]:
        argv = self._argv(partial)
        env = {k: os.environ[k] for k in _ENV_PASS if k in os.environ}
        env.update({JOB_MARKER: self.job.id, ATTEMPT_MARKER: str(self.job.attempt)})
        env.update({"PYTHONUNBUFFERED": "1", "HOME": str(partial)})
        env.update(token_env(self.paths))  # the submitter's token for XRootD, if it has one
        preexec = lim.preexec(
            self.limits,
            own_uid=self.sandbox.uid(self.slot) is not None,
            cgroup=self._cgroup.procs_files if self._cgroup else (),
        )
        if not self.sandbox.enabled:
            return _popen(argv, partial, env, preexec, ())
        readable = (self.paths.input, credentials_dir(self.paths), *self.readable)
        sbx.grant(self.sandbox, self.slot, partial, readable)
        plan = sbx.SandboxPlan(
            writable=partial,
            readable=readable,
            network=self.job.needs_network,
            extra_ro=tuple(self.settings.executor.sandbox_ro_paths),
        )
        with sbx.seccomp_pipe() as fd:
            argv = sbx.wrap(self.sandbox, argv, plan, slot=self.slot, seccomp_fd=fd)
            return _popen(argv, partial, env, preexec, (fd,))

    def _argv(self, partial: Path) -> list[str]:
        """The job command: ``mlaas4hep apply ...`` for an apply job, else ``run``."""
        applying = apply_argv(self.settings, self.paths, self.job.spec, partial)
        if applying is not None:
            return applying
        argv = [
            *self.settings.executor.job_command,
            str(self.paths.spec),
            "--out",
            str(partial),
            "--progress-json",
        ]
        user_code = self.settings.executor.user_code
        if user_code == "always" or (user_code == "sandboxed" and self.sandbox.enabled):
            argv.append("--allow-user-code")
        return argv

    def _supervise(self, proc: subprocess.Popen[bytes], log: LogSink) -> int:
        assert proc.stdout is not None
        assert proc.stderr is not None
        readers = [
            threading.Thread(target=self._read_stdout, args=(proc.stdout, log), daemon=True),
            threading.Thread(target=self._read_stderr, args=(proc.stderr, log), daemon=True),
        ]
        for t in readers:
            t.start()
        started = time.monotonic()
        next_beat = 0.0
        while proc.poll() is None:
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + self.settings.executor.heartbeat_s
                self._beat(proc)
            if self._stop_reason is None:
                self._check_limits(proc, now - started)
            if self._stop_reason is not None or self._cancelled or self._lease_lost:
                self._stop(proc)
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=_TICK_S)
        returncode = proc.wait()
        # Leftover processes (same group or escaped with setsid) may hold the pipes open;
        # they go before the readers are joined, so the readers see end-of-file.
        sweep(self.job.id, proc.pid, self.job.attempt)
        for t in readers:
            t.join(timeout=5)
        proc.stdout.close()
        proc.stderr.close()
        return returncode

    def _beat(self, proc: subprocess.Popen[bytes]) -> None:
        with self._progress_lock:
            snapshot = dict(self._progress) if self._progress else None
        try:
            if self.heartbeat(snapshot, proc.pid):
                self._cancelled = True
        except LeaseLost:
            self._lease_lost = True

    def _check_limits(self, proc: subprocess.Popen[bytes], elapsed: float) -> None:
        wall = self.limits.wall_clock_s
        if elapsed > wall:
            self._stop_reason = f"wall-clock limit {wall:g} s exceeded"
            return
        if self._cgroup is not None:
            # The kernel enforces both; a refused fork or an OOM kill is where a runaway
            # job shows: stop it at once rather than let it spin until the wall clock.
            if self._cgroup.pids_exhausted():
                self._stop_reason = lim.process_reason(self.limits)
            elif self._cgroup.oom_killed():
                self._stop_reason = lim.memory_reason(self.limits)
            if self._cgroup.memory is not None:
                return  # exact accounting; summed RSS would count shared pages per process
        cap = self.limits.memory_bytes
        if cap is not None and self._stop_reason is None:
            rss = tree_rss(proc.pid)
            if rss > cap:
                self._stop_reason = (
                    f"memory limit {lim.fmt_bytes(cap)} exceeded "
                    f"(resident {lim.fmt_bytes(rss)}); ask for less data per chunk (step_size)"
                )

    def _stop(self, proc: subprocess.Popen[bytes]) -> None:
        lim.kill_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=self.settings.executor.cancel_grace_s)
        except subprocess.TimeoutExpired:
            lim.kill_group(proc.pid, signal.SIGKILL)

    def _read_stdout(self, stream: IO[bytes], log: LogSink) -> None:
        for raw in _lines(stream):
            line = raw.decode("utf-8", "replace")
            update = prog.parse_line(line)
            if update is None:
                log.write(line)
                continue
            if (text := prog.log_line(update)) is not None:
                log.write(text)  # epoch ends and later steps, in words
            with self._progress_lock:
                self._progress = prog.merge(self._progress, update)

    def _read_stderr(self, stream: IO[bytes], log: LogSink) -> None:
        for raw in _lines(stream):
            log.write(raw.decode("utf-8", "replace"), stderr=True)

    # ---- outcome -------------------------------------------------------------------------

    def _outcome(self, returncode: int, log: LogSink, partial: Path) -> AttemptOutcome:
        if self._lease_lost:
            remove_tree(partial)
            return AttemptOutcome(False, "lease lost", lease_lost=True)
        if self._cancelled:
            remove_tree(partial)
            return AttemptOutcome(False, "cancelled by the user")
        if self._stop_reason is not None:
            remove_tree(partial)
            return AttemptOutcome(False, self._stop_reason)
        if returncode != 0 and (self._oom_killed or self._pids_exhausted):
            remove_tree(partial)
            why = lim.memory_reason if self._oom_killed else lim.process_reason
            return AttemptOutcome(False, why(self.limits))
        if returncode == 0:
            committed = self.paths.committed(self.job.attempt)
            remove_tree(committed)
            # The attempt dir is the job's HOME: libraries leave caches there (.cache,
            # .config: fontconfig, matplotlib, ONNX Runtime). They are not artifacts.
            for hidden in partial.glob(".*"):
                remove_tree(hidden)
            os.replace(partial, committed)  # the commit: one atomic rename
            return AttemptOutcome(True, None, committed.name)
        remove_tree(partial)
        if returncode < 0:
            return AttemptOutcome(False, lim.signal_reason(returncode, self.limits))
        return AttemptOutcome(False, lim.exit_reason(returncode, "".join(log.tail), self.limits))


def _popen(
    argv: list[str],
    cwd: Path,
    env: dict[str, str],
    preexec: Callable[[], None],
    pass_fds: tuple[int, ...],
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
        start_new_session=True,
        preexec_fn=preexec,
        pass_fds=pass_fds,
    )


def _lines(stream: IO[bytes]) -> Iterator[bytes]:
    """The job's output line by line, a line longer than ``LINE_CAP`` in pieces of that size:
    a job printing gigabytes without a newline must not grow the service's memory."""
    return iter(lambda: stream.readline(LINE_CAP), b"")


def tree_rss(pid: int) -> int:
    """Resident bytes of process *pid* and all its descendants (0 if it is gone)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def sweep(job_id: str, pgid: int | None = None, attempt: int | None = None) -> int:
    """Kill every process of job *job_id* still alive; returns how many were found.

    Kills the process group *pgid* (when given) and any process whose environment carries
    the job's marker, which also catches children that left the group with ``setsid``.
    With *attempt*, only that attempt's processes: a later attempt of the job may already
    run (requeued after a lost lease) and must survive the sweep of the lost one.
    """
    if pgid is not None:
        lim.kill_group(pgid, signal.SIGKILL)
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and _marked(proc.environ(), job_id, attempt):
                found.append(proc)
        except psutil.Error:
            continue
    for proc in found:
        try:
            proc.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(found, timeout=5)
    return len(found)


def _marked(environ: dict[str, str], job_id: str, attempt: int | None) -> bool:
    if environ.get(JOB_MARKER) != job_id:
        return False
    return attempt is None or environ.get(ATTEMPT_MARKER, str(attempt)) == str(attempt)
