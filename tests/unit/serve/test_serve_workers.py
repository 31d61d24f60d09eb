"""Inference worker processes: the restart decision, the supervisor on tiny children, the
settings and the command line (the real service: tests/integration/test_inference_workers.py)."""

from __future__ import annotations

import io
import sys
import threading
import time
from pathlib import Path

import pytest

from mlaas4hep.cli import build_parser
from mlaas4hep.cli.serve import settings_from
from mlaas4hep.errors import SpecError, Unavailable
from mlaas4hep.serve.settings import InferenceSettings
from mlaas4hep.serve.workers import (
    RestartPolicy,
    Supervisor,
    listen_socket,
    reserve_reuseport,
    uvicorn_log_config,
)


def test_restart_policy_backs_off_then_gives_up_on_a_crash_loop() -> None:
    policy = RestartPolicy(min_uptime_s=10, base_delay_s=0.5, max_delay_s=2, max_early_exits=4)
    assert policy.exited(0, uptime_s=60) == 0.0
    assert [policy.exited(0, 1) for _ in range(3)] == [0.5, 1.0, 2.0]
    assert policy.exited(1, 1) == 0.5  # per worker
    assert policy.exited(0, 1) is None
    policy = RestartPolicy(max_early_exits=3)
    policy.exited(0, 1)
    assert policy.exited(0, 30) == 0.0  # a worker that ran long enough starts afresh
    assert policy.exited(0, 1) == 0.5


CHILD = """
import signal, sys, time
line = sys.stdin.readline()
print("child", sys.argv[-1], line.strip(), flush=True)
if sys.argv[-1] == "1" and line.strip() == "crash":
    sys.exit(3)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(0.05)
"""


def _supervisor(payload: bytes, out: io.StringIO, exits: list[int]) -> Supervisor:
    return Supervisor(
        [sys.executable, "-c", CHILD],
        2,
        payload,
        policy=RestartPolicy(min_uptime_s=5, base_delay_s=0.05, max_early_exits=3),
        on_exit=exits.append,
        grace_s=5,
        out=out,
    )


def test_supervisor_stops_every_child_on_request() -> None:
    out, exits = io.StringIO(), []
    supervisor = _supervisor(b"hello", out, exits)
    runner = threading.Thread(target=lambda: exits.append(supervisor.run(tick_s=0.05)))
    runner.start()
    deadline = time.monotonic() + 10
    while len(supervisor.pids) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    pids = supervisor.pids
    supervisor.request_stop()
    runner.join(timeout=10)
    assert sorted(exits[:2]) == sorted(pids)  # on_exit ran for each
    assert exits[2] == 0
    assert "inference worker 1 started" in out.getvalue()


def test_supervisor_gives_up_on_a_worker_that_keeps_crashing() -> None:
    out, exits = io.StringIO(), []
    status = _supervisor(b"crash", out, exits).run(tick_s=0.02)
    assert status == 1
    assert out.getvalue().count("inference worker 1 (pid") == 3
    assert "giving up: it keeps failing" in out.getvalue()
    assert len(exits) == 3 + 1  # worker 1's three exits, then worker 0 stopped


def test_ports_are_checked_by_the_supervisor() -> None:
    with listen_socket("127.0.0.1", 0) as http:
        port = http.getsockname()[1]
        with pytest.raises(Unavailable, match="is the port taken"):
            listen_socket("127.0.0.1", port)
        with pytest.raises(Unavailable, match="gRPC"):
            reserve_reuseport("127.0.0.1", port)
    with reserve_reuseport("127.0.0.1", 0) as held:
        second = reserve_reuseport("127.0.0.1", held.getsockname()[1])  # workers join it
        second.close()


def test_log_lines_carry_the_worker() -> None:
    config = uvicorn_log_config("[inference worker 1 pid 7]")
    assert config["formatters"]["access"]["fmt"].startswith("[inference worker 1 pid 7] ")
    assert "mlaas4hep" in config["loggers"]


def test_settings_workers_and_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert InferenceSettings(repository=tmp_path).threads == 4
    assert InferenceSettings(repository=tmp_path, workers=4).threads == 2
    assert InferenceSettings(repository=tmp_path, workers=16).threads == 1
    assert InferenceSettings(repository=tmp_path, workers=4, intra_op_threads=3).threads == 3
    with pytest.raises(SpecError, match=r"inference\.workers"):
        InferenceSettings.from_mapping({"workers": 0}, tmp_path)


def _args(*argv: str) -> object:
    full = ["serve", *argv]
    return build_parser(full).parse_args(full)


def test_inference_workers_option(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLAAS4HEP_DATA_DIR", str(tmp_path))
    args = _args("--only", "inference", "--inference-workers", "3", "--workers", "5")
    settings = settings_from(args)  # type: ignore[arg-type]
    assert settings.inference["workers"] == 3
    assert settings.executor.workers == 5  # --workers keeps its meaning: jobs at once
    with pytest.raises(SpecError, match="needs --only inference"):
        settings_from(_args("--inference-workers", "2"))  # type: ignore[arg-type]
    monkeypatch.setenv("MLAAS4HEP_INFERENCE__WORKERS", "4")  # shared by every role
    assert settings_from(_args("--only", "api")).inference["workers"] == 1  # type: ignore[arg-type]
    assert settings_from(_args("--only", "inference")).inference["workers"] == 4  # type: ignore[arg-type]
