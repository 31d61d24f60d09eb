"""Issue 15, item 9: the web UI's attacks replayed against a real ``mlaas4hep serve``.

* a job's ``evil.svg`` / ``evil.html`` artifacts: downloads with ``CSP: sandbox`` and
  ``nosniff`` on both the JSON API and the UI; only a PNG that is a PNG is inline;
* DNS rebinding: a foreign ``Host`` (or a foreign ``Origin`` on a POST) is refused on the
  UI, the API, the inference routes and the health routes, before any sign-in;
* sign-out revokes the session token server side (the old cookie and the same token as a
  bearer header both fail afterwards);
* a hostile dataset upload is parsed in a bounded, sandboxed worker: 4xx, the web
  process does not grow, the service stays healthy.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from security_server import SecServer, assert_no_leak, wait_job

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "jobs"))
from jobs_helpers import pipeline_doc

from mlaas4hep.data.samples import write_sample

PNG = b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR" + b"\0" * 40
SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg"><script>'
    b"fetch('/ui/logout',{method:'POST'})</script></svg>"
)
HTML = b"<html><script>document.title=document.cookie</script></html>"
SANDBOX_CSP = "default-src 'none'; sandbox"


def _served_with_safe_headers(r: httpx.Response) -> None:
    assert r.headers["content-security-policy"] == SANDBOX_CSP, r.headers
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.fixture(scope="module")
def artifacts_job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SecServer, str]]:
    """A real service running the fake job in the real sandbox; one succeeded job of
    alice's whose result directory then gets hostile files (what user code can write)."""
    server = SecServer(tmp_path_factory.mktemp("uisec") / "data", fake=True, workers=1).start()
    try:
        with server.client("alice") as alice:
            r = alice.post("/api/v1/jobs", json=pipeline_doc("artifacts"))
            assert r.status_code == 201, r.text
            job_id = r.json()["id"]
            assert wait_job(alice, job_id, timeout=120)["state"] == "succeeded"
        result = next((server.data_dir / "jobs").rglob("partial.txt")).parent
        (result / "evil.svg").write_bytes(SVG)
        (result / "evil.html").write_bytes(HTML)
        (result / "plot.png").write_bytes(PNG)
        (result / "fake.png").write_bytes(SVG)  # claims PNG, is SVG
        (result / 'we"ird name;.txt').write_bytes(b"x")
        yield server, job_id
    finally:
        server.stop()


@pytest.mark.parametrize("prefix", ["/api/v1/jobs", "/ui/jobs"])
def test_hostile_artifacts_are_sandboxed_downloads(
    artifacts_job: tuple[SecServer, str], prefix: str
) -> None:
    server, job_id = artifacts_job
    seen: list[bytes] = []
    for viewer in ("alice", "admin"):  # the admin viewing alice's job too
        with server.client(viewer) as c:
            for name in ("evil.svg", "evil.html", "fake.png"):
                r = c.get(f"{prefix}/{job_id}/artifacts/{name}")
                assert r.status_code == 200, r.text
                _served_with_safe_headers(r)
                assert r.headers["content-disposition"].startswith("attachment"), name
                assert r.headers["content-type"] == "application/octet-stream", name
                seen.append(r.content)
            r = c.get(f"{prefix}/{job_id}/artifacts/plot.png")
            _served_with_safe_headers(r)
            assert r.headers["content-type"] == "image/png"
            assert r.headers["content-disposition"].startswith("inline")
            r = c.get(f"{prefix}/{job_id}/artifacts/we%22ird%20name%3B.txt")
            assert r.status_code == 200
            _served_with_safe_headers(r)
            assert r.headers["content-disposition"] == 'attachment; filename="we_ird_name_.txt"'
    assert_no_leak(server, *seen)
    assert server.healthy()


def test_ui_pages_carry_a_csp_and_no_framing(artifacts_job: tuple[SecServer, str]) -> None:
    server, job_id = artifacts_job
    with server.client("alice") as c:
        for path in ("/ui/jobs", f"/ui/jobs/{job_id}", "/ui/login"):
            r = c.get(path)
            assert r.status_code == 200, path
            csp = r.headers["content-security-policy"]
            assert "script-src 'self'" in csp
            assert "frame-ancestors 'none'" in csp
            assert "unsafe-inline" not in csp
            assert r.headers["x-frame-options"] == "DENY"
            assert "<script>" not in r.text  # no inline script the CSP would have to allow


