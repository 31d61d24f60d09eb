"""A real Dask cluster on 127.0.0.1: the ``dask scheduler`` and ``dask worker`` commands.

Each process is started by its CLI (``--nthreads 1 --no-dashboard``) on free ports and
killed in teardown, whatever the test did. Workers run without a nanny, so the process
the test kills *is* the worker (a nanny would restart it and hide the loss).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mlaas4hep.loopback import free_port, listening

DASK = str(Path(sys.executable).with_name("dask"))
START_TIMEOUT_S = 60.0


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    if listening(port, proc, START_TIMEOUT_S):
        return
    if proc.poll() is not None:
        msg = f"dask process exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        raise RuntimeError(msg)
    msg = f"nothing listens on 127.0.0.1:{port} after {START_TIMEOUT_S:g} s:\n{log.read_text()}"
    raise RuntimeError(msg)


@dataclass
class LocalCluster:
    """Scheduler and workers as separate processes; ``workers`` maps address -> process."""

    root: Path
    env: dict[str, str]
    address: str = ""
    scheduler: subprocess.Popen[bytes] | None = None
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _started: int = 0

    def start(self, n_workers: int) -> LocalCluster:
        port = free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        self.scheduler = self._spawn(
            "scheduler",
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            port,
        )
        for _ in range(n_workers):
            self.add_worker()
        return self

    def add_worker(self) -> str:
        """Start one more worker; returns its address."""
        self._started += 1
        port = free_port()
        name = f"w{self._started}"
        local = self.root / name
        local.mkdir(parents=True, exist_ok=True)
        argv = [
            DASK, "worker", self.address, "--nthreads", "1", "--no-dashboard", "--no-nanny",
            "--host", "127.0.0.1", "--worker-port", str(port), "--name", name,
            "--local-directory", str(local),
        ]  # fmt: skip
        address = f"tcp://127.0.0.1:{port}"
        self.workers[address] = self._spawn(name, argv, port)
        return address

    def kill_worker(self, address: str) -> None:
        """SIGKILL the worker at *address* (its tasks are lost with it)."""
        proc = self.workers.pop(address)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        procs = [*self.workers.values(), *([self.scheduler] if self.scheduler else [])]
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.workers.clear()
        self.scheduler = None
        shutil.rmtree(self.root, ignore_errors=True)

    def _spawn(self, name: str, argv: list[str], port: int) -> subprocess.Popen[bytes]:
        log = self.root / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env}, cwd=self.root,
            )  # fmt: skip
        try:
            _wait_port(port, proc, log)
        except BaseException:
            proc.kill()
            proc.wait(timeout=10)
            raise
        return proc
