"""Authentication against a real OIDC provider (panva/oidc-provider v9 on Node.js).

The provider (tests/integration/oidc_provider/server.mjs) runs on 127.0.0.1 with signing
keys from a file the test writes, so a restart with a new file is a key rotation. Tokens
are obtained from it over HTTP (client credentials, device flow) and presented to a tiny
FastAPI app that uses ``mlaas4hep.api.deps``, served by uvicorn on 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import shutil
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import Depends, FastAPI
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from mlaas4hep.api.deps import principal_dependency, require_scope
from mlaas4hep.auth.device_flow import DeviceFlow
from mlaas4hep.auth.principal import Principal
from mlaas4hep.auth.settings import AuthSettings, IssuerSettings
from mlaas4hep.auth.tokens import build_authenticator
from mlaas4hep.cli import main
from mlaas4hep.loopback import free_port

pytestmark = pytest.mark.timeout(180)

PROVIDER_DIR = Path(__file__).parent / "oidc_provider"
API = "https://mlaas.test/api"
ES256_API = "https://mlaas.test/es256"
OTHER_API = "https://other.test/api"


def node_ready() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH: install Node.js >= 20 to run the OIDC provider tests")
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        npm = shutil.which("npm") or "npm"
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=PROVIDER_DIR, check=True, timeout=300
        )
    return node


class OidcProvider:
    """One oidc-provider process; ``rotate()`` restarts it on the same port with new keys."""

    def __init__(self, node: str, workdir: Path) -> None:
        self.node, self.workdir = node, workdir
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[str] | None = None
        self.generation = 0
        self.rsa: rsa.RSAPrivateKey
        self.kid = ""

    def start(self) -> None:
        self.generation += 1
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = f"rsa-{self.port}-{self.generation}"
        ec_key = ec.generate_private_key(ec.SECP256R1())
        rsa_jwk = json.loads(RSAAlgorithm.to_jwk(self.rsa))
        ec_jwk = json.loads(ECAlgorithm.to_jwk(ec_key))
        keys = [
            {**rsa_jwk, "kid": self.kid, "alg": "RS256", "use": "sig"},
            {**ec_jwk, "kid": f"ec-{self.port}-{self.generation}", "alg": "ES256", "use": "sig"},
        ]
        keys_file = self.workdir / f"keys-{self.port}-{self.generation}.json"
        keys_file.write_text(json.dumps({"keys": keys}))
        keys_file.chmod(0o600)
        env = {"PORT": str(self.port), "KEYS_FILE": str(keys_file), "PATH": "/usr/bin:/bin"}
        self.proc = subprocess.Popen(
            [self.node, "server.mjs"],
            cwd=PROVIDER_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "ready <issuer>" or EOF if it died
        if not line.startswith("ready"):
            self.stop()
            pytest.fail(f"oidc-provider did not start (exit {self.proc.poll()}): {line!r}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None

    def rotate(self) -> None:
        self.stop()
        self.start()

    def token(self, client: str, scope: str | None = None, resource: str | None = None) -> str:
        data = {"grant_type": "client_credentials"}
        if scope is not None:
            data["scope"] = scope
        if resource is not None:
            data["resource"] = resource
        r = httpx.post(self.issuer + "/token", data=data, auth=(client, f"{client}-secret"))
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def forge(self, key: Any = None, kid: str | None = None, **claims: Any) -> str:
        """A token signed with the provider's own key (or ``key``), with chosen claims."""
        now = int(time.time())
        body = {"iss": self.issuer, "sub": "alice", "aud": API, "iat": now, "exp": now + 300}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        headers = {"kid": kid or self.kid, "typ": "at+jwt"}  # an access token (RFC 9068)
        return jwt.encode(body, key or self.rsa, algorithm="RS256", headers=headers)


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    p = OidcProvider(node_ready(), tmp_path_factory.mktemp("oidc"))
    p.start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def untrusted(
    provider: OidcProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OidcProvider]:
    p = OidcProvider(provider.node, tmp_path_factory.mktemp("oidc-untrusted"))
    p.start()
    yield p
    p.stop()