REBOUND = ["evil.example", "evil.example:{port}", "127.0.0.1.nip.io:{port}", "localhost.evil"]


@pytest.mark.parametrize("host", REBOUND)
def test_dns_rebinding_hosts_are_refused_everywhere(secserver: SecServer, host: str) -> None:
    host = host.format(port=secserver.port)
    with secserver.client("alice") as c:
        for method, path in (
            ("GET", "/ui/jobs"),
            ("GET", "/ui/login"),
            ("POST", "/ui/login/local"),
            ("GET", "/api/v1/jobs"),
            ("GET", "/v2/models/x"),
            ("GET", "/healthz"),
        ):
            r = c.request(method, path, headers={"Host": host, "Origin": f"http://{host}"})
            assert r.status_code == 421, (method, path, r.status_code)
            assert "set-cookie" not in r.headers
            assert '"items"' not in r.text
    assert secserver.healthy()


def test_rebinding_page_cannot_sign_in_as_the_local_user(secserver: SecServer) -> None:
    """The attack itself: a page on a rebound name POSTs the local sign-in form."""
    evil = f"rebind.attacker.example:{secserver.port}"
    with httpx.Client(base_url=secserver.url, timeout=30, follow_redirects=False) as page:
        r = page.get("/ui/login", headers={"Host": evil})
        assert r.status_code == 421
        # Even with a CSRF cookie obtained on the real name, a foreign Origin is refused.
        csrf = _login_form_token(page)
        r = page.post(
            "/ui/login/local",
            data={"csrf_token": csrf, "next": "/ui/jobs"},
            headers={"Origin": f"http://{evil}"},
        )
        assert r.status_code == 403
        assert "mlaas4hep_session" not in r.headers.get("set-cookie", "")
    # The real names still work: loopback names and IP literals.
    for host in ("localhost", f"localhost:{secserver.port}", "127.0.0.1", "[::1]"):
        r = httpx.get(f"{secserver.url}/healthz", headers={"Host": host}, timeout=10)
        assert r.status_code == 200, host
    assert secserver.healthy()


def _login_form_token(client: httpx.Client) -> str:
    page = client.get("/ui/login")
    assert page.status_code == 200
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def _sign_in(server: SecServer) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=server.url, timeout=30, follow_redirects=False)
    csrf = _login_form_token(client)
    r = client.post("/ui/login/local", data={"csrf_token": csrf, "next": "/ui/jobs"})
    assert r.status_code == 303, r.text
    token = client.cookies.get("mlaas4hep_session")
    assert token
    return client, token


def test_sign_out_revokes_the_session_token(secserver: SecServer) -> None:
    browser, token = _sign_in(secserver)
    other, other_token = _sign_in(secserver)  # a second session of the same user
    replay = httpx.Client(base_url=secserver.url, timeout=30, follow_redirects=False)
    try:
        assert browser.get("/ui/jobs").status_code == 200
        csrf = browser.cookies.get("mlaas4hep_csrf")
        r = browser.post("/ui/logout", data={"csrf_token": csrf})
        assert r.status_code == 303
        # A copy of the old cookie (what a thief kept) no longer signs anyone in ...
        r = replay.get("/ui/jobs", headers={"Cookie": f"mlaas4hep_session={token}"})
        assert r.status_code == 303
        assert r.headers["location"].startswith("/ui/login")
        # ... nor, as a bearer token, the API or the inference routes.
        bearer = {"Authorization": f"Bearer {token}"}
        assert replay.get("/api/v1/jobs", headers=bearer).status_code == 401
        assert replay.get("/v2/models/x", headers=bearer).status_code == 401
        # The other session is untouched.
        assert other.get("/ui/jobs").status_code == 200
        assert other_token != token
    finally:
        for client in (browser, other, replay):
            client.close()
    assert_no_leak(secserver, r.text)
    assert secserver.healthy()


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_sample(tmp_path_factory.mktemp("up") / "s.root", "signal", 200).read_bytes()


