"""The job sandbox: a bubblewrap (``bwrap``) command line around the job's argv.

A job's code is hostile. Inside, the job sees a read-only system (``/usr``, ``/etc`` with
its secrets masked, the Python installation), its own input (read-only) and attempt
directory (writable), a private ``/tmp``, fresh ``/proc`` (``/proc/sys`` read-only) and
``/dev``, and nothing else of the host: not the database, not the issuer key, not other
jobs, not other users' datasets. It runs in new PID, IPC, UTS, cgroup and (unless its
inputs are remote) network namespaces; when its init dies every process in it dies.

Who the job is, by how the service runs (the Kubernetes ``runAsNonRoot`` + ``drop: ALL`` +
``RuntimeDefault`` seccomp model; HTCondor's per-slot users):

* **root host**: bwrap runs as root to build the mounts, then the job command starts
  through ``setpriv`` as an unprivileged slot user (``sandbox_uid + slot``, group
  ``sandbox_gid``, no supplementary groups), with empty capability sets (bounding set
  included) and no-new-privs. A per-slot uid makes ``RLIMIT_NPROC`` a per-job bound and
  keeps root-owned files (``/etc/shadow``) closed even if a mask were missed.
* **unprivileged host** (or a container without root): bwrap runs as the service user in
  a new user namespace with ``--cap-drop ALL``; the job is the service user, so it reads
  what that user reads *among the paths bound in*.

In both modes the seccomp filter of :mod:`mlaas4hep.jobs.seccomp` is loaded by bwrap
(``--seccomp FD``) right before the job command runs: no mount, mknod, ptrace, unshare,
setns, kernel log, modules, BPF, keyrings.

If the host cannot give that (no bwrap, namespaces refused, no ``setpriv`` when root),
:func:`probe` says why and how to fix it, and the executor refuses to run jobs. Running
without a sandbox takes ``executor.sandbox: none`` (unsafe, logged loudly).

Limitation, stated plainly: when the network is shared (remote inputs), bwrap cannot
restrict which hosts are reached; restrict egress in the deployment (NetworkPolicy,
firewall) to the XRootD proxy.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from mlaas4hep.config import ExecutorSettings
from mlaas4hep.errors import SpecError
from mlaas4hep.jobs import seccomp

_SYSTEM_RO = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc")
#: Secrets a host keeps under /etc: hidden even though the slot user could not read most.
_MASKED_FILES = (
    "/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/sudoers",
    "/etc/security/opasswd", "/etc/grid-security/hostkey.pem",
)  # fmt: skip
_MASKED_DIRS = ("/etc/ssh", "/etc/ssl/private", "/etc/sudoers.d", "/etc/mlaas4hep")
UNSAFE_WARNING = (
    "executor.sandbox is 'none': job code runs UNSANDBOXED with the service's identity "
    "and can read the database, the issuer key and every user's data. Use it only on a "
    "single-user machine; remove the setting (install bubblewrap) to sandbox jobs."
)
_FIX = (
    "install bubblewrap (apt-get install bubblewrap / dnf install bubblewrap) and, when the "
    "service runs as root, util-linux's setpriv; where user namespaces are disabled, allow "
    "them (sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces) or run the "
    "service as root; as a last resort, and unsafe, set executor.sandbox: none"
)


@dataclass(frozen=True)
class SandboxPlan:
    """What one attempt may see."""

    writable: Path
    readable: tuple[Path, ...] = ()
    network: bool = False
    extra_ro: tuple[Path, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Sandbox:
    """How this host isolates jobs, decided once at start-up.

    ``enabled`` False is the explicit unsafe mode; ``error`` set means jobs must not run.
    ``drop`` True (service is root): the job runs as ``uid_base + slot``:``gid``.
    """

    enabled: bool
    bwrap: str | None = None
    setpriv: str | None = None
    drop: bool = False
    uid_base: int = 61000
    gid: int = 61000
    error: str | None = None
    where: str | None = None  # describe() instead, e.g. where the sandbox is checked

    @property
    def ready(self) -> bool:
        """Jobs may run: a working sandbox, or the explicit unsafe mode."""
        return self.error is None

    def uid(self, slot: int) -> int | None:
        """The uid of worker slot *slot* (None: the job keeps the service's uid)."""
        return self.uid_base + slot if self.drop else None

    def describe(self) -> str:
        """One line for logs and ``/readyz``."""
        if self.error is not None:
            return f"unavailable: {self.error}"
        if not self.enabled:
            return "none (UNSAFE: executor.sandbox is 'none')"
        if self.where is not None:
            return self.where
        who = (
            f"slot uids {self.uid_base}+n, gid {self.gid}"
            if self.drop
            else "the service user in a user namespace"
        )
        return f"bwrap ({who}; no capabilities, no-new-privs, seccomp)"


def resolve(executor: ExecutorSettings) -> Sandbox:
    """The sandbox the settings ask for, with the binaries found (nothing is run).

    ``auto`` and ``bwrap`` both require bwrap; only ``none`` runs jobs unsandboxed.
    """
    if executor.sandbox == "none":
        return Sandbox(enabled=False)
    base = Sandbox(enabled=True, uid_base=executor.sandbox_uid, gid=executor.sandbox_gid)
    bwrap, setpriv = shutil.which("bwrap"), shutil.which("setpriv")
    if bwrap is None:
        return replace(base, error=f"bwrap is not installed; {_FIX}")
    if os.geteuid() != 0:  # setpriv, if present, only adds no-new-privs
        return replace(base, bwrap=bwrap, setpriv=setpriv)
    if setpriv is None:
        return replace(base, bwrap=bwrap, error=f"setpriv (util-linux) is not installed; {_FIX}")
    return replace(base, bwrap=bwrap, setpriv=setpriv, drop=True)


def python_paths() -> tuple[Path, ...]:
    """Directories the job's Python interpreter and its packages live in."""
    import mlaas4hep

    paths = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix)}
    paths.add(Path(mlaas4hep.__file__).resolve().parent.parent)  # editable installs
    return tuple(sorted(paths))


