"""A per-attempt control group: memory and process limits the kernel enforces.

Where the service may create cgroups (root on a host with cgroup v1 ``memory`` and
``pids`` hierarchies, or cgroup v2 with those controllers delegated), each attempt gets
``mlaas4hep/job-<id>-<attempt>`` with ``memory`` = ``limits.memory_bytes`` and ``pids`` =
``limits.processes``; the job process joins it between fork and exec, so everything it
starts is counted. The kernel's OOM killer then stops a memory hog at the limit, and a
fork bomb gets ``EAGAIN``; the executor reads the cgroup's event counters to tell the user
which limit it was. Elsewhere :func:`create` returns None and the rlimit backstops of
:mod:`mlaas4hep.jobs.limits` apply (``RLIMIT_DATA``, ``RLIMIT_NPROC``).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from mlaas4hep.config import JobLimits

ROOT = Path("/sys/fs/cgroup")
_PARENT = "mlaas4hep"
_STALE_S = 60.0


@dataclass(frozen=True)
class JobCgroup:
    """The directories of one attempt's cgroup (v1: one per hierarchy; v2: one)."""

    memory: Path | None
    pids: Path | None

    @property
    def dirs(self) -> tuple[Path, ...]:
        found = [d for d in (self.memory, self.pids) if d is not None]
        return tuple(dict.fromkeys(found))

    @property
    def procs_files(self) -> tuple[str, ...]:
        """The files a process writes its pid to, to join."""
        return tuple(str(d / "cgroup.procs") for d in self.dirs)

    def oom_killed(self) -> bool:
        """True if the kernel killed a process of this cgroup for its memory limit."""
        if self.memory is None:
            return False
        for name in ("memory.events", "memory.oom_control"):  # v2, v1
            if _counter(self.memory / name, "oom_kill") > 0:
                return True
        return False

    def pids_exhausted(self) -> bool:
        """True once a fork or thread creation was refused for the process limit."""
        return self.pids is not None and _counter(self.pids / "pids.events", "max") > 0

    def remove(self, timeout: float = 5.0) -> None:
        """Remove the cgroup once its processes are gone (best effort)."""
        deadline = time.monotonic() + timeout
        for directory in self.dirs:
            while True:
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.05)


def _counter(path: Path, key: str) -> int:
    try:
        text = path.read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def create(name: str, limits: JobLimits, root: Path = ROOT) -> JobCgroup | None:
    """The cgroup *name* with *limits*, or None where this host does not let us make one."""
    if limits.memory_bytes is None and limits.processes is None:
        return None
    try:
        if (root / "cgroup.controllers").exists():
            return _create_v2(root, name, limits)
        return _create_v1(root, name, limits)
    except OSError:
        return None


def _create_v1(root: Path, name: str, limits: JobLimits) -> JobCgroup | None:
    memory = pids = None
    if limits.memory_bytes is not None and (root / "memory" / "cgroup.procs").exists():
        memory = _mkdir(root / "memory" / _PARENT / name)
        (memory / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
        with contextlib.suppress(OSError):  # no swap accounting on many hosts
            (memory / "memory.memsw.limit_in_bytes").write_text(str(limits.memory_bytes))
    if limits.processes is not None and (root / "pids" / "cgroup.procs").exists():
        pids = _mkdir(root / "pids" / _PARENT / name)
        (pids / "pids.max").write_text(str(limits.processes))
    if memory is None and pids is None:
        return None
    return JobCgroup(memory, pids)


def _create_v2(root: Path, name: str, limits: JobLimits) -> JobCgroup | None:
    wanted = {"memory", "pids"}
    if not wanted <= set((root / "cgroup.controllers").read_text().split()):
        return None
    parent = _mkdir(root / _PARENT)
    (parent / "cgroup.subtree_control").write_text("+memory +pids")
    group = _mkdir(parent / name)
    if limits.memory_bytes is not None:
        (group / "memory.max").write_text(str(limits.memory_bytes))
        with contextlib.suppress(OSError):
            (group / "memory.swap.max").write_text("0")
    if limits.processes is not None:
        (group / "pids.max").write_text(str(limits.processes))
    has_memory = limits.memory_bytes is not None
    return JobCgroup(group if has_memory else None, group if limits.processes else None)


def _mkdir(path: Path) -> Path:
    _remove_stale(path)
    path.mkdir(parents=True, exist_ok=True)
    if not (path / "cgroup.procs").exists():  # not a cgroup file system after all
        raise OSError(f"{path} is not in a cgroup hierarchy")
    return path


def _remove_stale(path: Path) -> None:
    """Remove the empty job cgroups beside *path* older than a minute: attempts lost with
    their executor (``kill -9``) could not remove their own. A live attempt's cgroup is
    never empty after its first milliseconds (the job joins before ``exec``), and one with
    processes refuses the rmdir anyway."""
    if not path.parent.is_dir():
        return
    now = time.time()
    for old in path.parent.glob("job-*"):
        with contextlib.suppress(OSError):
            if old != path and now - old.stat().st_mtime > _STALE_S:
                old.rmdir()


def join(procs_files: tuple[str, ...]) -> None:
    """Move the calling process into the cgroup (called between fork and exec)."""
    pid = str(os.getpid()).encode()
    for path in procs_files:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, pid)
        finally:
            os.close(fd)
