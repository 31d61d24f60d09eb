"""Several inference processes behind one address: a supervisor and its workers.

``mlaas4hep serve --only inference --inference-workers N`` runs this supervisor. It binds
the HTTP listening socket once and hands the same socket to every worker (each worker's
uvicorn accepts from it), reserves the gRPC port, and starts N fresh interpreters
(never ``fork``: gRPC and ONNX Runtime threads do not survive one). Each worker loads its
own ONNX Runtime sessions and polls the model repository itself, so a published version
reaches every worker within one poll interval.

::

    supervisor ── HTTP socket (bound once, inherited) ──► worker 0 … N-1: uvicorn + app
       │  gRPC port reserved (SO_REUSEPORT) ─────────────► each: grpc.aio, SO_REUSEPORT
       │  settings (JSON line on stdin; stdin EOF = supervisor gone, worker stops)
       │  PROMETHEUS_MULTIPROC_DIR: /metrics sums the counters of every worker
       └─ a worker that exits is started again (RestartPolicy); SIGTERM/SIGINT stop all

Why one shared HTTP socket rather than SO_REUSEPORT for HTTP too: connections queued on a
worker's own reuseport socket are reset when that worker dies, and any process of the
same user could join the port; a shared socket keeps its queue across a worker restart.
grpcio binds its own sockets, so gRPC needs SO_REUSEPORT (``grpc.so_reuseport`` is on
when ``inference.workers > 1``); the supervisor holds a bound, not listening, socket on
that port so that the port is checked once and stays ours while workers restart.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mlaas4hep.errors import Unavailable

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


# ---- the restart decision (pure) ------------------------------------------------------


@dataclass
class RestartPolicy:
    """When to start an exited worker again, from how long it ran.

    A worker that ran at least ``min_uptime_s`` is restarted at once. One that exits
    sooner is restarted after ``base_delay_s``, doubled per consecutive early exit (at most
    ``max_delay_s``); after ``max_early_exits`` early exits in a row it is a crash loop
    (bad settings, a broken repository) and ``exited`` returns None: the supervisor stops,
    and the container runtime or the operator sees a failed process.
    """

    min_uptime_s: float = 10.0
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_early_exits: int = 5
    _early: dict[int, int] = field(default_factory=dict)

    def exited(self, index: int, uptime_s: float) -> float | None:
        """Seconds to wait before restarting worker *index*, or None to give up."""
        if uptime_s >= self.min_uptime_s:
            self._early[index] = 0
            return 0.0
        early = self._early.get(index, 0) + 1
        self._early[index] = early
        if early >= self.max_early_exits:
            return None
        return float(min(self.max_delay_s, self.base_delay_s * 2 ** (early - 1)))


# ---- sockets ---------------------------------------------------------------------------


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def listen_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """The HTTP listening socket every worker accepts from (port 0: any free port)."""
    host = host.strip("[]")
    try:
        return socket.create_server((host, port), family=_family(host), backlog=backlog)
    except OSError as exc:
        msg = f"cannot listen for HTTP on {host}:{port}: {exc.strerror}; is the port taken?"
        raise Unavailable(msg) from exc


def reserve_reuseport(host: str, port: int) -> socket.socket:
    """A bound, not listening, SO_REUSEPORT socket on *host:port* (port 0: a free one).

    It fails now if another program holds the port, and keeps the port while workers
    (which bind it with SO_REUSEPORT too) restart; a socket that does not listen takes
    no connections.
    """
    host = host.strip("[]")
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        msg = f"cannot listen for gRPC on {host}:{port}: {exc.strerror}; is the port taken?"
        raise Unavailable(msg) from exc
    return sock


@contextlib.contextmanager
def metrics_dir(environ: Mapping[str, str]) -> Iterator[Path]:
    """The Prometheus multiprocess directory: the operator's ``PROMETHEUS_MULTIPROC_DIR``
    (emptied of old values, as prometheus_client requires) or a fresh one removed after."""
    given = environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for old in path.glob("*.db"):
            old.unlink()
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="mlaas4hep-metrics-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ---- the supervisor --------------------------------------------------------------------


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restart_at: float | None = None


class Supervisor:
    """Run *count* copies of *argv* (``argv + [index]``), restart them, stop them.

    Each worker gets *payload* as the first line of its stdin; the pipe stays open, so a
    worker sees EOF when the supervisor is gone (even killed) and stops itself.
    *on_exit(pid)* runs after a worker exited (e.g. to drop its live metrics).
    """

    def __init__(
        self,
        argv: Sequence[str],
        count: int,
        payload: bytes,
        *,
        pass_fds: Sequence[int] = (),
        env: Mapping[str, str] | None = None,
        policy: RestartPolicy | None = None,
        on_exit: Callable[[int], None] = lambda pid: None,
        grace_s: float = 30.0,
        out: IO[str] = sys.stdout,
    ) -> None:
        self._argv = list(argv)
        self._workers = [_Worker(i) for i in range(count)]
        self._payload = payload.rstrip(b"\n") + b"\n"
        self._pass_fds = tuple(pass_fds)
        self._env = dict(os.environ if env is None else env)
        self._policy = policy or RestartPolicy()
        self._on_exit = on_exit
        self._grace_s = grace_s
        self._out = out
        self._stop = threading.Event()

    def request_stop(self, *_: object) -> None:
        """Stop every worker and return from ``run`` (signal-handler safe)."""
        self._stop.set()

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers if w.proc is not None]

    def run(self, tick_s: float = 0.2) -> int:
        """Start the workers, keep them running until ``request_stop``; 0, or 1 after a
        crash loop."""
        for worker in self._workers:
            self._start(worker)
        status = 0
        try:
            while not self._stop.wait(tick_s):
                if not self._check():
                    status = 1
                    break
        finally:
            self._stop_all()
        return status

    def _say(self, text: str) -> None:
        print(f"mlaas4hep: {text}", file=self._out, flush=True)

    def _start(self, worker: _Worker) -> None:
        proc = subprocess.Popen(
            [*self._argv, str(worker.index)],
            stdin=subprocess.PIPE,
            pass_fds=self._pass_fds,
            env=self._env,
        )
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it died at once: _check sees it
            proc.stdin.write(self._payload)
            proc.stdin.flush()
        worker.proc, worker.started, worker.restart_at = proc, time.monotonic(), None
        self._say(f"inference worker {worker.index} started (pid {proc.pid})")

    def _check(self) -> bool:
        now = time.monotonic()
        for worker in self._workers:
            proc = worker.proc
            if proc is not None and proc.poll() is not None:
                self._reap(worker)
                delay = self._policy.exited(worker.index, now - worker.started)
                self._say(
                    f"inference worker {worker.index} (pid {proc.pid}) exited with "
                    f"{proc.returncode}; "
                    + ("giving up: it keeps failing" if delay is None else "restarting")
                )
                if delay is None:
                    return False
                worker.restart_at = now + delay
            if worker.proc is None and worker.restart_at is not None and now >= worker.restart_at:
                self._start(worker)
        return True

    def _reap(self, worker: _Worker) -> None:
        proc = worker.proc
        assert proc is not None
        worker.proc = None
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        self._on_exit(proc.pid)

    def _stop_all(self) -> None:
        running = [w for w in self._workers if w.proc is not None]
        for worker in running:
            assert worker.proc is not None
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._grace_s
        for worker in running:
            assert worker.proc is not None
            try:
                worker.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._say(f"inference worker {worker.index} did not stop in time: killed")
                worker.proc.kill()
                worker.proc.wait()
            self._reap(worker)


# ---- the worker side -------------------------------------------------------------------


def read_payload(stream: IO[bytes]) -> bytes:
    """The supervisor's first line (the settings), then watch for its end: when the pipe
    closes, the supervisor is gone and this worker stops itself (SIGTERM, graceful)."""
    line = stream.readline()
    if not line:
        msg = "an inference worker is started by `serve --only inference`, not by hand"
        raise Unavailable(msg)

    def watch() -> None:
        while stream.read(4096):
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()
    return line


def uvicorn_log_config(prefix: str) -> dict[str, Any]:
    """uvicorn's logging config with *prefix* before every line, and the service's own
    ``mlaas4hep`` loggers (e.g. "V2 gRPC listening") at INFO through the same handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    for formatter in config["formatters"].values():
        formatter["fmt"] = f"{prefix} {formatter['fmt']}"
    config["loggers"]["mlaas4hep"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config
