"""The real service the security suite attacks: :class:`SecServer` and the leak check.

A real ``mlaas4hep serve`` (job API, V2 and TFaaS inference, web UI, the embedded local
issuer, the real job command in the real sandbox). Imported by the tests as
``from security_server import ...`` (not from ``conftest``, whose module name is shared
by every test directory).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from jobs_server import JobServer

from mlaas4hep.cli.token import DEFAULT_SCOPES

ADMIN_GROUP = "/mlaas/admin"
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class SecServer(JobServer):
    """A real service with the real job command; ``extra_env`` adds settings."""

    fake: bool = False
    sandbox: str = "bwrap"
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = super().env()
        env.update(self.extra_env)
        return env

    def headers(
        self, user: str, scopes: tuple[str, ...] = DEFAULT_SCOPES, groups: tuple[str, ...] = ()
    ) -> dict[str, str]:
        from mlaas4hep.auth.local_issuer import LocalIssuer

        token = LocalIssuer(self.data_dir).mint(user, scopes, groups=groups)
        return {"Authorization": f"Bearer {token}"}

    def client(self, user: str, **kw: Any) -> httpx.Client:
        """An HTTP client on the service root for *user* (``admin`` gets the admin group)."""
        groups = (ADMIN_GROUP,) if user == "admin" else ()
        return httpx.Client(
            base_url=self.url, headers=self.headers(user, groups=groups, **kw), timeout=120
        )

    def secrets(self) -> list[bytes]:
        """Byte strings that must never leave the service: the issuer's private key."""
        from cryptography.hazmat.primitives import serialization

        key_files = list((self.data_dir / "auth").glob("*key*.pem"))
        found: list[bytes] = []
        for path in key_files:
            pem = path.read_bytes()
            found.append(pem)
            body = b"".join(pem.splitlines()[1:-1])
            found.append(body[20:60])  # any long slice of the base64 body
            key = serialization.load_pem_private_key(pem, password=None)
            number = key.private_numbers().private_value  # type: ignore[union-attr]
            found.append(number.to_bytes(32, "big"))
            found.append(str(number).encode())
            found.append(format(number, "x").encode())
        return found

    def log_text(self) -> str:
        path = self.data_dir.parent / f"server-{self.port}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=10).status_code == 200
        except httpx.HTTPError:
            return False


def assert_no_leak(server: SecServer, *blobs: bytes | str) -> None:
    """No secret in any of *blobs*, in the service log, or in any job's output files."""
    secrets = server.secrets()
    haystacks: list[bytes] = [b.encode() if isinstance(b, str) else b for b in blobs]
    haystacks.append(server.log_text().encode())
    jobs = server.data_dir / "jobs"
    if jobs.exists():
        for path in jobs.rglob("*"):
            if path.is_file() and not path.is_symlink() and path.stat().st_size < 50_000_000:
                haystacks.append(path.read_bytes())
    for hay in haystacks:
        for secret in secrets:
            assert secret not in hay, "the issuer's private key leaked"


def wait_job(client: httpx.Client, job_id: str, timeout: float = 300) -> dict[str, Any]:
    """Poll job *job_id* until it ends; returns its record."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["state"] in TERMINAL:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
