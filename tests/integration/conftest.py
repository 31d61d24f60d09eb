"""Real servers for the integration tests, started on 127.0.0.1.

``xrootd_server``: the origin of ``deploy/xrootd/origin.cfg`` (Debian's ``xrootd``) serving a
fresh directory, once per session. Put files in with ``server.put(path)`` (returns the
``root://`` URL). The tests are skipped, with the reason printed, only when the binary is
not installed.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from xrootd_servers import XRootDService, make_dir, new_base


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


@pytest.fixture(scope="session")
def xrootd_server() -> Iterator[XRootDServer]:
    """The origin of ``deploy/xrootd/origin.cfg`` serving a fresh directory."""
    base = new_base("mlaas4hep-xrootd-")
    data = make_dir(base / "data")
    origin = XRootDService("origin", "origin.cfg", base, {"XRD_DATA": str(data)})
    try:
        origin.start()
        yield XRootDServer(origin.url, origin.port, data)
    finally:
        origin.stop()
        shutil.rmtree(base, ignore_errors=True)