def wrap(
    sandbox: Sandbox, argv: Sequence[str], plan: SandboxPlan, *, slot: int, seccomp_fd: int
) -> list[str]:
    """The bwrap command line that runs *argv* under *plan* in worker slot *slot*.

    *seccomp_fd* is a readable descriptor holding :func:`seccomp.program` (see
    :func:`seccomp_pipe`). Reads only whether masked host paths exist.
    """
    if sandbox.bwrap is None:
        msg = "wrap() needs a sandbox with bwrap; check Sandbox.ready first"
        raise SpecError(msg)
    cmd = [sandbox.bwrap, "--die-with-parent", "--unshare-pid", "--unshare-ipc"]
    cmd += ["--unshare-uts", "--unshare-cgroup-try"]
    if not sandbox.drop:  # unprivileged host: the user namespace takes the capabilities
        cmd += ["--unshare-user", "--cap-drop", "ALL"]
    if not plan.network:
        cmd.append("--unshare-net")
    for system in _SYSTEM_RO:
        cmd += ["--ro-bind-try", system, system]
    cmd += [arg for path in _MASKED_FILES if os.path.lexists(path) for arg in _mask_file(path)]
    cmd += [arg for path in _MASKED_DIRS if os.path.isdir(path) for arg in _mask_dir(path)]
    cmd += ["--proc", "/proc", "--dev", "/dev"]
    cmd += ["--perms", "1777", "--tmpfs", "/tmp", "--perms", "1777", "--tmpfs", "/dev/shm"]  # noqa: S108
    readable = (*python_paths(), *plan.extra_ro, *plan.readable)
    for parent in _parents((*readable, plan.writable)):
        cmd += ["--perms", "0755", "--dir", parent]  # bwrap would make them 0700 as root
    for path in readable:
        cmd += ["--ro-bind-try", str(path), str(path)]
    cmd += ["--bind", str(plan.writable), str(plan.writable)]
    cmd += ["--chdir", str(plan.writable), "--setenv", "HOME", str(plan.writable)]
    cmd += ["--setenv", "TMPDIR", "/tmp", "--seccomp", str(seccomp_fd), "--"]  # noqa: S108
    return cmd + _drop(sandbox, slot) + list(argv)


def _parents(paths: Sequence[Path]) -> list[str]:
    """The directories above *paths* that bwrap must create, shallowest first."""
    bound = {str(p) for p in paths}
    mounted = (*_SYSTEM_RO, "/proc", "/dev", *bound)
    found: set[str] = set()
    for path in paths:
        for parent in path.parents:
            text = str(parent)
            if text in ("/", "/tmp") or any(_under(text, m) for m in mounted):  # noqa: S108
                continue
            found.add(text)
    return sorted(found, key=lambda p: (p.count("/"), p))


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _mask_file(path: str) -> list[str]:
    return ["--ro-bind", "/dev/null", path]


def _mask_dir(path: str) -> list[str]:
    return ["--tmpfs", path, "--remount-ro", path]


