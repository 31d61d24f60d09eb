"""The web UI's sign-in against a real OIDC provider: authorization code + PKCE.

The provider (tests/integration/oidc_provider/server.mjs, panva/oidc-provider v9) registers
the UI as a public client when started with ``UI_REDIRECT_URI``. The service (the whole
``create_app``, trusting only that provider) runs under uvicorn on 127.0.0.1; an HTTP client
plays the browser: it follows the redirects, fills the provider's dev login and consent
forms, and comes back to the UI's callback with the code.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from mlaas4hep.api.app import create_app
from mlaas4hep.config import Settings
from mlaas4hep.loopback import free_port

pytestmark = pytest.mark.timeout(180)
PROVIDER_DIR = Path(__file__).parent / "oidc_provider"
API = "https://mlaas.test/api"  # a resource the provider issues JWT access tokens for


@dataclass
class Provider:
    issuer: str
    proc: subprocess.Popen[str]


@pytest.fixture(scope="module")
def ui_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory, ui_port: int) -> Iterator[Provider]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH: install Node.js >= 20 to run the OIDC provider tests")
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        npm = shutil.which("npm") or "npm"
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=PROVIDER_DIR, check=True, timeout=300
        )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**json.loads(RSAAlgorithm.to_jwk(key)), "kid": "ui-rsa", "alg": "RS256", "use": "sig"}
    keys = tmp_path_factory.mktemp("oidc-ui") / "keys.json"
    keys.write_text(json.dumps({"keys": [jwk]}))
    keys.chmod(0o600)
    port = free_port()
    env = {
        "PORT": str(port),
        "KEYS_FILE": str(keys),
        "PATH": "/usr/bin:/bin",
        "UI_REDIRECT_URI": f"http://127.0.0.1:{ui_port}/ui/login/callback",
    }
    proc = subprocess.Popen(
        [node, "server.mjs"],
        cwd=PROVIDER_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    try:
        if not line.startswith("ready"):
            pytest.fail(f"oidc-provider did not start (exit {proc.poll()}): {line!r}")
        yield Provider(f"http://127.0.0.1:{port}", proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()


@pytest.fixture(scope="module")
def service(
    provider: Provider, ui_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    settings = Settings.model_validate(
        {
            "data_dir": str(tmp_path_factory.mktemp("ui-oidc-data")),
            "port": ui_port,
            "auth": {"issuers": [{"issuer": provider.issuer, "audience": API}]},
            "ui": {
                "oidc": {
                    "issuer": provider.issuer,
                    "client_id": "mlaas4hep-ui",
                    "scopes": ["openid", "compute.read", "compute.create"],
                    "resource": API,
                }
            },
        }
    )
    app = create_app(settings, run_executor=False)
    config = uvicorn.Config(app, host="127.0.0.1", port=ui_port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{ui_port}"
    finally:
        server.should_exit = True
        thread.join(10)


def fill_provider_forms(browser: httpx.Client, page: httpx.Response, user: str) -> httpx.Response:
    """What the user does at the provider: log in (any password), consent."""
    for _ in range(6):
        form = re.search(r'<form[^>]*action="([^"]+)"', page.text)
        if (
            form is None
            or not str(page.url).startswith("http://127.0.0.1")
            or "/ui/" in str(page.url)
        ):
            break
        fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page.text))
        if 'name="login"' in page.text:
            fields.update(login=user, password="any")  # noqa: S106 (dev login takes any)
        page = browser.post(str(page.url.join(form.group(1))), data=fields)
    return page


def test_browser_sign_in_with_authorization_code_and_pkce(provider: Provider, service: str) -> None:
    seen: list[httpx.URL] = []
    hooks = {"request": [lambda request: seen.append(request.url)]}
    with httpx.Client(follow_redirects=True, timeout=20, event_hooks=hooks) as browser:
        login = browser.get(f"{service}/ui/jobs")
        assert login.url.path == "/ui/login"
        assert "Sign in with" in login.text
        page = browser.get(f"{service}/ui/login/oidc?next=/ui/submit")
        assert str(page.url).startswith(provider.issuer)  # at the provider's login form
        authorize = next(u for u in seen if u.path == "/auth")
        assert authorize.params["code_challenge_method"] == "S256"
        assert len(authorize.params["code_challenge"]) == 43
        assert authorize.params["resource"] == API
        assert "code_verifier" not in str(authorize)
        done = fill_provider_forms(browser, page, user="dave")
        assert done.url.path == "/ui/login/callback", done.text[-800:]
        assert done.status_code == 200, done.text[-800:]
        assert "Signed in" in done.text
        assert 'content="0; url=/ui/submit"' in done.text
        jobs = browser.get(f"{service}/ui/jobs")
        assert jobs.status_code == 200
        assert "dave" in jobs.text
        # The session is the provider's access token; the API takes it as a bearer token.
        token = browser.cookies.get("mlaas4hep_session", path="/ui")
        assert token
        api = browser.get(f"{service}/api/v1/jobs", headers={"Authorization": f"Bearer {token}"})
        assert api.status_code == 200


class Intercepted(Exception):
    """Raised by the request hook to stop the browser before it reaches the callback."""


def test_a_code_replayed_by_another_browser_is_refused(provider: Provider, service: str) -> None:
    def stop_at_callback(request: httpx.Request) -> None:
        if request.url.path == "/ui/login/callback":
            raise Intercepted(str(request.url))

    hooks = {"request": [stop_at_callback]}
    with httpx.Client(follow_redirects=True, timeout=20, event_hooks=hooks) as browser:
        page = browser.get(f"{service}/ui/login/oidc")
        with pytest.raises(Intercepted) as stopped:
            fill_provider_forms(browser, page, user="mallory")
        callback = str(stopped.value)
        with httpx.Client(timeout=20) as other:  # no flow cookie: not its sign-in
            r = other.get(callback)
        assert r.status_code == 401
        assert "mlaas4hep_session" not in r.headers.get("set-cookie", "")
        browser.event_hooks = {"request": []}
        forged = re.sub(r"state=[^&]+", "state=forged", callback)
        r = browser.get(forged)  # the right browser, another state
        assert r.status_code == 401
        assert browser.cookies.get("mlaas4hep_session", path="/ui") is None
