"""The UI's trust-boundary pieces, fast and in-process: artifact serving rules, the Host
and Origin check, the sign-out revocation list, and the bounded upload inspection."""

from __future__ import annotations

import base64
import json
import shutil
import time
from pathlib import Path

import pytest
from api_helpers import FixedTokens, auth
from fastapi.testclient import TestClient
from jobs_helpers import fake_settings

from mlaas4hep.api.app import create_app
from mlaas4hep.api.artifacts import ARTIFACT_CSP, artifact_response, inline_type, safe_filename
from mlaas4hep.api.hosts import AllowedHosts
from mlaas4hep.api.ui.revocations import RevokedSessions, RevokingAuthenticator, token_key
from mlaas4hep.errors import AuthError
from mlaas4hep.jobs.dataset_inspect import DatasetInspector, InspectFailed, InspectLimits

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32
JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 32
GIF = b"GIF89a" + b"\0" * 32
WEBP = b"RIFF\0\0\0\0WEBPVP8 " + b"\0" * 32
SVG = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"


@pytest.mark.parametrize(
    ("name", "body", "inline"),
    [
        ("a.png", PNG, "image/png"),
        ("a.jpg", JPEG, "image/jpeg"),
        ("a.gif", GIF, "image/gif"),
        ("a.webp", WEBP, "image/webp"),
        ("a.png", SVG, None),  # claims PNG, is not
        ("a.png", JPEG, None),  # a raster, but not the claimed one
        ("a.webp", b"RIFF\0\0\0\0WAVEfmt " + b"\0" * 8, None),
        ("a.svg", SVG, None),
        ("a.html", b"<script>1</script>", None),
        ("a.xml", b"<x/>", None),
        ("a.pdf", b"%PDF-1.4", None),
        ("noext", PNG, None),
    ],
)
def test_only_checked_rasters_are_inline(
    tmp_path: Path, name: str, body: bytes, inline: str | None
) -> None:
    path = tmp_path / name
    path.write_bytes(body)
    assert inline_type(path) == inline
    response = artifact_response(path, name)
    assert response.headers["content-security-policy"] == ARTIFACT_CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("inline" if inline else "attachment")
    if inline is None:
        assert response.media_type in ("application/octet-stream", "application/json")


def test_download_names_are_reduced_to_safe_characters() -> None:
    assert safe_filename("plots/roc.png") == "roc.png"
    assert safe_filename('a"b\r\nSet-Cookie: x.txt') == "a_b_Set-Cookie_x.txt"
    assert safe_filename("..") == "artifact"
    assert safe_filename(".bashrc") == "bashrc"
    assert safe_filename("ü.json") == "_.json"


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("localhost", True),
        ("localhost:8000", True),
        ("LOCALHOST.:8000", True),
        ("app.localhost:8000", True),
        ("127.0.0.1:8000", True),
        ("10.1.2.3", True),  # an IP literal: no name to re-point
        ("[::1]:8000", True),
        ("mlaas.example.org", True),
        ("a.lab.example.org", True),
        ("lab.example.org", True),
        ("evil.example", False),
        ("localhost.evil.example", False),
        ("127.0.0.1.nip.io", False),
        ("mlaas.example.org.evil", False),
        ("xlab.example.org", False),
        ("", False),
        (None, False),
        ("a b", False),
        ("user@localhost", False),
        ("[::1", False),
    ],
)
def test_allowed_hosts(host: str | None, ok: bool) -> None:
    allowed = AllowedHosts.build(None, "mlaas.example.org")
    allowed = AllowedHosts(allowed.names | {".lab.example.org"})
    assert allowed.permits(host) is ok


def test_allowed_hosts_configured_list_and_origins() -> None:
    allowed = AllowedHosts.build(["Service.Example.org", ""], "0.0.0.0")
    assert allowed.permits("service.example.org:443")
    assert not allowed.permits("localhost")  # a configured list replaces the default
    assert allowed.permits_origin("https://service.example.org")
    assert not allowed.permits_origin("null")
    assert not allowed.permits_origin("https://evil.example")
    assert not allowed.permits_origin("file://service.example.org")
    assert AllowedHosts.build(["*"], "x").permits("anything.example")


def test_host_and_origin_are_checked_before_any_route(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path).model_copy(update={"allowed_hosts": ["testserver"]})
    app = create_app(settings, authenticator=FixedTokens(), run_executor=False)
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as c:
        assert c.get("/healthz").status_code == 200
        for path in ("/healthz", "/api/v1/jobs", "/ui/login"):
            r = c.get(path, headers={"Host": "evil.example"})
            assert r.status_code == 421
            assert r.headers["content-type"] == "application/problem+json"
        r = c.post("/api/v1/jobs", json={"name": "x"}, headers={**auth("alice"), "Origin": "null"})
        assert r.status_code == 403
        r = c.post(
            "/ui/logout", headers={"Origin": "http://evil.example"}, data={"csrf_token": "x"}
        )
        assert r.status_code == 403
        # the service's own origin passes the guard (and then meets the CSRF check)
        r = c.post("/ui/logout", headers={"Origin": "http://testserver"})
        assert r.status_code == 403
        assert "security token" in r.text


