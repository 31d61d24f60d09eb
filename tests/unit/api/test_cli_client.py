"""The CLI client against the real ASGI app through httpx's transport: URL/token
resolution, problem details turned into the project's exceptions, safe downloads."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from api_helpers import make_client

from mlaas4hep.cli.download import safe_relative
from mlaas4hep.client import Client
from mlaas4hep.client.http import ServiceError, resolve
from mlaas4hep.errors import NotFound, PermissionDenied, SpecError, UnsafeArchiveError


def test_resolution_order(tmp_path: Path) -> None:
    cfg = tmp_path / "client.yaml"
    cfg.write_text("url: http://from-file:1/\ntoken: file-token\n")
    env = {"MLAAS4HEP_CLIENT_CONFIG": str(cfg)}
    assert resolve(None, None, env) == ("http://from-file:1", "file-token")
    env["MLAAS4HEP_URL"] = "http://from-env:2"
    env["MLAAS4HEP_TOKEN"] = "env-token"  # noqa: S105 (a test value)
    assert resolve(None, None, env) == ("http://from-env:2", "env-token")
    assert resolve("http://flag:3", "flag-token", env) == ("http://flag:3", "flag-token")


def test_client_maps_problems_to_exceptions(tmp_path: Path) -> None:
    with make_client(tmp_path, run_executor=False) as tc:
        transport = httpx.MockTransport(lambda req: _forward(tc, req))
        alice = Client("http://test", "token-alice", transport=transport)
        job = alice.submit(b"name: x\n", [])
        assert alice.job(job["id"])["state"] == "queued"
        assert alice.jobs(["queued"])["items"][0]["id"] == job["id"]
        with pytest.raises(SpecError, match="not valid YAML"):
            alice.submit(b"name: [", [])
        bob = Client("http://test", "token-bob", transport=transport)
        with pytest.raises(NotFound, match=job["id"]):
            bob.cancel(job["id"])
        reader = Client("http://test", "token-reader", transport=transport)
        with pytest.raises(PermissionDenied, match=r"compute\.create"):
            reader.submit(b"name: x\n", [])
        assert alice.cancel(job["id"])["state"] == "cancelled"


def _forward(tc: object, request: httpx.Request) -> httpx.Response:
    r = tc.request(  # type: ignore[attr-defined]
        request.method,
        request.url.raw_path.decode(),
        content=request.content,
        headers=dict(request.headers),
    )
    return httpx.Response(r.status_code, headers=r.headers, content=r.content)


def test_unreachable_service_says_what_to_do() -> None:
    client = Client("http://127.0.0.1:9", "t")
    with pytest.raises(ServiceError, match="mlaas4hep serve"):
        client.job("0" * 32)


def test_download_names_stay_inside_the_target() -> None:
    assert safe_relative("plots/roc.png") == Path("plots/roc.png")
    for bad in ("../x", "/etc/passwd", "a/../../b"):
        with pytest.raises(UnsafeArchiveError):
            safe_relative(bad)
