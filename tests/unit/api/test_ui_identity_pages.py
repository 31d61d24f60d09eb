"""Issue 17, item 4: the UI signs in as the user the CLI's token names.

The whole app (``create_app``) in local-issuer mode with the real authenticator: jobs are
submitted over the API with tokens of the embedded issuer (what ``mlaas4hep token`` mints)
and the browser signs in with the local name form or a pasted token. The attacks come
first: a remote peer choosing a name, hostile names, forged, expired, foreign and signed-out
tokens, CSRF, and the pasted token echoed or logged.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from api_helpers import host_settings
from fastapi import FastAPI
from fastapi.testclient import TestClient
from jobs_helpers import permissive

from mlaas4hep.api.app import create_app
from mlaas4hep.api.ui.identity import check_user_name
from mlaas4hep.auth.local_issuer import LocalIssuer
from mlaas4hep.auth.token_store import save_token
from mlaas4hep.cli.token import DEFAULT_SCOPES
from mlaas4hep.errors import InvalidInput

CSRF = re.compile(r'name="csrf-token" content="([^"]+)"')
SESSION = "mlaas4hep_session"


@pytest.fixture
def token_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the CLI saves its token (``mlaas4hep token --save``), for CLI and service."""
    monkeypatch.delenv("MLAAS4HEP_TOKEN_FILE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config" / "mlaas4hep" / "token"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def make_app(tmp_path: Path) -> FastAPI:
    return create_app(host_settings(tmp_path), spec_validator=permissive, run_executor=False)


@pytest.fixture
def ui(tmp_path: Path, token_file: Path) -> Iterator[TestClient]:
    """The app as the service's own account on loopback sees it (in-process: no socket)."""
    with TestClient(make_app(tmp_path), follow_redirects=False) as client:
        yield client


def mint(data_dir: Path, user: str, lifetime_s: int = 3600) -> str:
    """What ``mlaas4hep token --user USER`` prints for this service's data directory."""
    return LocalIssuer(data_dir).mint(user, DEFAULT_SCOPES, lifetime_s=lifetime_s)


def submit(client: TestClient, token: str, name: str) -> str:
    """A job submitted over the JSON API with *token* (what ``mlaas4hep submit`` does)."""
    r = client.post(
        "/api/v1/jobs", json={"name": name}, headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 201, r.text
    job_id: str = r.json()["id"]
    return job_id


def csrf_of(client: TestClient) -> str:
    found = CSRF.search(client.get("/ui/login").text)
    assert found
    return found.group(1)


def local_sign_in(client: TestClient, user: str | None) -> TestClient:
    form = {"csrf_token": csrf_of(client), "next": "/ui/jobs"}
    if user is not None:
        form["user"] = user
    client.post("/ui/login/local", data=form)
    return client


def paste(client: TestClient, token: str, **extra: str) -> Any:
    form = {"csrf_token": csrf_of(client), "next": "/ui/jobs", "token": token, **extra}
    return client.post("/ui/login/token", data=form)


def session_cookie(response: Any) -> str | None:
    headers = response.headers.get_list("set-cookie")
    return next((h for h in headers if h.startswith(f"{SESSION}=")), None)


def seen_jobs(client: TestClient) -> str:
    page = client.get("/ui/jobs")
    assert page.status_code == 200, page.headers.get("location")
    return page.text


# --- the newcomer's path: README's token, then the UI -------------------------------


def test_the_readme_path_lands_on_alices_jobs(
    ui: TestClient, data_dir: Path, token_file: Path
) -> None:
    """``mlaas4hep token --user alice --save``, ``mlaas4hep submit``, open the UI, press the
    button: the page lists alice's job, not bob's and not "No jobs yet"."""
    ui.get("/healthz")  # the service started: its issuer key exists
    alice = mint(data_dir, "alice")
    save_token(alice, token_file)
    mine = submit(ui, alice, "alices-job")
    theirs = submit(ui, mint(data_dir, "bob"), "bobs-job")
    page = ui.get("/ui/login").text
    assert 'value="alice"' in page  # the CLI's user is the suggestion
    assert "Sign in as alice" in page
    local_sign_in(ui, user=None)  # the button as it comes: no name typed
    jobs = seen_jobs(ui)
    assert f"/ui/jobs/{mine}" in jobs
    assert f"/ui/jobs/{theirs}" not in jobs
    assert "Signed in as <strong>alice</strong>" in jobs
    assert ui.get(f"/ui/jobs/{theirs}").status_code == 404  # as in the API


def test_a_typed_name_is_the_session_user_and_sees_only_its_jobs(
    ui: TestClient, data_dir: Path
) -> None:
    ui.get("/healthz")
    mine = submit(ui, mint(data_dir, "alice"), "alices-job")
    theirs = submit(ui, mint(data_dir, "bob"), "bobs-job")
    local_sign_in(ui, user="alice")
    token = ui.cookies[SESSION]
    jobs = seen_jobs(ui)
    assert f"/ui/jobs/{mine}" in jobs
    assert f"/ui/jobs/{theirs}" not in jobs
    # The session token is alice's for the API as well.
    api = ui.get("/api/v1/jobs", headers={"Authorization": f"Bearer {token}"}).json()
    assert {job["id"] for job in api["items"]} == {mine}


def test_without_a_saved_token_the_setting_or_the_os_user_is_suggested(
    ui: TestClient, token_file: Path
) -> None:
    import getpass

    assert not token_file.exists()
    assert f'value="{getpass.getuser()}"' in ui.get("/ui/login").text


def test_a_token_file_of_another_issuer_suggests_nothing(
    ui: TestClient, token_file: Path, tmp_path: Path
) -> None:
    """Only a token signed by this service's issuer names the suggestion (an expired one
    still does); junk, a foreign key and a huge file are ignored."""
    import getpass

    ui.get("/healthz")
    foreign = LocalIssuer(tmp_path / "other").mint("mallory", DEFAULT_SCOPES)
    for content in (foreign, "garbage", "x" * 100_000):
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(content)
        page = ui.get("/ui/login").text
        assert "mallory" not in page
        assert f'value="{getpass.getuser()}"' in page
    token_file.write_text(expired_token(tmp_path / "data", "carol"))
    assert 'value="carol"' in ui.get("/ui/login").text


# --- the name form: where it is offered, what it accepts -------------------------------


BAD_NAMES = [
    "a" * 65,
    "alice bob",
    "../../etc/passwd",
    "<script>alert(1)</script>",
    "-alice",
    ".alice",
    "alice\nadmin",
    "ali\x00ce",
    "ålice",
    "alice/admin",
    "alice#bob",
    "   ",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_bad_name_is_refused_with_the_rule(ui: TestClient, name: str) -> None:
    form = {"csrf_token": csrf_of(ui), "next": "/ui/jobs", "user": name}
    r = ui.post("/ui/login/local", data=form)
    if name.strip():
        assert r.status_code == 422, r.text
        assert "letters, digits" in r.text or "at most 64" in r.text
        assert "<script>alert(1)" not in r.text  # shown escaped, never as markup
    else:  # blank: the suggestion, as if nothing was typed
        assert r.status_code == 303
        return
    assert session_cookie(r) is None
    assert 'action="/ui/login/local"' in r.text  # the form again, to correct the name


@pytest.mark.parametrize("name", ["alice", "Alice.Smith", "a", "user_1", "a@cern.ch", "x" * 64])
def test_good_names(name: str) -> None:
    assert check_user_name(f" {name} ") == name


def test_check_user_name_errors_say_what_to_do() -> None:
    with pytest.raises(InvalidInput, match="at most 64"):
        check_user_name("a" * 65)
    with pytest.raises(InvalidInput, match="type a user name"):
        check_user_name("")
    with pytest.raises(InvalidInput, match=r"'a b' is not allowed.*e\.g\. alice"):
        check_user_name("a b")


@pytest.mark.parametrize("peer", ["203.0.113.7", "10.0.0.5", "2001:db8::1", "::ffff:192.0.2.1"])
def test_a_remote_peer_cannot_choose_a_name(tmp_path: Path, token_file: Path, peer: str) -> None:
    """A browser that is not on loopback (behind a proxy, a port forward from elsewhere)
    gets no name form and a 403 from its POST, even with a valid CSRF token."""
    app = make_app(tmp_path)
    with TestClient(app, client=(peer, 40000), follow_redirects=False) as remote:
        page = remote.get("/ui/login")
        assert page.status_code == 200
        assert 'action="/ui/login/local"' not in page.text
        assert 'action="/ui/login/token"' in page.text  # a token still works from anywhere
        assert str(token_file) not in page.text  # nor the service account's paths
        r = remote.post(
            "/ui/login/local",
            data={"csrf_token": csrf_of(remote), "next": "/ui/jobs", "user": "alice"},
        )
        assert r.status_code == 403
        assert "only for the account running the service" in r.text
        assert session_cookie(r) is None
        assert SESSION not in remote.cookies


def test_a_loopback_socket_of_another_account_cannot_choose_a_name(
    tmp_path: Path, token_file: Path
) -> None:
    """A loopback peer whose socket is not the service's own (no row of our uid in
    /proc/net/tcp for it): refused, as before this issue."""
    app = make_app(tmp_path)
    with TestClient(
        app,
        base_url="http://127.0.0.1:8000",
        client=("127.0.0.1", 1),
        follow_redirects=False,
    ) as other:
        page = other.get("/ui/login")
        assert 'action="/ui/login/local"' not in page.text
        assert "only for the account running this service" in page.text
        r = other.post(
            "/ui/login/local",
            data={"csrf_token": csrf_of(other), "next": "/ui/jobs", "user": "alice"},
        )
        assert r.status_code == 403
        assert session_cookie(r) is None


def test_the_name_form_needs_csrf(ui: TestClient) -> None:
    good = csrf_of(ui)
    attempts = [
        ({"user": "alice"}, {}),  # no token
        ({"user": "alice", "csrf_token": "forged-value-0123456789abcdef"}, {}),
        ({"user": "alice", "csrf_token": good}, {"Origin": "http://evil.example"}),
        ({"user": "alice", "csrf_token": good}, {"Origin": "http://localhost:9999"}),
        ({"user": "alice", "csrf_token": good}, {"Sec-Fetch-Site": "cross-site"}),
    ]
    for form, headers in attempts:
        r = ui.post("/ui/login/local", data=form, headers=headers)
        assert r.status_code == 403, (form, headers)
        assert session_cookie(r) is None


# --- the pasted token ----------------------------------------------------------------


def expired_token(data_dir: Path, user: str) -> str:
    """Signed by this service's issuer key, expired an hour ago (beyond the leeway)."""
    issuer = LocalIssuer(data_dir)
    pem = (data_dir / "auth" / "local-issuer-key.pem").read_bytes()
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
    headers = {"kid": issuer.kid, "typ": "at+jwt"}
    return jwt.encode(claims, pem, algorithm="ES256", headers=headers)


def test_a_pasted_token_signs_in_as_its_user(ui: TestClient, data_dir: Path) -> None:
    ui.get("/healthz")
    alice = mint(data_dir, "alice")
    mine = submit(ui, alice, "alices-job")
    theirs = submit(ui, mint(data_dir, "bob"), "bobs-job")
    r = paste(ui, alice + "\n")  # as copied from `cat ~/.config/mlaas4hep/token`
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/jobs"
    cookie = session_cookie(r)
    assert cookie
    assert "httponly" in cookie.lower()
    assert "samesite=strict" in cookie.lower()
    assert alice not in r.text
    jobs = seen_jobs(ui)
    assert f"/ui/jobs/{mine}" in jobs
    assert f"/ui/jobs/{theirs}" not in jobs


def test_the_session_ends_when_the_pasted_token_does(ui: TestClient, data_dir: Path) -> None:
    ui.get("/healthz")
    r = paste(ui, mint(data_dir, "alice", lifetime_s=300))
    max_age = re.search(r"max-age=(\d+)", session_cookie(r) or "", re.IGNORECASE)
    assert max_age
    assert 250 <= int(max_age.group(1)) <= 300  # not the 8 h of a locally minted session


def refused_tokens(data_dir: Path, tmp_path: Path) -> dict[str, tuple[str, str]]:
    """name -> (token, what the message must say)."""
    key = LocalIssuer(data_dir)
    forged_same_iss = LocalIssuer(tmp_path / "attacker").mint("alice", DEFAULT_SCOPES)
    foreign = LocalIssuer(tmp_path / "evil", issuer="https://evil.example/issuer")
    other_aud = LocalIssuer(data_dir, audience="another-service")
    header, payload, signature = key.mint("alice", DEFAULT_SCOPES).split(".")
    return {
        "expired": (expired_token(data_dir, "alice"), "token expired"),
        "foreign issuer": (foreign.mint("alice", DEFAULT_SCOPES), "issuer is not trusted"),
        "same iss, attacker key": (forged_same_iss, "unknown key"),
        "other audience": (other_aud.mint("alice", DEFAULT_SCOPES), "audience"),
        "tampered": (f"{header}.{payload[:-4]}AAAA.{signature}", "token"),
        "alg none": (
            jwt.encode({"iss": key.issuer, "sub": "alice"}, "", algorithm="none"),
            "token",
        ),
        "garbage": ("not-a-token-at-all", "malformed token"),
        "huge": ("A" * 70_000, "too large"),
        "blank": ("   \n", "no token was pasted"),
    }


def test_refused_tokens_get_a_clear_message_and_no_session(
    ui: TestClient, data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ui.get("/healthz")
    caplog.set_level(logging.DEBUG)
    for name, (token, reason) in refused_tokens(data_dir, tmp_path).items():
        r = paste(ui, token)
        assert r.status_code == 401, name
        text = r.text
        assert "that token was refused" in text, name
        assert reason in text, (name, text[text.find("refused") :][:200])
        assert "mlaas4hep token --user NAME --save" in text  # what to do
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert session_cookie(r) is None, name
        assert token.strip() not in text or not token.strip(), name  # never echoed
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    for name, (token, _) in refused_tokens(data_dir, tmp_path).items():
        if token.strip():
            assert token.strip() not in logged, name
    assert SESSION not in ui.cookies


def test_a_signed_out_token_cannot_be_pasted_again(ui: TestClient, data_dir: Path) -> None:
    ui.get("/healthz")
    alice = mint(data_dir, "alice")
    assert paste(ui, alice).status_code == 303
    r = ui.post("/ui/logout", data={"csrf_token": ui.cookies["mlaas4hep_csrf"]})
    assert r.status_code == 303
    r = paste(ui, alice)
    assert r.status_code == 401
    assert "signed out" in r.text
    assert session_cookie(r) is None


def test_the_token_form_needs_csrf(ui: TestClient, data_dir: Path) -> None:
    """Login CSRF: another site must not sign the victim's browser in as the attacker."""
    ui.get("/healthz")
    attacker = mint(data_dir, "mallory")
    good = csrf_of(ui)
    attempts = [
        ({"token": attacker}, {}),
        ({"token": attacker, "csrf_token": "forged-value-0123456789abcdef"}, {}),
        ({"token": attacker, "csrf_token": good}, {"Origin": "http://evil.example"}),
        ({"token": attacker, "csrf_token": good}, {"Sec-Fetch-Site": "cross-site"}),
    ]
    for form, headers in attempts:
        r = ui.post("/ui/login/token", data=form, headers=headers)
        assert r.status_code == 403, (form, headers)
        assert session_cookie(r) is None
        assert attacker not in r.text


def test_a_pasted_token_is_not_echoed_by_a_bad_field_either(
    ui: TestClient, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused neighbouring field (an overlong ``next``) must not put the form, token
    included, into the answer or the log."""
    ui.get("/healthz")
    caplog.set_level(logging.DEBUG)
    alice = mint(data_dir, "alice")
    r = paste(ui, alice, next="/ui/" + "x" * 3000)
    assert r.status_code == 422
    assert "next field" in r.text
    assert alice not in r.text
    assert alice not in "\n".join(f"{rec.getMessage()} {rec.exc_text}" for rec in caplog.records)
    assert session_cookie(r) is None


def test_a_remote_peer_may_sign_in_with_a_token(
    tmp_path: Path, token_file: Path, data_dir: Path
) -> None:
    """A token is a credential wherever it comes from: the API takes it from any peer."""
    app = make_app(tmp_path)
    with TestClient(app, client=("203.0.113.7", 40000), follow_redirects=False) as remote:
        remote.get("/healthz")
        mine = submit(remote, mint(data_dir, "alice"), "alices-job")
        r = paste(remote, mint(data_dir, "alice"))
        assert r.status_code == 303
        assert f"/ui/jobs/{mine}" in seen_jobs(remote)


@pytest.mark.parametrize(
    "header",
    [
        ("X-Forwarded-For", "127.0.0.1:43210"),  # a port of the owner's open connection
        ("X-Forwarded-For", "203.0.113.7"),
        ("Forwarded", "for=127.0.0.1"),
        ("X-Real-IP", "127.0.0.1"),
    ],
)
def test_a_forwarded_request_cannot_choose_a_name(ui: TestClient, header: tuple[str, str]) -> None:
    """The service's own browser talks to it directly; a request naming a forwarded
    client (a proxy, or another account borrowing the owner's socket through uvicorn's
    ``X-Forwarded-For`` handling) gets neither the form nor a session."""
    headers = dict([header])
    assert 'action="/ui/login/local"' not in ui.get("/ui/login", headers=headers).text
    form = {"csrf_token": csrf_of(ui), "next": "/ui/jobs", "user": "alice"}
    r = ui.post("/ui/login/local", data=form, headers=headers)
    assert r.status_code == 403
    assert session_cookie(r) is None