def _jwt(claims: dict[str, object]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJub25lIn0.{body}.sig"


def test_revocations_persist_and_expire(tmp_path: Path) -> None:
    path = tmp_path / "auth" / "revoked-sessions"
    now = time.time()
    live = _jwt({"jti": "a", "exp": now + 3600})
    old = _jwt({"jti": "b", "exp": now - 1})
    other = _jwt({"jti": "c", "exp": now + 3600})
    revoked = RevokedSessions(path)
    revoked.revoke(live)
    revoked.revoke(old)
    assert revoked.is_revoked(live)
    assert not revoked.is_revoked(old)  # expired anyway: no need to keep it
    assert not revoked.is_revoked(other)
    assert path.stat().st_mode & 0o777 == 0o600
    again = RevokedSessions(path)  # a restart (or another replica)
    assert again.is_revoked(live)
    assert "jti:b" not in path.read_text()  # compacted at start-up
    revoked.revoke(other)
    assert again.is_revoked(other)  # re-read when the file changes
    assert token_key("not-a-jwt")[0].startswith("sha256:")


def test_revoking_authenticator_refuses_listed_tokens(tmp_path: Path) -> None:
    class Anyone:
        issuers = ("https://iss",)

        def authenticate(self, header: str | None, peer: str | None = None, headers=()):  # type: ignore[no-untyped-def]
            return FixedTokens().authenticate("Bearer token-alice")

    revoked = RevokedSessions(None)
    wrapped = RevokingAuthenticator(Anyone(), revoked)
    token = _jwt({"jti": "s1", "exp": time.time() + 60})
    assert wrapped.authenticate(f"Bearer {token}").subject == "alice"
    revoked.revoke(token)
    with pytest.raises(AuthError, match="signed out"):
        wrapped.authenticate(f"Bearer {token}")
    assert wrapped.issuers == ("https://iss",)


def test_inspection_limits_turn_into_clear_422s(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    junk = tmp_path / "d" / "x.root"
    junk.parent.mkdir()
    junk.write_bytes(b"root" + b"\0" * 100)
    hog = DatasetInspector(settings, InspectLimits(memory_bytes=32 * 1024**2))
    with pytest.raises(InspectFailed, match="cannot be read as a ROOT file") as info:
        hog.inspect(junk, "x.root")
    assert str(tmp_path) not in str(info.value)
    slow = DatasetInspector(settings, InspectLimits(wall_s=0.01))
    with pytest.raises(InspectFailed, match=r"longer than 0\.01 s"):
        slow.inspect(junk, "x.root")
    with pytest.raises(InspectFailed, match="no TTree") as info:
        DatasetInspector(settings).inspect(junk, "x.root")
    assert str(tmp_path) not in str(info.value)


def test_inspection_runs_in_the_job_sandbox_when_it_can(tmp_path: Path) -> None:
    junk = tmp_path / "d" / "x.root"
    junk.parent.mkdir()
    junk.write_bytes(b"root" + b"\0" * 100)
    plain = fake_settings(tmp_path, sandbox="none")
    inspector = DatasetInspector(plain)
    assert not inspector.sandbox().enabled
    with pytest.raises(InspectFailed, match="no TTree"):  # still out of process, bounded
        inspector.inspect(junk, "x.root")
    if shutil.which("bwrap") is None:
        pytest.skip("bwrap is not installed: the sandboxed half needs it (CI installs it)")
    boxed = DatasetInspector(fake_settings(tmp_path)).sandbox()
    assert boxed.enabled, boxed.describe()
    assert boxed.ready, boxed.describe()


def test_replicas_starting_at_once_share_the_revocation_list(tmp_path: Path) -> None:
    # A roll-out starts several API replicas on one data directory at the same moment;
    # each compacts the list at start (one failed on a shared temporary name).
    import threading

    from mlaas4hep.api.ui.revocations import RevokedSessions

    path = tmp_path / "auth" / "revoked-sessions"
    path.parent.mkdir(mode=0o700)
    path.write_text("old 1\nlive 99999999999\n")
    errors: list[BaseException] = []

    def start() -> None:
        try:
            for _ in range(20):
                RevokedSessions(path)
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert path.read_text() == "live 99999999999\n"
    left = sorted(p.name for p in path.parent.iterdir())  # no temporary file left behind
    assert left == [".revoked-sessions.lock", "revoked-sessions"], left