def build_app(provider: OidcProvider) -> FastAPI:
    issuer = IssuerSettings(
        issuer=provider.issuer,
        audience=(API, ES256_API),
        groups={"/cms/mlaas": frozenset({"compute.create", "compute.read"})},
    )
    direct = build_authenticator(AuthSettings(issuers=(issuer,), local_issuer=False))
    behind_proxy = build_authenticator(
        AuthSettings(issuers=(issuer,), local_issuer=False, trusted_proxies=("127.0.0.0/8",))
    )
    principal = principal_dependency(direct)
    proxied = principal_dependency(behind_proxy)
    can_submit = require_scope(principal, "compute.create")
    app = FastAPI()

    def describe(p: Principal) -> dict[str, Any]:
        return {
            "key": p.key,
            "scopes": sorted(p.scopes),
            "groups": sorted(p.groups),
            "admin": p.is_admin,
        }

    @app.get("/me")
    def me(caller: Principal = Depends(principal)) -> dict[str, Any]:  # noqa: B008
        return describe(caller)

    @app.post("/jobs")
    def submit(caller: Principal = Depends(can_submit)) -> dict[str, Any]:  # noqa: B008
        return describe(caller)

    @app.get("/proxied/me")
    def proxied_me(caller: Principal = Depends(proxied)) -> dict[str, Any]:  # noqa: B008
        return describe(caller)

    return app


@pytest.fixture(scope="module")
def service(provider: OidcProvider) -> Iterator[httpx.Client]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        build_app(provider), http="h11", ws="none", lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield client
    server.should_exit = True
    thread.join(10)
    sock.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- tokens from the provider are accepted --------------------------------------------------


def test_client_credentials_token_is_accepted(
    provider: OidcProvider, service: httpx.Client
) -> None:
    tok = provider.token("alice", "compute.create compute.read storage.read:/store/user/alice")
    r = service.get("/me", headers=bearer(tok))
    assert r.status_code == 200, r.text
    me = r.json()
    assert me["key"] == f"{provider.issuer}#alice"
    assert me["scopes"] == ["compute.create", "compute.read", "storage.read:/store/user/alice"]
    assert me["groups"] == ["/cms", "/cms/higgs"]
    assert service.post("/jobs", headers=bearer(tok)).status_code == 200


def test_es256_token_is_accepted(provider: OidcProvider, service: httpx.Client) -> None:
    tok = provider.token("bob", "compute.read", resource=ES256_API)
    assert jwt.get_unverified_header(tok)["alg"] == "ES256"
    assert service.get("/me", headers=bearer(tok)).json()["key"] == f"{provider.issuer}#bob"


def test_groups_are_mapped_when_the_token_has_no_capability(
    provider: OidcProvider, service: httpx.Client
) -> None:
    tok = provider.token("groupie")
    me = service.post("/jobs", headers=bearer(tok)).json()
    assert me["scopes"] == ["compute.create", "compute.read"]


def test_missing_scope_is_403_naming_it(provider: OidcProvider, service: httpx.Client) -> None:
    r = service.post("/jobs", headers=bearer(provider.token("bob", "compute.read")))
    assert r.status_code == 403
    assert "compute.create" in r.json()["detail"]


def test_admin_group(provider: OidcProvider, service: httpx.Client) -> None:
    me = service.get("/me", headers=bearer(provider.token("admin", "compute.read"))).json()
    assert me["admin"] is True


def test_device_flow_login(provider: OidcProvider, service: httpx.Client) -> None:
    with httpx.Client(timeout=10) as client:
        flow = DeviceFlow(client, provider.issuer, "mlaas4hep-cli", scopes=["compute.read"])
        code = flow.start()
        approve_in_browser(code.verification_uri_complete or "", user="carol")
        token = flow.poll(code, sleep=lambda s: None)
    me = service.get("/me", headers=bearer(token)).json()
    assert me["key"] == f"{provider.issuer}#carol"
    assert me["scopes"] == ["compute.read"]


