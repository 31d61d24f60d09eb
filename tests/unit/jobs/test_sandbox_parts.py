"""The sandbox's pure parts (argv builder, BPF program, cgroup files, rlimits) and, where
bwrap and root are here, the real filter and privilege drop on a tiny child."""

from __future__ import annotations

import errno
import os
import resource
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlaas4hep.config import ExecutorSettings, JobLimits
from mlaas4hep.errors import SpecError
from mlaas4hep.jobs import cgroups, seccomp
from mlaas4hep.jobs.limits import exit_reason, rlimits
from mlaas4hep.jobs.sandbox import (
    Sandbox,
    SandboxPlan,
    grant,
    probe,
    resolve,
    seccomp_pipe,
    wrap,
)

ROOT_SANDBOX = Sandbox(enabled=True, bwrap="/usr/bin/bwrap", setpriv="/usr/bin/setpriv", drop=True)
USER_SANDBOX = Sandbox(enabled=True, bwrap="/usr/bin/bwrap", setpriv="/usr/bin/setpriv")
CAN_SANDBOX = shutil.which("bwrap") is not None and shutil.which("setpriv") is not None


def test_root_host_drops_to_the_slot_uid_after_bwrap(tmp_path: Path) -> None:
    plan = SandboxPlan(writable=tmp_path / "out", readable=(tmp_path / "in",))
    cmd = wrap(ROOT_SANDBOX, ["python", "job.py"], plan, slot=3, seccomp_fd=7)
    sep = cmd.index("--")
    assert cmd[sep - 2 : sep] == ["--seccomp", "7"]
    drop = cmd[sep + 1 : cmd.index("--", sep + 1) + 1]
    assert drop == [
        "/usr/bin/setpriv", "--reuid=61003", "--regid=61000", "--clear-groups",
        "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
    ]  # fmt: skip
    assert cmd[-2:] == ["python", "job.py"]
    # As root the user namespace would map the job to uid 0 outside: the drop does it.
    assert "--unshare-user" not in cmd[:sep]
    assert "--cap-drop" not in cmd[:sep]
    for flag in ("--unshare-pid", "--unshare-ipc", "--unshare-net", "--die-with-parent"):
        assert flag in cmd[:sep]


def test_unprivileged_host_uses_a_user_namespace_without_capabilities(tmp_path: Path) -> None:
    cmd = wrap(USER_SANDBOX, ["x"], SandboxPlan(writable=tmp_path), slot=0, seccomp_fd=3)
    sep = cmd.index("--")
    assert cmd[cmd.index("--cap-drop") + 1] == "ALL"
    assert "--unshare-user" in cmd[:sep]
    assert cmd[sep + 1 :] == ["/usr/bin/setpriv", "--no-new-privs", "--", "x"]