def _hostile_uploads(good: bytes) -> dict[str, bytes]:
    header_only = bytearray(good[:512])
    header_only[100:512] = b"\xff" * 412  # a header pointing into garbage
    return {
        "not-root.root": b"\x7fELF" + b"\0" * 4000,
        "truncated.root": good[: len(good) // 2],
        "junk.root": b"root" + bytes(range(256)) * 64,
        "header-only.root": bytes(header_only),
        "no-tree.root": b"root" + b"\0" * 4000,
    }


def test_hostile_uploads_are_refused_without_growing_the_service(
    secserver: SecServer, sample_root: bytes
) -> None:
    assert secserver.proc is not None
    web = psutil.Process(secserver.proc.pid)
    with secserver.client("bob") as bob:
        ok = bob.post("/api/v1/datasets", params={"name": "warmup.root"}, content=sample_root)
        assert ok.status_code == 201, ok.text  # a real file is accepted
        before = web.memory_info().rss
        answers = []
        for _ in range(2):
            for name, body in _hostile_uploads(sample_root).items():
                r = bob.post("/api/v1/datasets", params={"name": name}, content=body)
                assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
                assert name in r.json()["detail"] or "ROOT" in r.json()["detail"]
                assert str(secserver.data_dir) not in r.text  # no server paths
                answers.append(r.text)
        grown = web.memory_info().rss - before
        listed = {d["name"] for d in bob.get("/api/v1/datasets").json()["items"]}
        assert "warmup.root" in listed  # the session's server: bob's other tests' uploads too
        assert not listed & set(_hostile_uploads(sample_root)), listed
        page = bob.get("/ui/datasets")
        assert page.status_code == 200
        assert "Events" in page.text  # the schema recorded at upload, shown without parsing
    print(f"web process RSS growth over {len(answers)} hostile uploads: {grown / 1024**2:.1f} MiB")
    assert grown < 40 * 1024**2, f"the web process grew by {grown / 1024**2:.0f} MiB"
    assert_no_leak(secserver, *answers)
    assert secserver.healthy()


def test_sign_out_survives_a_restart(artifacts_job: tuple[SecServer, str]) -> None:
    server, _ = artifacts_job
    browser, token = _sign_in(server)
    try:
        r = browser.post("/ui/logout", data={"csrf_token": browser.cookies.get("mlaas4hep_csrf")})
        assert r.status_code == 303
    finally:
        browser.close()
    server.stop()
    server.start()
    with httpx.Client(base_url=server.url, timeout=30, follow_redirects=False) as replay:
        r = replay.get("/ui/jobs", headers={"Cookie": f"mlaas4hep_session={token}"})
        assert r.status_code == 303
        assert r.headers["location"].startswith("/ui/login")
        r = replay.get("/api/v1/jobs", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401
    assert server.healthy()


def _local_sign_in_as(uid: int, port: int) -> bytes:
    """POST /ui/login/local from a process running as *uid* (a forked child); the
    status line of the answer."""
    import os
    import socket

    body = b"csrf_token=t&next=%2Fui%2Fjobs"
    request = (
        b"POST /ui/login/local HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Cookie: mlaas4hep_csrf=t\r\nContent-Length: " + str(len(body)).encode() + b"\r\n"
        b"Connection: close\r\n\r\n" + body
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


def test_local_sign_in_answers_only_the_services_own_account(secserver: SecServer) -> None:
    import os

    from mlaas4hep.api.ui.session import CSRF_COOKIE

    if os.geteuid() != 0:
        pytest.skip("needs root to act as another account (CI runs as root)")
    assert CSRF_COOKIE == "mlaas4hep_csrf"  # the raw request above spells it out
    # another account on the host, and a sandboxed job's slot uid (remote-input jobs share
    # the host's network): refused, no session cookie
    for uid in (65534, 61000):
        status = _local_sign_in_as(uid, secserver.port)
        assert status.startswith(b"HTTP/1.1 403"), status
    # the service's own account (the person at this machine's browser): signed in
    status = _local_sign_in_as(os.geteuid(), secserver.port)
    assert status.startswith(b"HTTP/1.1 303"), status
    assert secserver.healthy()
