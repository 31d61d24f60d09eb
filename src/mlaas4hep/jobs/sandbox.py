"""The job sandbox: a bubblewrap (``bwrap``) command line around the job's argv.

Inside, the job sees a read-only system (``/usr``, ``/etc``, the Python installation),
its own input (read-only) and attempt directory (writable), a private ``/tmp``, fresh
``/proc`` and ``/dev``, and nothing else of the host: not the database, not other jobs,
not other users' datasets. It runs in new user-visible namespaces (PID, IPC, UTS, cgroup
and, unless its spec names remote data, network), so it cannot open sockets to anywhere
when it does not need to, and when its init dies every process in it dies
(``--die-with-parent`` plus the PID namespace: no process left behind).

Limitation, stated plainly: when the network is shared (``root://``/``http(s)://`` inputs),
bwrap cannot restrict which hosts are reached; restrict egress in the deployment
(NetworkPolicy, firewall) to the XRootD proxy.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlaas4hep.errors import SpecError

_SYSTEM_RO = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc")


@dataclass(frozen=True)
class SandboxPlan:
    """What one attempt may see."""

    writable: Path
    readable: tuple[Path, ...] = ()
    network: bool = False
    extra_ro: tuple[Path, ...] = field(default_factory=tuple)


def find_bwrap(mode: str) -> str | None:
    """The bwrap binary to use for sandbox *mode* (``auto``, ``bwrap``, ``none``).

    Raises:
        SpecError: mode ``bwrap`` was asked for and bwrap is not installed.
    """
    if mode == "none":
        return None
    path = shutil.which("bwrap")
    if path is None and mode == "bwrap":
        msg = "executor.sandbox is 'bwrap' but bwrap is not installed: apt-get install bubblewrap"
        raise SpecError(msg)
    return path


def python_paths() -> tuple[Path, ...]:
    """Directories the job's Python interpreter and its packages live in."""
    import mlaas4hep

    paths = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix)}
    paths.add(Path(mlaas4hep.__file__).resolve().parent.parent)  # editable installs
    return tuple(sorted(paths))


def wrap(bwrap: str, argv: Sequence[str], plan: SandboxPlan) -> list[str]:
    """The bwrap command line that runs *argv* under *plan* (pure: touches nothing)."""
    cmd = [bwrap, "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    cmd += ["--unshare-cgroup-try"]
    if not plan.network:
        cmd.append("--unshare-net")
    for system in _SYSTEM_RO:
        cmd += ["--ro-bind-try", system, system]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]  # noqa: S108 (private tmpfs)
    for path in (*python_paths(), *plan.extra_ro, *plan.readable):
        cmd += ["--ro-bind-try", str(path), str(path)]
    cmd += ["--bind", str(plan.writable), str(plan.writable)]
    cmd += ["--chdir", str(plan.writable), "--setenv", "HOME", str(plan.writable)]
    cmd += ["--setenv", "TMPDIR", "/tmp", "--"]  # noqa: S108
    return cmd + list(argv)