def test_cli_login_device_flow(
    provider: OidcProvider,
    service: httpx.Client,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``mlaas4hep login --issuer`` end to end: prompt, approve, poll, token file 0600."""
    path = tmp_path / "token"
    argv = ["login", "--issuer", provider.issuer, "--client-id", "mlaas4hep-cli"]
    argv += ["--scope", "compute.create", "--token-file", str(path)]
    result: list[int] = []
    cli = threading.Thread(target=lambda: result.append(main(argv)))
    cli.start()
    seen = ""
    deadline = time.monotonic() + 20
    while "Open " not in seen and time.monotonic() < deadline:
        time.sleep(0.05)
        seen += capsys.readouterr().err
    url = re.search(r"Open (\S+) and enter the code", seen)
    assert url is not None, seen
    approve_in_browser(url.group(1), user="dave")
    cli.join(30)  # the CLI polls at the provider's interval (5 s)
    assert result == [0]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    r = service.post("/jobs", headers=bearer(path.read_text().strip()))
    assert r.status_code == 200
    assert r.json()["key"] == f"{provider.issuer}#dave"


def approve_in_browser(url: str, user: str) -> None:
    """What the user does in the browser: confirm the code, log in, consent."""
    with httpx.Client(follow_redirects=True, timeout=10) as browser:
        page = browser.get(url)
        for _ in range(6):
            form = re.search(r'<form[^>]*action="([^"]+)"', page.text)
            if form is None:
                break
            fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page.text))
            if 'name="login"' in page.text:
                fields.update(login=user, password="any")  # noqa: S106 (dev login takes any)
            page = browser.post(str(page.url.join(form.group(1))), data=fields)
        assert "Sign-in Success" in page.text, page.text[-500:]


# --- key rotation ---------------------------------------------------------------------------


def test_key_rotation_without_service_restart(
    provider: OidcProvider, service: httpx.Client
) -> None:
    old = provider.token("alice", "compute.read")
    assert service.get("/me", headers=bearer(old)).status_code == 200
    provider.rotate()  # new key file, new kid, same issuer
    new = provider.token("alice", "compute.read")
    assert jwt.get_unverified_header(new)["kid"] != jwt.get_unverified_header(old)["kid"]
    started = time.monotonic()
    assert service.get("/me", headers=bearer(new)).status_code == 200
    assert time.monotonic() - started < 5  # no blind spot: at most one refresh interval
    # The old key is no longer published, so tokens signed with it are refused.
    assert service.get("/me", headers=bearer(old)).status_code == 401


# --- the negative matrix: each is a 401 with a Bearer challenge and nothing leaked ----------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def negative_case(
    kind: str, provider: OidcProvider, untrusted: OidcProvider
) -> tuple[dict[str, str], str]:
    """(headers, secret that must not appear in the response) for one rejection case."""
    now = int(time.time())
    if kind == "no_token":
        return {}, ""
    if kind == "malformed":
        return bearer("abc.def"), "abc.def"
    if kind == "forwarded_from_untrusted_peer":
        tok = provider.token("alice", "compute.create")
        headers = {
            "X-Forwarded-User": "alice",
            "X-Forwarded-Access-Token": tok,
            "X_Forwarded_Groups": "/mlaas/admin",
        }
        return headers, tok
    tok = {
        "expired": lambda: provider.forge(exp=now - 3600, iat=now - 7200),
        "not_yet_valid": lambda: provider.forge(nbf=now + 3600),
        "wrong_aud": lambda: provider.token("alice", "compute.read", resource=OTHER_API),
        "wrong_iss": lambda: provider.forge(iss=provider.issuer + "/"),
        "alg_none": lambda: unsigned(provider),
        "hs256_with_rsa_public_key": lambda: hs256_with_public_key(provider),
        "tampered_payload": lambda: tampered(provider.token("bob", "compute.read")),
        "unknown_kid": lambda: provider.forge(
            key=rsa.generate_private_key(public_exponent=65537, key_size=2048), kid="not-published"
        ),
        "untrusted_issuer": lambda: untrusted.token("alice", "compute.create"),
        "oversized": lambda: provider.forge(padding="x" * 10_000),
    }[kind]()
    return bearer(tok), tok


def unsigned(provider: OidcProvider) -> str:
    claims = jwt.decode(provider.forge(), options={"verify_signature": False})
    head = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": provider.kid}).encode())
    return f"{head}.{b64(json.dumps(claims).encode())}."


def hs256_with_public_key(provider: OidcProvider) -> str:
    """The classic confusion attack: HMAC keyed with the issuer's published RSA key."""
    jwks = httpx.get(provider.issuer + "/jwks").json()
    jwk = next(k for k in jwks["keys"] if k["kid"] == provider.kid)
    pem = RSAAlgorithm.from_jwk(jwk).public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = jwt.decode(provider.forge(), options={"verify_signature": False})
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": provider.kid}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def tampered(token: str) -> str:
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(sub="alice", scope="compute.create compute.modify")
    return f"{head}.{b64(json.dumps(claims).encode())}.{sig}"


# kind -> the reason the client is told (proves each case fails for its own reason), with
# the remedy for the issuers this service trusts (an OIDC issuer only: `mlaas4hep login`)
NEGATIVE = {
    "no_token": "missing bearer token; get one with: mlaas4hep login",
    "malformed": "malformed token",
    "expired": "token expired; get a new one with: mlaas4hep login",
    "not_yet_valid": "token not yet valid",
    "wrong_aud": "token audience is not this service",
    "wrong_iss": "token issuer is not trusted; get one with: mlaas4hep login",
    "alg_none": "token algorithm not allowed",
    "hs256_with_rsa_public_key": "token algorithm not allowed",
    "tampered_payload": "token signature is invalid",
    "unknown_kid": "token signed with an unknown key (kid); get a new one with: mlaas4hep login",
    "untrusted_issuer": "token issuer is not trusted; get one with: mlaas4hep login",
    "oversized": "token too large",
    "forwarded_from_untrusted_peer": "missing bearer token; get one with: mlaas4hep login",
}


@pytest.mark.parametrize(("kind", "reason"), NEGATIVE.items())
def test_negative_matrix(
    kind: str, reason: str, provider: OidcProvider, untrusted: OidcProvider, service: httpx.Client
) -> None:
    headers, secret = negative_case(kind, provider, untrusted)
    for path in ("/me", "/jobs"):
        r = service.request("GET" if path == "/me" else "POST", path, headers=headers)
        assert r.status_code == 401, (kind, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")
        body = r.text
        assert r.json() == {"detail": reason}
        assert len(body) < 200
        if secret:
            assert secret not in body
            assert secret.split(".")[0] not in body
        assert "alice" not in body
        assert "bob" not in body
        assert provider.issuer not in body


# --- oauth2-proxy mode ----------------------------------------------------------------------


def test_trusted_proxy_forwarded_token_is_revalidated(
    provider: OidcProvider, service: httpx.Client
) -> None:
    tok = provider.token("alice", "compute.read")
    ok = service.get(
        "/proxied/me", headers={"X-Forwarded-Access-Token": tok, "X-Forwarded-User": "alice"}
    )
    assert ok.status_code == 200
    assert ok.json()["key"] == f"{provider.issuer}#alice"
    liar = service.get(
        "/proxied/me", headers={"X-Forwarded-Access-Token": tok, "X-Forwarded-User": "bob"}
    )
    assert liar.status_code == 401
    forged = service.get("/proxied/me", headers={"X-Forwarded-Access-Token": tampered(tok)})
    assert forged.status_code == 401
    no_token = service.get("/proxied/me", headers={"X-Forwarded-User": "alice"})
    assert no_token.status_code == 401
