"""Pure helpers: progress parsing and ETA, the bwrap command line, worker liveness,
limit reasons."""

from __future__ import annotations

import os
import signal
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlaas4hep.config import JobLimits
from mlaas4hep.jobs import progress as prog
from mlaas4hep.jobs.limits import exit_reason, fmt_bytes, signal_reason
from mlaas4hep.jobs.recovery import make_worker_id, worker_is_dead
from mlaas4hep.jobs.sandbox import Sandbox, SandboxPlan, wrap


def test_progress_keeps_known_keys_with_the_right_types() -> None:
    line = (
        '{"phase": "train", "epoch": 2, "events": 10, "total": "x", "metrics": {"a": 1, "b": "no"}}'
    )
    assert prog.parse_line(line) == {
        "phase": "train",
        "epoch": 2,
        "events": 10,
        "metrics": {"a": 1.0},
    }
    assert prog.parse_line("plain log text") is None
    assert prog.parse_line("{not json") is None
    assert prog.parse_line('{"unknown": 1}') is None


@given(st.text())
def test_progress_parser_never_raises(text: str) -> None:
    prog.parse_line(text)


def test_merge_and_eta() -> None:
    p = prog.merge({"epoch": 1, "metrics": {"loss": 1.0}}, {"epoch": 2, "metrics": {"auc": 0.8}})
    assert p == {"epoch": 2, "metrics": {"loss": 1.0, "auc": 0.8}}
    assert prog.eta_seconds({"events": 25, "total": 100}, 100.0, 110.0) == 30.0
    # a quarter of the epochs, after the first pass: (1 - f) / f of the 10 s so far
    f = prog.PREPARE_WEIGHT + (1 - prog.PREPARE_WEIGHT - prog.FINISH_WEIGHT) / 4
    p = {"phase": "validate", "epoch": 1, "epochs": 4, "events": 100, "total": 100}
    assert prog.eta_seconds(p, 0, 10) == pytest.approx(10 * (1 - f) / f)
    assert prog.eta_seconds({"events": 0, "total": 100}, 0, 10) is None
    assert prog.eta_seconds(None, 0, 10) is None


def test_bwrap_line_isolates_by_default_and_shares_net_only_when_asked(tmp_path: object) -> None:
    plan = SandboxPlan(writable=tmp_path / "out", readable=(tmp_path / "in",))  # type: ignore[operator]
    sandbox = Sandbox(enabled=True, bwrap="/usr/bin/bwrap")
    cmd = wrap(sandbox, ["python", "job.py"], plan, slot=0, seccomp_fd=3)
    assert cmd[0] == "/usr/bin/bwrap"
    assert cmd[-2:] == ["python", "job.py"]
    assert "--unshare-net" in cmd
    assert "--die-with-parent" in cmd
    i = cmd.index("--bind")
    assert cmd[i + 1] == str(plan.writable)
    assert ["--ro-bind-try", str(plan.readable[0]), str(plan.readable[0])] == cmd[
        cmd.index(str(plan.readable[0])) - 1 : cmd.index(str(plan.readable[0])) + 2
    ]
    shared = wrap(sandbox, ["x"], SandboxPlan(writable=plan.writable, network=True), slot=0,
                  seccomp_fd=3)  # fmt: skip
    assert "--unshare-net" not in shared


def test_worker_liveness() -> None:
    me = make_worker_id()
    assert not worker_is_dead(me, frozenset({me}))
    assert not worker_is_dead(me)  # this process may run several executors: lease decides
    host = socket.gethostname()
    assert worker_is_dead(f"{host}:999999999:1:abc")  # no such pid
    parent = os.getppid()
    assert worker_is_dead(f"{host}:{parent}:1:abc")  # pid reused: start time differs
    assert not worker_is_dead("another-host:1:1:abc")  # unknown: wait for the lease
    assert not worker_is_dead("garbage")


def test_limit_reasons_read_like_advice() -> None:
    limits = JobLimits(cpu_s=60, file_size_bytes=2 * 1024**3, address_space_bytes=4 * 1024**3)
    assert fmt_bytes(4 * 1024**3) == "4 GiB"
    assert fmt_bytes(1536) == "1.5 KiB"
    assert signal_reason(-signal.SIGXCPU, limits) == "CPU time limit 60 s exceeded"
    assert signal_reason(-signal.SIGSEGV, limits).startswith("the job process crashed (SIGSEGV)")
    assert "out-of-memory" in signal_reason(-signal.SIGKILL, limits)
    assert exit_reason(1, "Traceback...\nMemoryError\n", limits) == (
        "memory limit 4 GiB exceeded (address space)"
    )
    assert exit_reason(2, "spec: bad tree 'X'\n", limits) == "spec: bad tree 'X'"
    assert exit_reason(3, "", limits) == "the job process exited with status 3; see its log"
