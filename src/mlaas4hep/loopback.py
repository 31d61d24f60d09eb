"""Servers started on 127.0.0.1 by the demo, the benchmarks and the tests.

A free port, waiting until a process listens on it, and how to run Debian's ``xrootd``
(its command line and the account it runs as): one implementation for every place that
starts a real server on loopback.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def listening(
    port: int, proc: subprocess.Popen[bytes] | None = None, timeout_s: float = 20.0
) -> bool:
    """Wait until something accepts connections on ``HOST:port``.

    False when *proc* (the server expected to listen) exits first or *timeout_s* passes;
    the caller says what failed and where its log is.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def xrootd_user() -> str | None:
    """The account ``xrootd -R`` drops to when we are root (xrootd refuses to run as root).

    None when not root. Raises LookupError when neither ``xrootd`` nor ``nobody`` exists.
    """
    if os.geteuid() != 0:
        return None
    for user in ("xrootd", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return user
    msg = "running as root but neither user 'xrootd' nor 'nobody' exists for xrootd -R"
    raise LookupError(msg)


def xrootd_command(config: Path, name: str, log: Path | None = None) -> list[str]:
    """The ``xrootd`` command line serving *config* as instance *name*.

    As root it drops to ``xrootd_user()``. Raises FileNotFoundError when ``xrootd`` is not
    installed and the LookupError of ``xrootd_user``.
    """
    binary = shutil.which("xrootd")
    if binary is None:
        msg = "the xrootd server is not installed (Debian: apt-get install xrootd-server)"
        raise FileNotFoundError(msg)
    argv = [binary, "-c", str(config), "-n", name]
    if log is not None:
        argv += ["-l", str(log)]
    user = xrootd_user()
    return argv + (["-R", user] if user else [])


def give_to_xrootd(path: Path) -> Path:
    """Make the account ``xrootd`` runs as the owner of *path* (its admin or cache
    directory, its private key); nothing to do when we are not root."""
    user = xrootd_user()
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path
