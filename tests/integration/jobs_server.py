"""Start ``mlaas4hep serve`` as a real process for the job service integration tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pg import wait_for_port

from mlaas4hep.config import MLAAS4HEP_ARGV
from mlaas4hep.loopback import free_port

FAKE_JOB = Path(__file__).parents[1] / "unit" / "jobs" / "fake_job.py"
ALL_SCOPES = (
    "compute.create",
    "compute.read",
    "compute.cancel",
    "compute.modify",
    "storage.read:/nonexistent",  # the paths of jobs_helpers.pipeline_doc
)


@dataclass
class JobServer:
    """One ``mlaas4hep serve`` process; ``restart()`` keeps data dir, database and port."""

    data_dir: Path
    database_url: str | None = None
    sandbox: str = "auto"
    workers: int = 2
    fake: bool = True  # False: the real `mlaas4hep run`
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. MLAAS4HEP_INFERENCE__*
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLAAS4HEP_")}
        if self.fake:
            env["MLAAS4HEP_EXECUTOR__JOB_COMMAND"] = json.dumps([sys.executable, str(FAKE_JOB)])
            env["MLAAS4HEP_EXECUTOR__SANDBOX_RO_PATHS"] = json.dumps([str(FAKE_JOB.parent)])
        env.update(
            {
                "MLAAS4HEP_EXECUTOR__SANDBOX": self.sandbox,
                "MLAAS4HEP_EXECUTOR__LEASE_S": "2",
                "MLAAS4HEP_EXECUTOR__HEARTBEAT_S": "0.3",
                "MLAAS4HEP_EXECUTOR__POLL_S": "0.1",
                "MLAAS4HEP_EXECUTOR__CANCEL_GRACE_S": "1",
                "MLAAS4HEP_EXECUTOR__WORKERS": str(self.workers),
            }
        )
        if self.database_url:
            env["MLAAS4HEP_DATABASE_URL"] = self.database_url
        env.update(self.extra_env)
        return env

    def start(self) -> JobServer:
        log = (self.data_dir.parent / f"server-{self.port}.log").open("ab")
        cmd = [*MLAAS4HEP_ARGV, "serve", "--port", str(self.port)]
        cmd += ["--data-dir", str(self.data_dir)]
        self.proc = subprocess.Popen(cmd, env=self.env(), stdout=log, stderr=log)
        log.close()
        wait_for_port(self.port)
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill9()

    def token(self, user: str, scopes: tuple[str, ...] = ALL_SCOPES) -> str:
        from mlaas4hep.auth.local_issuer import LocalIssuer

        return LocalIssuer(self.data_dir).mint(user, scopes)
