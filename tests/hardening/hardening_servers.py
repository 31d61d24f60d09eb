"""A real ``mlaas4hep serve`` process for the hardening tests, and how to watch it.

``Service.start(base, config)`` writes ``config`` as the service's YAML settings file, starts
the process on a free loopback port with its own ``TMPDIR`` (so the tests can check that
nothing is left in it) and waits until it answers. ``stop()`` terminates it (SIGKILL
after 30 s). ``resources()`` reads its resident memory and open descriptors with psutil.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from mlaas4hep.config import MLAAS4HEP_ARGV
from mlaas4hep.loopback import free_port

JOB_SCOPES = ("compute.create", "compute.read", "compute.cancel", "compute.modify")
MODEL_SCOPES = (
    "mlaas.infer",
    "storage.read:/models",
    "storage.create:/models",
    "storage.modify:/models",
)


@dataclass
class Service:
    """One ``mlaas4hep serve`` process; its data under ``base/data``, temp under ``base/tmp``."""

    base: Path
    config: dict[str, Any]
    only: str | None = None
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def tmp_dir(self) -> Path:
        return self.base / "tmp"

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Service:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        config_file = self.base / "service.yaml"
        config_file.write_text(yaml.safe_dump({"data_dir": str(self.data_dir), **self.config}))
        cmd = [*MLAAS4HEP_ARGV, "serve", "--config", str(config_file), "--port", str(self.port)]
        cmd += ["--only", self.only] if self.only else []
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLAAS4HEP_")}
        env["TMPDIR"] = str(self.tmp_dir)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 90.0) -> None:
        probe = "/v2/health/live" if self.only == "inference" else "/healthz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                break
            try:
                if httpx.get(self.url + probe, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        tail = self.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"mlaas4hep serve did not become ready on {self.url}:\n{tail}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def token(self, user: str, scopes: Iterable[str] = JOB_SCOPES) -> str:
        from mlaas4hep.auth.local_issuer import LocalIssuer

        return LocalIssuer(self.data_dir).mint(user, tuple(scopes))

    def headers(self, user: str = "alice", scopes: Iterable[str] = JOB_SCOPES) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user, scopes)}"}

    def resources(self) -> tuple[int, int]:
        """(resident bytes, open file descriptors) of the service process itself."""
        assert self.proc is not None
        ps = psutil.Process(self.proc.pid)
        return int(ps.memory_info().rss), ps.num_fds()

    def children(self) -> list[psutil.Process]:
        assert self.proc is not None
        return psutil.Process(self.proc.pid).children(recursive=True)


def files_under(root: Path) -> set[str]:
    """Every path below *root* (relative, as text), without following links."""
    if not root.exists():
        return set()
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}
