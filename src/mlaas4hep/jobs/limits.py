"""Resource limits of a job process and the human reasons when one is hit.

Kernel rlimits (CPU time, file size, open files, optionally address space) are set in the
child between fork and exec, which also joins the attempt's cgroup
(:mod:`mlaas4hep.jobs.cgroups`: memory and processes enforced by the kernel). Without a
cgroup, ``RLIMIT_DATA`` = ``memory_bytes`` is the kernel's memory backstop (per process;
RLIMIT_AS would count the large virtual mappings of torch and kill jobs that use little
memory). ``RLIMIT_NPROC`` = ``processes`` applies where the job has its own slot uid (the
limit counts every process of the real uid). The executor also polls the resident size
of the process tree, for a precise message, and the wall clock.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
from collections.abc import Callable

from mlaas4hep.config import JobLimits
from mlaas4hep.jobs import cgroups

_PR_SET_PDEATHSIG = 1


def fmt_bytes(n: float) -> str:
    """``4294967296`` -> ``'4 GiB'`` (one decimal where needed)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if float(n).is_integer() else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} TiB"  # pragma: no cover


def rlimits(
    limits: JobLimits, *, own_uid: bool = False, cgroup: bool = False
) -> list[tuple[int, int]]:
    """``(resource, value)`` pairs to apply in the child.

    *own_uid*: the job runs as its slot's own uid (RLIMIT_NPROC then bounds this job);
    *cgroup*: a cgroup enforces the memory (else RLIMIT_DATA does).
    """
    pairs = [
        (resource.RLIMIT_CPU, limits.cpu_s),
        (resource.RLIMIT_FSIZE, limits.file_size_bytes),
        (resource.RLIMIT_NOFILE, limits.open_files),
        (resource.RLIMIT_NPROC, limits.processes if own_uid else None),
        (resource.RLIMIT_DATA, None if cgroup else limits.memory_bytes),
        (resource.RLIMIT_AS, limits.address_space_bytes),
        (resource.RLIMIT_CORE, 0),
    ]
    return [(res, int(value)) for res, value in pairs if value is not None]


def preexec(
    limits: JobLimits, *, own_uid: bool = False, cgroup: tuple[str, ...] = ()
) -> Callable[[], None]:
    """A ``preexec_fn`` that joins the cgroup (*cgroup*: its ``cgroup.procs`` files),
    applies the rlimits and dies with the executor thread's process.

    Only async-signal-safe-ish calls (open/write, setrlimit, prctl): it runs between fork
    and exec.
    """
    pairs = rlimits(limits, own_uid=own_uid, cgroup=bool(cgroup))
    libc = ctypes.CDLL(None, use_errno=True)

    def apply() -> None:
        # If the service is SIGKILLed, the kernel kills the job too (the PID namespace of
        # the sandbox takes its children with it; recovery kills any group left over).
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        cgroups.join(cgroup)
        for res, value in pairs:
            _soft, hard = resource.getrlimit(res)
            new_hard = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(res, (min(value, new_hard), new_hard))

    return apply


def signal_reason(returncode: int, limits: JobLimits) -> str:
    """Why a process killed by signal ``-returncode`` died, in a user's words."""
    signum = -returncode
    if signum == signal.SIGXCPU:
        return f"CPU time limit {limits.cpu_s} s exceeded"
    if signum == signal.SIGXFSZ:
        size = fmt_bytes(limits.file_size_bytes or 0)
        return f"file size limit {size} exceeded (a file the job wrote grew too large)"
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    if signum == signal.SIGKILL:
        return f"the job process was killed ({name}), possibly by the system out-of-memory killer"
    return f"the job process crashed ({name}); see its log"


def exit_reason(returncode: int, stderr_tail: str, limits: JobLimits) -> str:
    """Why a process that exited with *returncode* failed (uses the end of its stderr)."""
    last = _last_line(stderr_tail)
    if "MemoryError" in stderr_tail and limits.address_space_bytes:
        return f"memory limit {fmt_bytes(limits.address_space_bytes)} exceeded (address space)"
    if "MemoryError" in stderr_tail and limits.memory_bytes:
        return f"memory limit {fmt_bytes(limits.memory_bytes)} exceeded"
    if "Resource temporarily unavailable" in stderr_tail and limits.processes:
        return process_reason(limits)
    if "File too large" in stderr_tail and limits.file_size_bytes:
        size = fmt_bytes(limits.file_size_bytes)
        return f"file size limit {size} exceeded (a file the job wrote grew too large)"
    if "Too many open files" in stderr_tail and limits.open_files:
        return f"open files limit {limits.open_files} exceeded"
    if returncode == 2 and last:
        return last  # the pipeline's own one-line user error
    suffix = f": {last}" if last else "; see its log"
    return f"the job process exited with status {returncode}{suffix}"


def process_reason(limits: JobLimits) -> str:
    """The reason of a job stopped at its process limit."""
    return (
        f"process limit {limits.processes} exceeded (processes and threads of the job); "
        "a runaway fork loop? start fewer workers or threads"
    )


def memory_reason(limits: JobLimits) -> str:
    """The reason of a job the kernel stopped at its memory limit."""
    size = fmt_bytes(limits.memory_bytes or 0)
    return (
        f"memory limit {size} exceeded (stopped by the kernel); "
        "ask for less data per chunk (step_size) or a smaller batch"
    )


def _last_line(text: str) -> str:
    """The job's last stderr line, without control characters (terminal escapes)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    last = lines[-1][:500] if lines else ""
    return "".join(ch for ch in last if ch.isprintable())


def kill_group(pgid: int, sig: int) -> bool:
    """Send *sig* to process group *pgid*; False if it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True
