"""The web UI through the ASGI app: sessions, CSRF, the same auth and service as the API,
escaping, and the authorization code + PKCE sign-in against an in-process issuer."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from api_helpers import host_settings
from fastapi import FastAPI
from fastapi.testclient import TestClient
from jobs_helpers import fake_settings, permissive

from mlaas4hep.api.app import create_app
from mlaas4hep.api.ui import install_ui
from mlaas4hep.api.ui.oidc import LoginFlow, OidcClient, pkce_challenge
from mlaas4hep.api.ui.session import safe_next
from mlaas4hep.api.ui.settings import OidcClientSettings, UiSettings
from mlaas4hep.api.ui.views import highlight_yaml
from mlaas4hep.auth.local_issuer import LOCAL_ISSUER, LocalIssuer
from mlaas4hep.auth.settings import AuthSettings
from mlaas4hep.auth.tokens import build_authenticator
from mlaas4hep.errors import AuthError, SpecError
from mlaas4hep.jobs.datasets import DatasetStore
from mlaas4hep.jobs.service import JobService
from mlaas4hep.jobs.store import JobStore

CSRF = re.compile(r'name="csrf-token" content="([^"]+)"')


@pytest.fixture
def ui(tmp_path: Path) -> Iterator[TestClient]:
    """The whole app in local-issuer mode, jobs staying queued (no executor)."""
    app = create_app(host_settings(tmp_path), spec_validator=permissive, run_executor=False)
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
        yield client


def csrf_of(client: TestClient, path: str = "/ui/login") -> str:
    found = CSRF.search(client.get(path).text)
    assert found, "the page carries its CSRF token"
    return found.group(1)


def sign_in(client: TestClient) -> None:
    token = csrf_of(client)
    r = client.post("/ui/login/local", data={"csrf_token": token, "next": "/ui/jobs"})
    assert r.status_code == 303, r.text


def test_pages_send_strangers_to_the_login_page(ui: TestClient) -> None:
    for path in ("/ui/jobs", "/ui/submit", "/ui/models", "/ui/datasets", "/ui/jobs/" + "a" * 32):
        r = ui.get(path)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/ui/login?next=/ui/"), path
    assert ui.get("/").headers["location"] == "/ui/jobs"
    r = ui.get("/ui/jobs/" + "a" * 32 + "/status", headers={"Accept": "application/json"})
    assert r.status_code == 401  # page scripts get JSON, not a redirect


def test_local_sign_in_needs_the_csrf_token_and_sets_a_strict_cookie(ui: TestClient) -> None:
    page = ui.get("/ui/login")
    assert "Sign in as" in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "mlaas4hep_session" not in ui.cookies  # nothing is issued by looking at the page
    refused = ui.post("/ui/login/local", data={"csrf_token": "forged-token-value-123456"})
    assert refused.status_code == 403
    token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
    r = ui.post("/ui/login/local", data={"csrf_token": token, "next": "https://evil.test/x"})
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/jobs"  # never an open redirect
    cookie = next(h for h in r.headers.get_list("set-cookie") if "mlaas4hep_session=" in h)
    low = cookie.lower()
    assert "httponly" in low
    assert "samesite=strict" in low
    assert "path=/ui" in low
    assert ui.get("/ui/jobs").status_code == 200


def test_the_cookie_carries_the_same_token_as_the_api_header(ui: TestClient) -> None:
    sign_in(ui)
    token = ui.cookies["mlaas4hep_session"]
    ui.cookies.clear()
    headers = {"Authorization": f"Bearer {token}"}
    assert ui.get("/api/v1/jobs", headers=headers).status_code == 200
    # The JSON API takes the header only: a cookie alone is no credential there.
    cookie = {"Cookie": f"mlaas4hep_session={token}"}
    assert ui.get("/api/v1/jobs", headers=cookie).status_code == 401
    assert ui.get("/ui/jobs", headers=cookie).status_code == 200
    tampered = {"Cookie": f"mlaas4hep_session={token[:-4]}AAAA"}
    assert ui.get("/ui/jobs", headers=tampered).status_code == 303  # no session


def test_submit_validate_cancel_through_the_job_service(ui: TestClient) -> None:
    sign_in(ui)
    token = csrf_of(ui, "/ui/submit")
    answer = ui.post(
        "/ui/validate",
        content=b"name: x\ndata: [unclosed",
        headers={"X-CSRF-Token": token, "Accept": "application/json"},
    ).json()
    assert answer["ok"] is False
    assert "not valid YAML" in answer["detail"]
    assert ui.post("/ui/validate", content=b"name: x").status_code == 403  # no CSRF header
    form = {"csrf_token": token, "spec": "name: '<script>alert(1)</script>'\n"}
    r = ui.post("/ui/submit", data=form)
    assert r.status_code == 303
    job_id = r.headers["location"].rsplit("/", 1)[1]
    listing = ui.get("/ui/jobs").text
    assert "<script>alert(1)</script>" not in listing
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in listing
    page = ui.get(f"/ui/jobs/{job_id}")
    assert page.status_code == 200
    assert "Cancel job" in page.text
    assert ui.post(f"/ui/jobs/{job_id}/cancel", data={}).status_code == 403
    assert ui.post(f"/ui/jobs/{job_id}/cancel", data={"csrf_token": token}).status_code == 303
    status = ui.get(f"/ui/jobs/{job_id}/status", headers={"Accept": "application/json"}).json()
    assert status["state"] == "cancelled"
    assert status["terminal"] is True
    assert ui.get("/ui/jobs?state=cancelled").text.count(f"/ui/jobs/{job_id}") == 1


def test_a_spec_file_can_be_uploaded_instead_of_typed(ui: TestClient) -> None:
    sign_in(ui)
    token = csrf_of(ui, "/ui/submit")
    files = {"spec_file": ("pipeline.yaml", b"name: from-a-file\n", "application/yaml")}
    r = ui.post("/ui/submit", data={"csrf_token": token, "spec": ""}, files=files)
    assert r.status_code == 303
    assert "from-a-file" in ui.get(r.headers["location"]).text


def test_an_invalid_submission_shows_the_api_message_inline(tmp_path: Path) -> None:
    app = create_app(host_settings(tmp_path), run_executor=False)  # the real pipeline spec
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
        sign_in(client)
        token = csrf_of(client, "/ui/submit")
        r = client.post("/ui/submit", data={"csrf_token": token, "spec": "name: x\n"})
        assert r.status_code == 422
        assert "not a valid pipeline spec" in r.text
        assert "data: required field is missing" in r.text


def test_forms_from_another_origin_are_refused_even_with_a_planted_token(
    ui: TestClient,
) -> None:
    sign_in(ui)
    token = csrf_of(ui, "/ui/submit")
    form = {"csrf_token": token, "spec": "name: x\n"}
    host = {"Host": "testserver"}
    for headers in (
        {"Sec-Fetch-Site": "same-site"},  # another port of the same host
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://testserver:9999"},
        {"Origin": "null"},
    ):
        r = ui.post("/ui/submit", data=form, headers={**host, **headers})
        assert r.status_code == 403, headers
    ok = {"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver"}
    assert ui.post("/ui/submit", data=form, headers={**host, **ok}).status_code == 303


def test_another_users_job_is_not_found(ui: TestClient) -> None:
    sign_in(ui)
    r = ui.get("/ui/jobs/" + "0" * 32)
    assert r.status_code == 404
    assert "among yours" in r.text


def test_safe_next_refuses_other_sites() -> None:
    assert safe_next("/ui/jobs/abc?x=1") == "/ui/jobs/abc?x=1"
    for bad in ("https://evil.test/", "//evil.test/ui/", "/api/v1/jobs", "/ui/login", None, ""):
        assert safe_next(bad) == "/ui/jobs"


def test_yaml_highlighting_escapes_everything() -> None:
    html = str(highlight_yaml("name: '<b>x</b>'  # <i>note</i>\nn: 3\nflag: true"))
    assert "<b>" not in html
    assert "<i>" not in html
    assert '<span class="y-key">name</span>' in html
    assert '<span class="y-number">3</span>' in html
    assert '<span class="y-literal">true</span>' in html
    assert '<span class="y-comment"># &lt;i&gt;note&lt;/i&gt;</span>' in html


def test_ui_settings_are_checked() -> None:
    with pytest.raises(SpecError, match="unknown ui settings"):
        UiSettings.from_mapping({"colour": "red"})
    with pytest.raises(SpecError, match="https"):
        UiSettings.from_mapping({"oidc": {"issuer": "http://idp.example", "client_id": "c"}})


# ---- authorization code + PKCE ---------------------------------------------------------


class FakeIssuer:
    """An authorization server answering discovery and the token endpoint in-process.

    It issues an authorization code for a fixed user, remembers the PKCE challenge it was
    given, and at the token endpoint checks the verifier against it (RFC 7636), as a
    real issuer does; the access token is a real signed JWT from a LocalIssuer key.
    """

    def __init__(self, local: LocalIssuer) -> None:
        self.local = local
        self.issuer = local.issuer
        self.codes: dict[str, dict[str, str]] = {}
        self.token_requests: list[dict[str, list[str]]] = []

    def authorize(self, url: str) -> str:
        """What the browser would do at the authorization endpoint: sign in, come back."""
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        assert query["response_type"] == "code"
        assert query["code_challenge_method"] == "S256"
        code = f"code-{len(self.codes)}"
        self.codes[code] = query
        return f"{query['redirect_uri']}?code={code}&state={query['state']}"

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/.well-known/openid-configuration"):
            return httpx.Response(
                200,
                json={
                    "issuer": self.issuer,
                    "authorization_endpoint": self.issuer + "/auth",
                    "token_endpoint": self.issuer + "/token",
                    "jwks_uri": self.issuer + "/jwks",
                },
            )
        if request.url.path.endswith("/token") and request.method == "POST":
            form = parse_qs(request.content.decode())
            self.token_requests.append(form)
            sent = self.codes.pop(form["code"][0], None)
            verifier = form.get("code_verifier", [""])[0]
            if sent is None or pkce_challenge(verifier) != sent["code_challenge"]:
                return httpx.Response(400, json={"error": "invalid_grant"})
            token = self.local.mint("carol", ["compute.read", "compute.create"])
            return httpx.Response(200, json={"access_token": token, "token_type": "Bearer"})
        return httpx.Response(404)


@pytest.fixture
def oidc_app(tmp_path: Path) -> Iterator[tuple[TestClient, FakeIssuer]]:
    settings = fake_settings(tmp_path)
    local = LocalIssuer(tmp_path / "idp")
    issuer = FakeIssuer(local)
    # The service trusts the issuer and fetches its keys in-process (the same validation).
    auth = build_authenticator(AuthSettings(issuers=()), transport=None, local=local)
    store = JobStore(settings.db_url)
    datasets = DatasetStore(store, settings)
    app = FastAPI()
    install_ui(
        app,
        raw_settings={"oidc": {"issuer": LOCAL_ISSUER, "client_id": "mlaas4hep-ui"}},
        authenticator=auth,
        trusted_issuers=auth.issuers,
        service=JobService(store, datasets, settings, permissive),
        datasets=datasets,
        local_issuer=None,
        inference=None,
        oidc_transport=httpx.MockTransport(issuer.handle),
    )
    with TestClient(app, follow_redirects=False) as client:
        yield client, issuer
    store.close()


def test_authorization_code_with_pkce_signs_the_browser_in(
    oidc_app: tuple[TestClient, FakeIssuer],
) -> None:
    client, issuer = oidc_app
    login = client.get("/ui/login?next=/ui/submit")
    assert "Sign in with" in login.text
    assert "Sign in as" not in login.text  # no local button with an external issuer
    start = client.get("/ui/login/oidc?next=/ui/submit")
    assert start.status_code == 302
    to_issuer = start.headers["location"]
    assert to_issuer.startswith(issuer.issuer + "/auth?")
    flow_cookie = next(h for h in start.headers.get_list("set-cookie") if "mlaas4hep_login=" in h)
    assert "samesite=lax" in flow_cookie.lower()
    assert "httponly" in flow_cookie.lower()
    back = urlsplit(issuer.authorize(to_issuer))
    done = client.get(f"{back.path}?{back.query}")
    assert done.status_code == 200, done.text
    assert 'http-equiv="refresh"' in done.text
    assert "/ui/submit" in done.text
    sent = issuer.token_requests[-1]
    assert sent["grant_type"] == ["authorization_code"]
    assert len(sent["code_verifier"][0]) >= 43
    assert client.get("/ui/submit").status_code == 200
    assert "carol" in client.get("/ui/jobs").text


def test_a_callback_that_this_browser_did_not_start_is_refused(
    oidc_app: tuple[TestClient, FakeIssuer],
) -> None:
    client, issuer = oidc_app
    to_issuer = client.get("/ui/login/oidc").headers["location"]
    back = urlsplit(issuer.authorize(to_issuer))
    forged = parse_qs(back.query)
    r = client.get(f"{back.path}?code={forged['code'][0]}&state=someone-elses-state")
    assert r.status_code == 401
    assert "mlaas4hep_session" not in client.cookies
    client.cookies.clear()  # another browser: no flow cookie at all
    r = client.get(f"{back.path}?{back.query}")
    assert r.status_code == 401


def test_the_code_is_useless_without_the_verifier() -> None:
    issued: dict[str, Any] = {}

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("openid-configuration"):
            return httpx.Response(
                200,
                json={
                    "issuer": "https://idp.test",
                    "authorization_endpoint": "https://idp.test/auth",
                    "token_endpoint": "https://idp.test/token",
                },
            )
        issued.update(parse_qs(request.content.decode()))
        return httpx.Response(400, json={"error": "invalid_grant"})

    client = OidcClient(
        OidcClientSettings(issuer="https://idp.test", client_id="ui", scopes=("openid",)),
        transport=httpx.MockTransport(handle),
    )
    url, flow = client.start("https://svc.test/ui/login/callback", "/ui/jobs")
    query = parse_qs(urlsplit(url).query)
    digest = hashlib.sha256(flow.verifier.encode()).digest()
    assert query["code_challenge"] == [base64.urlsafe_b64encode(digest).rstrip(b"=").decode()]
    assert flow.verifier not in url  # only the challenge travels through the browser
    assert LoginFlow.from_cookie(flow.to_cookie()) == flow
    with pytest.raises(AuthError, match="refused the sign-in"):
        client.exchange("the-code", flow, flow.state, "https://svc.test/ui/login/callback")
    assert issued["code_verifier"] == [flow.verifier]
    client.close()