def test_secrets_under_etc_are_masked_and_parents_are_traversable(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b" / "in"
    cmd = wrap(ROOT_SANDBOX, ["x"], SandboxPlan(tmp_path / "out", (deep,)), slot=0, seccomp_fd=3)
    if Path("/etc/shadow").exists():
        i = cmd.index("/etc/shadow")
        assert cmd[i - 2 : i] == ["--ro-bind", "/dev/null"]
    dirs = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--dir"]
    assert str(tmp_path / "a" / "b") in dirs
    assert "/tmp" not in dirs
    # /proc/sys stays read-only: bwrap's --proc remounts it so; nothing binds it writable.
    assert "/proc/sys" not in cmd


def test_wrap_needs_bwrap() -> None:
    with pytest.raises(SpecError, match="needs a sandbox with bwrap"):
        wrap(Sandbox(enabled=False), ["x"], SandboxPlan(Path("/x")), slot=0, seccomp_fd=3)


def test_resolve_none_is_explicit_and_auto_never_means_none() -> None:
    none = resolve(ExecutorSettings(sandbox="none"))
    assert not none.enabled
    assert none.ready
    assert "UNSAFE" in none.describe()
    auto = resolve(ExecutorSettings(sandbox="auto"))
    assert auto.enabled
    if shutil.which("bwrap") is None:
        assert auto.error is not None
        assert "apt-get install bubblewrap" in auto.error


def test_missing_bwrap_makes_the_sandbox_unavailable_with_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    sandbox = resolve(ExecutorSettings(sandbox="bwrap"))
    assert not sandbox.ready
    assert "bwrap is not installed" in str(sandbox.error)
    assert "executor.sandbox: none" in sandbox.describe()
    assert probe(sandbox) is sandbox  # nothing to run


def _decode(program: bytes) -> list[tuple[int, int, int, int]]:
    return [struct.unpack("<HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]


@pytest.mark.parametrize("machine", sorted(seccomp.ARCHES))
def test_bpf_program_is_well_formed(machine: str) -> None:
    insns = _decode(seccomp.program(machine))
    audit_arch, table, _ = seccomp.ARCHES[machine]
    assert insns[0] == (0x20, 0, 0, 4)  # load arch
    assert insns[1][0] == 0x15
    assert insns[1][3] == audit_arch
    assert insns[-4:] == [(6, 0, 0, 0x7FFF0000), (6, 0, 0, 0x50000 | errno.EPERM),
                          (6, 0, 0, 0x50000 | errno.ENOSYS), (6, 0, 0, 0x80000000)]  # fmt: skip
    # every jump lands inside the program
    for pc, (code, jt, jf, _k) in enumerate(insns):
        if code & 0x07 == 0x05:
            assert pc + 1 + max(jt, jf) < len(insns)
    compared = {k for code, _jt, _jf, k in insns if code == 0x15}
    assert {table["mount"], table["unshare"], table["ptrace"], table["clone3"]} <= compared
    assert len(insns) < 256


def test_unknown_machine_is_refused() -> None:
    with pytest.raises(SpecError, match="known: x86_64, aarch64"):
        seccomp.program("sparc64")


def test_cgroup_v1_limits_and_counters(tmp_path: Path) -> None:
    for controller in ("memory", "pids"):
        (tmp_path / controller).mkdir()
        (tmp_path / controller / "cgroup.procs").touch()
    # A fake hierarchy: mkdir makes no control files, so create them the kernel would.
    limits = JobLimits(memory_bytes=1 << 30, processes=64)
    for controller in ("memory", "pids"):
        group = tmp_path / controller / "mlaas4hep" / "job-x"
        group.mkdir(parents=True)
        (group / "cgroup.procs").touch()
    group = cgroups.create("job-x", limits, root=tmp_path)
    assert group is not None
    assert (tmp_path / "memory/mlaas4hep/job-x/memory.limit_in_bytes").read_text() == str(1 << 30)
    assert (tmp_path / "pids/mlaas4hep/job-x/pids.max").read_text() == "64"
    assert not group.oom_killed()
    assert not group.pids_exhausted()
    (tmp_path / "memory/mlaas4hep/job-x/memory.oom_control").write_text(
        "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n"
    )
    (tmp_path / "pids/mlaas4hep/job-x/pids.events").write_text("max 3\n")
    assert group.oom_killed()
    assert group.pids_exhausted()
    assert len(group.procs_files) == 2


def test_no_cgroup_hierarchy_means_rlimit_backstops(tmp_path: Path) -> None:
    limits = JobLimits(memory_bytes=1 << 30, processes=64)
    assert cgroups.create("job-x", limits, root=tmp_path) is None
    pairs = dict(rlimits(limits, own_uid=True, cgroup=False))
    assert pairs[resource.RLIMIT_DATA] == 1 << 30
    assert pairs[resource.RLIMIT_NPROC] == 64
    shared = dict(rlimits(limits, own_uid=False, cgroup=True))
    assert resource.RLIMIT_DATA not in shared  # the cgroup counts memory exactly
    assert resource.RLIMIT_NPROC not in shared  # the service's own uid: not a job bound
    assert exit_reason(1, "BlockingIOError: [Errno 11] Resource temporarily unavailable",
                       limits).startswith("process limit 64 exceeded")  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0, reason="the ownership grant is for a root service")
def test_grant_gives_the_slot_its_attempt_dir_and_the_group_its_inputs(tmp_path: Path) -> None:
    out, inputs = tmp_path / "out", tmp_path / "in"
    out.mkdir()
    (inputs / "sub").mkdir(parents=True)
    (inputs / "sub" / "data.root").write_bytes(b"x")
    (inputs / "sub" / "data.root").chmod(0o600)
    (inputs / "link").symlink_to("/etc/shadow")
    grant(ROOT_SANDBOX, 2, out, (inputs,))
    assert (out.stat().st_uid, out.stat().st_gid) == (61002, 61000)
    st = (inputs / "sub" / "data.root").stat()
    assert st.st_gid == 61000
    assert st.st_mode & 0o777 == 0o640  # group-readable, still closed to others
    assert Path("/etc/shadow").stat().st_gid != 61000  # the link was not followed


def _run_filtered(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    sandbox = resolve(ExecutorSettings(sandbox="bwrap"))
    grant(sandbox, 0, tmp_path, ())
    with seccomp_pipe() as fd:
        cmd = wrap(sandbox, [sys.executable, "-c", code], SandboxPlan(tmp_path), slot=0,
                   seccomp_fd=fd)  # fmt: skip
        return subprocess.run(cmd, pass_fds=(fd,), capture_output=True, text=True, timeout=60,
                              check=False)  # fmt: skip


@pytest.mark.skipif(not CAN_SANDBOX, reason="needs bwrap and setpriv (apt-get install bubblewrap)")
def test_a_child_under_the_filter_gets_eperm_and_threads_still_work(tmp_path: Path) -> None:
    code = (
        "import ctypes, os, threading\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "r = libc.unshare(0x10000000); print('unshare', r, ctypes.get_errno())\n"
        "r = libc.mount(b'x', b'/tmp', b'tmpfs', 0, None); print('mount', r, ctypes.get_errno())\n"
        "t = threading.Thread(target=print, args=('thread',)); t.start(); t.join()\n"
        "pid = os.fork()\n"
        "os._exit(0) if pid == 0 else print('fork', os.waitpid(pid, 0)[1])\n"
    )
    done = _run_filtered(code, tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert f"unshare -1 {errno.EPERM}" in lines
    assert f"mount -1 {errno.EPERM}" in lines
    assert "thread" in lines  # clone3 -> ENOSYS, libc fell back to clone
    assert "fork 0" in lines


@pytest.mark.skipif(not CAN_SANDBOX, reason="needs bwrap and setpriv (apt-get install bubblewrap)")
def test_the_startup_probe_passes_on_this_host() -> None:
    sandbox = probe(resolve(ExecutorSettings(sandbox="bwrap")))
    assert sandbox.ready, sandbox.error


def test_empty_cgroups_of_lost_attempts_are_removed_later(tmp_path: Path) -> None:
    parent = tmp_path / "pids" / "mlaas4hep"
    (tmp_path / "pids").mkdir()
    (tmp_path / "pids" / "cgroup.procs").touch()
    old, busy, fresh = (parent / f"job-{n}-1" for n in ("old", "busy", "fresh"))
    for group in (old, busy, fresh):
        group.mkdir(parents=True)
    (busy / "cgroup.procs").touch()  # not empty: a live attempt's rmdir fails
    long_ago = time.time() - 3600
    for group in (old, busy):
        os.utime(group, (long_ago, long_ago))
    new = parent / "job-new-1"
    new.mkdir()
    (new / "cgroup.procs").touch()
    assert cgroups.create("job-new-1", JobLimits(memory_bytes=None, processes=8), tmp_path)
    assert not old.exists()
    assert busy.exists()
    assert fresh.exists()  # may be an attempt between mkdir and join


def test_job_output_is_read_in_bounded_pieces() -> None:
    import io

    from mlaas4hep.jobs.attempt import LINE_CAP, _lines

    stream = io.BytesIO(b"A" * (3 * LINE_CAP + 5) + b"\nshort\n")
    pieces = list(_lines(stream))
    assert max(len(p) for p in pieces) <= LINE_CAP
    assert b"".join(pieces) == b"A" * (3 * LINE_CAP + 5) + b"\nshort\n"


def test_merged_progress_metrics_are_capped() -> None:
    from mlaas4hep.jobs.progress import merge

    merged: dict[str, object] | None = None
    for i in range(100):
        merged = merge(merged, {"metrics": {f"m{i}_{j}": 1.0 for j in range(32)}})
    assert merged is not None
    assert len(merged["metrics"]) == 64  # type: ignore[arg-type]
    merged = merge(merged, {"metrics": {"m0_0": 2.0}})
    assert merged["metrics"]["m0_0"] == 2.0  # type: ignore[index]


def test_failure_reasons_carry_no_terminal_escapes() -> None:
    from mlaas4hep.config import JobLimits
    from mlaas4hep.jobs.limits import exit_reason

    reason = exit_reason(2, "boom\n\x1b[2J\x1b[31mred alert\x07\n", JobLimits())
    assert "\x1b" not in reason
    assert "\x07" not in reason
    assert "red alert" in reason
