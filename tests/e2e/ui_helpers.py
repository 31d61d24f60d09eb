"""Helpers of the browser tests: the ``mlaas4hep serve`` process and screenshot publishing."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mlaas4hep.config import MLAAS4HEP_ARGV
from mlaas4hep.loopback import free_port

CHROMIUM = os.environ.get("MLAAS4HEP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class UiServer:
    """One ``mlaas4hep serve`` process."""

    data_dir: Path
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(data_dir: Path) -> UiServer:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLAAS4HEP_")}
    env.update(
        {
            "MLAAS4HEP_EXECUTOR__WORKERS": "1",
            "MLAAS4HEP_EXECUTOR__HEARTBEAT_S": "0.3",
            "MLAAS4HEP_EXECUTOR__POLL_S": "0.1",
            "MLAAS4HEP_EXECUTOR__CANCEL_GRACE_S": "1",
            "MLAAS4HEP_EXECUTOR__LEASE_S": "5",
            "MLAAS4HEP_UI__LOCAL_USER": "physicist",
        }
    )
    log = data_dir.parent / f"server-{port}.log"
    with log.open("ab") as out:
        cmd = [*MLAAS4HEP_ARGV, "serve", "--port", str(port), "--data-dir", str(data_dir)]
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=out)
    server = UiServer(data_dir, port, proc, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlaas4hep serve exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    pytest.fail(f"mlaas4hep serve did not answer:\n{log.read_text()[-3000:]}")


def publish_screenshot(path: Path) -> None:
    """Copy a key screenshot to ``$MLAAS4HEP_UI_SCREENSHOTS`` (docs/img/ui) when set."""
    target = os.environ.get("MLAAS4HEP_UI_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)
