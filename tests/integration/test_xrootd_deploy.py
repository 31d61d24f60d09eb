"""``deploy/xrootd/run.sh`` starts origin, proxy and XCache that serve the same bytes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from XRootD import client
from xrootd_servers import DEPLOY, new_base

from mlaas4hep.loopback import free_port, listening, xrootd_user

pytestmark = pytest.mark.xrootd
SERVICES = ("origin", "proxy", "xcache")


@pytest.fixture
def run_sh() -> Iterator[tuple[dict[str, str], Path]]:
    if shutil.which("xrootd") is None:
        pytest.skip("xrootd server binary not found; install Debian package 'xrootd-server'")
    base = new_base("mlaas4hep-xrd-runsh-")
    ports = {name: str(free_port()) for name in SERVICES}
    env = os.environ | {
        "XRD_BASE": str(base),
        "ORIGIN_PORT": ports["origin"],
        "PROXY_PORT": ports["proxy"],
        "CACHE_PORT": ports["xcache"],
        "PROXY_PERMIT": "127.0.0.1",
        "CACHE_ORIGIN": f"127.0.0.1:{ports['origin']}",
        "XRD_USER": xrootd_user() or "",
    }
    try:
        yield env, base
    finally:
        subprocess.run([DEPLOY / "run.sh", "stop"], env=env, capture_output=True, check=False)
        for name in SERVICES:  # whatever run.sh could not stop
            pidfile = base / name / "admin" / name / "xrootd.pid"
            if pidfile.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pidfile.read_text()), signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


def wait_listening(port: int) -> None:
    assert listening(port), f"nothing listens on {port}"


def read_all(url: str) -> bytes:
    handle = client.File()
    status, _ = handle.open(url, timeout=10)
    assert status.ok, (url, status.message)
    try:
        status, data = handle.read(timeout=10)
        assert status.ok, status.message
        return bytes(data)
    finally:
        handle.close(timeout=5)


def test_run_sh_starts_all_three(
    run_sh: tuple[dict[str, str], Path], sample_files: dict[str, Path]
) -> None:
    env, base = run_sh
    started = subprocess.run(
        [DEPLOY / "run.sh", "start"], env=env, capture_output=True, text=True, check=False
    )
    assert started.returncode == 0, started.stderr
    for name in SERVICES:  # -b returns once configured; give the listeners a moment
        wait_listening(int(env[f"{name.upper().replace('XCACHE', 'CACHE')}_PORT"]))
    data = base / "data"
    shutil.copyfile(sample_files["signal"], data / "signal.root")
    (data / "signal.root").chmod(0o644)
    status = subprocess.run(
        [DEPLOY / "run.sh", "status"], env=env, capture_output=True, text=True, check=False
    )
    assert status.stdout.count("running") == 3, status.stdout
    origin = f"root://127.0.0.1:{env['ORIGIN_PORT']}"
    expected = sample_files["signal"].read_bytes()
    for url in (
        f"{origin}//signal.root",
        f"root://127.0.0.1:{env['PROXY_PORT']}//{origin}//signal.root",
        f"root://127.0.0.1:{env['CACHE_PORT']}//signal.root",
    ):
        assert read_all(url) == expected
    stopped = subprocess.run(
        [DEPLOY / "run.sh", "stop"], env=env, capture_output=True, text=True, check=False
    )
    assert stopped.stdout.count("stopped") == 3, stopped.stdout
