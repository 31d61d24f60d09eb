"""Issue 17, item 4: one identity for the CLI and the UI, against a real ``mlaas4hep serve``.

* the README's path: ``mlaas4hep token --user alice --save`` (the real CLI), a job
  submitted with the saved token, then the UI's local sign-in as it comes: alice's job,
  not bob's;
* the name form is only for the service's own account on loopback: another account, a
  request claiming a remote client (``X-Forwarded-For``), and another account borrowing
  the owner's open connection through ``X-Forwarded-For: 127.0.0.1:PORT`` are refused;
* a pasted token: accepted when valid, refused with the validator's reason when expired or
  from a foreign issuer, and never written to the service log.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from security_server import SecServer, assert_no_leak

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "jobs"))
from jobs_helpers import pipeline_doc

from mlaas4hep.auth.local_issuer import LocalIssuer
from mlaas4hep.cli.token import DEFAULT_SCOPES
from mlaas4hep.config import MLAAS4HEP_ARGV


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SecServer, Path]]:
    """A real service whose CLI token file is a test path (not the runner's home)."""
    base = tmp_path_factory.mktemp("identity")
    # XDG_CONFIG_HOME, not MLAAS4HEP_TOKEN_FILE: the service reads MLAAS4HEP_* as settings.
    token_file = base / "config" / "mlaas4hep" / "token"
    env = {"XDG_CONFIG_HOME": str(base / "config")}
    server = SecServer(base / "data", fake=True, workers=1, extra_env=env).start()
    try:
        yield server, token_file
    finally:
        server.stop()


def _cli_token_save(server: SecServer, token_file: Path, user: str) -> str:
    """Run the README's ``mlaas4hep token --user USER --save``; the token it saved."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLAAS4HEP_")}
    env.update(MLAAS4HEP_DATA_DIR=str(server.data_dir), XDG_CONFIG_HOME=str(token_file.parents[1]))
    cmd = [*MLAAS4HEP_ARGV, "token", "--user", user, "--save"]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=60)
    return token_file.read_text().strip()


def _browser(server: SecServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30, follow_redirects=False)


def _csrf(browser: httpx.Client) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', browser.get("/ui/login").text)
    assert found
    return found.group(1)


def _submit(server: SecServer, token: str, name: str) -> str:
    with httpx.Client(base_url=server.url, timeout=60) as api:
        r = api.post(
            "/api/v1/jobs",
            json=pipeline_doc(name),
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 201, r.text
        job_id: str = r.json()["id"]
        return job_id


def test_the_readme_path_shows_alices_jobs_in_the_ui(service: tuple[SecServer, Path]) -> None:
    server, token_file = service
    alice = _cli_token_save(server, token_file, "alice")
    mine = _submit(server, alice, "alices-job")
    theirs = _submit(server, LocalIssuer(server.data_dir).mint("bob", DEFAULT_SCOPES), "bobs")
    with _browser(server) as browser:
        page = browser.get("/ui/login").text
        assert 'value="alice"' in page
        r = browser.post("/ui/login/local", data={"csrf_token": _csrf(browser), "next": ""})
        assert r.status_code == 303, r.text
        jobs = browser.get("/ui/jobs")
        assert jobs.status_code == 200
        assert f"/ui/jobs/{mine}" in jobs.text
        assert f"/ui/jobs/{theirs}" not in jobs.text
        assert "No jobs yet" not in jobs.text
        assert browser.get(f"/ui/jobs/{theirs}").status_code == 404
    assert_no_leak(server, page, jobs.text)
    assert server.healthy()


@pytest.mark.parametrize("forwarded", ["203.0.113.9", "203.0.113.9, 127.0.0.1", "[2001:db8::1]"])
def test_a_forwarded_remote_client_cannot_choose_a_name(
    service: tuple[SecServer, Path], forwarded: str
) -> None:
    """A proxy on loopback forwarding a remote browser (uvicorn trusts 127.0.0.1's
    ``X-Forwarded-For``): no name form, and its POST is a 403."""
    server, _ = service
    headers = {"X-Forwarded-For": forwarded}
    with _browser(server) as browser:
        page = browser.get("/ui/login", headers=headers)
        assert 'action="/ui/login/local"' not in page.text
        form = {"csrf_token": _csrf(browser), "next": "/ui/jobs", "user": "alice"}
        r = browser.post("/ui/login/local", data=form, headers=headers)
        assert r.status_code == 403, r.text
        assert "mlaas4hep_session" not in r.headers.get("set-cookie", "")
    assert server.healthy()


def _post_as(uid: int, port: int, body: bytes, extra: bytes = b"") -> bytes:
    """POST /ui/login/local from a forked child running as *uid*; the status line."""
    request = (
        b"POST /ui/login/local HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        + extra
        + b"Cookie: mlaas4hep_csrf=t0123456789abcdefghijk\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
    )
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
                sock.sendall(request)
                os.write(write, sock.recv(64).split(b"\r\n")[0])
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        line = f.read()
    os.waitpid(pid, 0)
    return line


def test_another_account_cannot_choose_a_name_nor_borrow_the_owners_socket(
    service: tuple[SecServer, Path],
) -> None:
    """Another account on the host (and a job's slot uid) gets a 403 from the name form,
    also when it names, in ``X-Forwarded-For``, the port of a connection the service's own
    account holds open (``/proc/net/tcp`` is world-readable, so it can find one)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another account (CI runs as root)")
    server, _ = service
    body = b"csrf_token=t0123456789abcdefghijk&next=%2Fui%2Fjobs&user=alice"
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as owners:
        # The owner's browser: a keep-alive connection of the service's uid.
        owners.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert owners.recv(64).startswith(b"HTTP/1.1 200")
        owner_port = owners.getsockname()[1]
        for uid in (65534, 61000):
            status = _post_as(uid, server.port, body)
            assert status.startswith(b"HTTP/1.1 403"), status
            borrowed = f"X-Forwarded-For: 127.0.0.1:{owner_port}\r\n".encode()
            status = _post_as(uid, server.port, body, borrowed)
            assert status.startswith(b"HTTP/1.1 403"), status
    # The service's own account, directly: signed in as the name it chose.
    status = _post_as(os.geteuid(), server.port, body)
    assert status.startswith(b"HTTP/1.1 303"), status
    assert server.healthy()


def test_pasted_tokens_on_the_real_service(service: tuple[SecServer, Path]) -> None:
    server, _ = service
    issuer = LocalIssuer(server.data_dir)
    alice = issuer.mint("alice", DEFAULT_SCOPES)
    mine = _submit(server, alice, "pasted")
    foreign = LocalIssuer(server.data_dir.parent / "evil", issuer="https://evil.example/iss")
    refused = {
        "token issuer is not trusted": foreign.mint("alice", DEFAULT_SCOPES),
        "malformed token": "garbage-" + alice[:40],
        "token expired": _expired(server, "alice"),
    }
    answers = []
    with _browser(server) as browser:
        for reason, token in refused.items():
            form = {"csrf_token": _csrf(browser), "next": "/ui/jobs", "token": token}
            r = browser.post("/ui/login/token", data=form)
            assert r.status_code == 401, (reason, r.status_code)
            assert reason in r.text
            assert token not in r.text
            assert "mlaas4hep_session" not in r.headers.get("set-cookie", "")
            answers.append(r.text)
        form = {"csrf_token": _csrf(browser), "next": "/ui/jobs", "token": alice}
        r = browser.post("/ui/login/token", data=form)
        assert r.status_code == 303
        assert f"/ui/jobs/{mine}" in browser.get("/ui/jobs").text
    log = server.log_text()
    for token in (alice, *refused.values()):
        assert token not in log  # never logged
    assert_no_leak(server, *answers)
    assert server.healthy()


def _expired(server: SecServer, user: str) -> str:
    import time
    import uuid

    import jwt

    issuer = LocalIssuer(server.data_dir)
    pem = (server.data_dir / "auth" / "local-issuer-key.pem").read_bytes()
    now = int(time.time())
    claims = {
        "iss": issuer.issuer,
        "sub": user,
        "aud": issuer.audience,
        "iat": now - 7200,
        "nbf": now - 7200,
        "exp": now - 3600,
        "jti": str(uuid.uuid4()),
        "scope": " ".join(DEFAULT_SCOPES),
        "wlcg.ver": "1.0",
    }
    return jwt.encode(claims, pem, algorithm="ES256", headers={"kid": issuer.kid, "typ": "at+jwt"})