def _drop(sandbox: Sandbox, slot: int) -> list[str]:
    """The privilege drop that starts the job command (root host), else the NNP bit."""
    if sandbox.setpriv is None:
        return []
    uid = sandbox.uid(slot)
    if uid is None:
        return [sandbox.setpriv, "--no-new-privs", "--"]
    return [
        sandbox.setpriv,
        f"--reuid={uid}",
        f"--regid={sandbox.gid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    ]


@contextlib.contextmanager
def seccomp_pipe() -> Iterator[int]:
    """A pipe's read end holding the seccomp program, for ``--seccomp FD`` (closed after)."""
    data = seccomp.program()
    read, write = os.pipe()
    try:
        try:
            os.write(write, data)  # a few hundred bytes: never blocks on the pipe buffer
        finally:
            # Closed exactly once: another thread may get this number from its next open.
            os.close(write)
        yield read
    finally:
        os.close(read)


def grant(sandbox: Sandbox, slot: int, writable: Path, readable: Sequence[Path]) -> None:
    """Make *writable* the slot user's and *readable* readable by the job group (root host).

    Walks without following links; the trees stay closed to other host users.
    """
    uid = sandbox.uid(slot)
    if uid is None:
        return
    os.chown(writable, uid, sandbox.gid, follow_symlinks=False)
    writable.chmod(0o700)
    for tree in readable:
        if tree.is_dir() and not tree.is_symlink():
            _group_readable(tree, sandbox.gid)


def _group_readable(tree: Path, gid: int) -> None:
    for top, dirs, files in os.walk(tree):
        for name in (top, *(os.path.join(top, n) for n in (*dirs, *files))):
            st = os.lstat(name)
            if stat.S_ISLNK(st.st_mode):
                continue
            extra = stat.S_IRGRP | (stat.S_IXGRP if stat.S_ISDIR(st.st_mode) else 0)
            if st.st_gid != gid:
                os.chown(name, -1, gid, follow_symlinks=False)
            if st.st_mode & extra != extra:
                os.chmod(name, stat.S_IMODE(st.st_mode) | extra)


_PROBE = (
    "import os\n"
    "s = dict(l.split(':', 1) for l in open('/proc/self/status') if ':' in l)\n"
    "open(os.path.join(os.environ['HOME'], 'ok'), 'w').write('ok')\n"
    "print(s['Uid'].split()[0], s['CapEff'].strip(), s['CapBnd'].strip(),"
    " s['NoNewPrivs'].strip(), s['Seccomp'].strip())\n"
)


def probe(sandbox: Sandbox, timeout: float = 60.0) -> Sandbox:
    """Run a trivial job through the sandbox; the same sandbox, with ``error`` on failure.

    Checks what a job would get: the slot uid, no capabilities, no-new-privs, the seccomp
    filter, a writable attempt directory.
    """
    if not sandbox.enabled or sandbox.error is not None:
        return sandbox
    with tempfile.TemporaryDirectory(prefix="mlaas4hep-probe-") as tmp:
        out = Path(tmp)
        grant(sandbox, 0, out, ())
        with seccomp_pipe() as fd:
            cmd = wrap(sandbox, [sys.executable, "-c", _PROBE], SandboxPlan(out), slot=0,
                       seccomp_fd=fd)  # fmt: skip
            try:
                done = subprocess.run(
                    cmd, pass_fds=(fd,), capture_output=True, text=True, timeout=timeout,
                    env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp},
                    check=False,
                )  # fmt: skip
            except (OSError, subprocess.TimeoutExpired) as exc:
                return replace(sandbox, error=f"the sandbox probe did not run ({exc}); {_FIX}")
    return replace(sandbox, error=_judge(sandbox, done))


def _judge(sandbox: Sandbox, done: subprocess.CompletedProcess[str]) -> str | None:
    if done.returncode != 0:
        err = " ".join(done.stderr.strip().splitlines()[-2:])[:300]
        return f"a trivial command failed in the sandbox (exit {done.returncode}: {err}); {_FIX}"
    fields = done.stdout.split()
    want_uid = sandbox.uid(0)
    expected = [str(want_uid if want_uid is not None else os.getuid())]
    expected += ["0000000000000000", "0000000000000000", "1", "2"]
    if fields != expected:
        return (
            f"the sandbox probe saw uid/CapEff/CapBnd/NoNewPrivs/Seccomp {fields!r}, "
            f"expected {expected!r}; {_FIX}"
        )
    return None
