"""A throw-away PostgreSQL server on 127.0.0.1 for the job store tests.

``initdb`` + ``pg_ctl`` as the ``postgres`` user (when run as root) in a temporary
directory, on a free port, trust authentication on loopback only. Skips, with the
reason printed, only when the server binaries are not installed (.ci/run installs them).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mlaas4hep.loopback import free_port, listening


def _bindir() -> Path | None:
    # Debian's versioned directory first: initdb, pg_ctl and postgres must match.
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server; yields a SQLAlchemy URL (``postgresql+psycopg://...``)."""
    bindir = _bindir()
    if bindir is None:
        msg = "PostgreSQL server binaries not found (apt-get install postgresql)"
        print(f"SKIP: {msg}")
        pytest.skip(msg)
    pytest.importorskip("psycopg", reason="pip install 'psycopg[binary]'")
    root = Path(tempfile.mkdtemp(prefix="mlaas4hep-pg-"))
    data = root / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        pg = pwd.getpwnam("postgres")
        os.chown(root, pg.pw_uid, pg.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    env = {**os.environ, "LC_ALL": "C"}
    subprocess.run(
        [
            *as_user,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "mlaas",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
        env=env,
    )
    opts = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=200"
    subprocess.run(
        [
            *as_user,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / "log"),
            "-o",
            opts,
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
        env=env,
    )
    try:
        subprocess.run(
            [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlaas", "jobs"],
            check=True,
            capture_output=True,
            env=env,
        )
        yield f"postgresql+psycopg://mlaas@127.0.0.1:{port}/jobs"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            env=env,
        )
        shutil.rmtree(root, ignore_errors=True)


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    """Block until something listens on 127.0.0.1:*port*."""
    if not listening(port, timeout_s=timeout):
        raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")
