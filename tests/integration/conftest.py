"""Real servers for the integration tests, started on 127.0.0.1.

``xrootd_server``: Debian's ``xrootd`` binary serving a fresh directory, once per session.
Put files in with ``server.put(path)`` (returns the ``root://`` URL). The tests are skipped,
with the reason printed, only when the binary is not installed.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlaas4hep.loopback import free_port, give_to_xrootd, listening, xrootd_command


@dataclass(frozen=True)
class XRootDServer:
    """A running xrootd: ``url`` is ``root://127.0.0.1:PORT``, ``root`` the served directory."""

    url: str
    port: int
    root: Path

    def put(self, source: Path, name: str | None = None) -> str:
        """Copy ``source`` into the served directory and return its ``root://`` URL."""
        target = self.root / (name or source.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        target.chmod(0o644)  # the server may run as an unprivileged user
        return self.url_for(target.relative_to(self.root).as_posix())

    def url_for(self, relative: str) -> str:
        return f"{self.url}//{relative.lstrip('/')}"


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    if listening(port, proc):
        return
    text = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
    proc.kill()
    pytest.fail(f"xrootd did not start on port {port} (exit {proc.poll()}):\n{text}")


@pytest.fixture(scope="session")
def xrootd_server() -> Iterator[XRootDServer]:
    # Not tmp_path_factory: its directories are 0700 and the server user must read them.
    base = Path(tempfile.mkdtemp(prefix="mlaas4hep-xrootd-"))
    base.chmod(0o755)
    data, admin = base / "data", base / "admin"
    data.mkdir(mode=0o755)
    admin.mkdir(mode=0o755)
    give_to_xrootd(admin)
    port = free_port()
    config = base / "xrootd.cfg"
    config.write_text(
        f"all.export /\nxrd.port {port}\nall.adminpath {admin}\nall.pidpath {admin}\n"
        f"oss.localroot {data}\n"
    )
    try:
        cmd = xrootd_command(config, "mlaas4hep", admin / "xrootd.log")
    except FileNotFoundError as exc:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(str(exc))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # The log goes to ADMIN/NAME/xrootd.log with -n; look in both places on failure.
        _wait_listening(proc, port, admin / "mlaas4hep" / "xrootd.log")
        yield XRootDServer(f"root://127.0.0.1:{port}", port, data)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(base, ignore_errors=True)
