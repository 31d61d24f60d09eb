"""Servers started on 127.0.0.1 by the demo, the benchmarks and the tests.

A free port, waiting until a process listens on it, and the account Debian's ``xrootd``
runs as: one implementation for every place that starts a real server on loopback.
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import time

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
