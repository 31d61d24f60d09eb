"""Token storage, the device flow (mock issuer) and the ``token``/``login`` commands."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlaas4hep.auth.device_flow import DeviceFlow
from mlaas4hep.auth.local_issuer import LocalIssuer
from mlaas4hep.auth.settings import AuthSettings
from mlaas4hep.auth.token_store import load_token, save_token
from mlaas4hep.auth.tokens import build_authenticator
from mlaas4hep.cli import main
from mlaas4hep.errors import AuthError

ISS = "https://iam.example.org"


def test_token_file_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLAAS4HEP_TOKEN", raising=False)
    path = save_token("abc.def.ghi\n", tmp_path / "cfg" / "token")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_token(path) == "abc.def.ghi"
    path.chmod(0o644)
    with pytest.raises(AuthError, match="chmod 600"):
        load_token(path)
    with pytest.raises(AuthError, match="mlaas4hep login"):
        load_token(tmp_path / "missing")
    with pytest.raises(AuthError, match="whitespace"):
        save_token("a b", path)


class MockIam:
    """Device grant: pending twice, then slow_down, then the token."""

    def __init__(self, outcome: str = "ok") -> None:
        self.polls = 0
        self.outcome = outcome
        self.forms: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        if url == ISS + "/.well-known/openid-configuration":
            return httpx.Response(
                200,
                json={
                    "issuer": ISS,
                    "device_authorization_endpoint": ISS + "/device",
                    "token_endpoint": ISS + "/token",
                },
            )
        form = dict(httpx.QueryParams(request.content.decode()))
        self.forms.append(form)
        if url == ISS + "/device":
            return httpx.Response(
                200,
                json={
                    "device_code": "dc",
                    "user_code": "ABCD-EFGH",
                    "verification_uri": ISS + "/activate",
                    "interval": 1,
                    "expires_in": 60,
                },
            )
        self.polls += 1
        steps = ["authorization_pending", "authorization_pending", "slow_down"]
        if self.polls <= len(steps):
            return httpx.Response(400, json={"error": steps[self.polls - 1]})
        if self.outcome != "ok":
            return httpx.Response(400, json={"error": self.outcome})
        return httpx.Response(200, json={"access_token": "the.access.token"})


def flow(iam: MockIam) -> DeviceFlow:
    client = httpx.Client(transport=httpx.MockTransport(iam))
    return DeviceFlow(client, ISS, "cli", scopes=["compute.read"], resource="https://mlaas")


def test_device_flow_polls_at_the_pace_asked() -> None:
    iam = MockIam()
    f = flow(iam)
    code = f.start()
    assert code.user_code == "ABCD-EFGH"
    waits: list[float] = []
    assert f.poll(code, sleep=waits.append) == "the.access.token"
    assert waits == [1, 1, 1, 6]  # slow_down adds 5 s
    assert iam.forms[0] == {
        "client_id": "cli",
        "scope": "compute.read",
        "resource": "https://mlaas",
    }
    assert iam.forms[-1]["grant_type"] == "urn:ietf:params:oauth:grant-type:device_code"


def test_device_flow_denied() -> None:
    f = flow(MockIam("access_denied"))
    with pytest.raises(AuthError, match="access_denied"):
        f.poll(f.start(), sleep=lambda s: None)


def test_device_flow_expires() -> None:
    f = flow(MockIam())
    code = f.start()
    t = [0.0]

    def sleep(s: float) -> None:
        t[0] += 100

    with pytest.raises(AuthError, match="expired"):
        f.poll(code, sleep=sleep, clock=lambda: t[0])


def test_cli_token_mints_a_valid_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLAAS4HEP_TOKEN", raising=False)
    store = tmp_path / "tok"
    args = ["token", "--user", "alice", "--scope", "compute.read", "--data-dir", str(tmp_path)]
    assert main([*args, "--save", str(store)]) == 0
    token = capsys.readouterr().out.strip()
    assert load_token(store) == token
    auth = build_authenticator(AuthSettings(local_issuer=True), local=LocalIssuer(tmp_path))
    p = auth.validate(token)
    assert (p.subject, p.scopes) == ("alice", frozenset({"compute.read"}))
    assert stat.S_IMODE((tmp_path / "auth" / "local-issuer-key.pem").stat().st_mode) == 0o600


def test_cli_login_stores_a_given_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t"
    assert main(["login", "--token", "x.y.z", "--token-file", str(path)]) == 0
    assert path.read_text() == "x.y.z\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert main(["login"]) == 2
    assert "--issuer" in capsys.readouterr().err


def test_cli_token_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--user", "a", "--lifetime", "0", "--data-dir", str(tmp_path)]) == 2
    assert "lifetime" in capsys.readouterr().err


def test_discovery_document_round_trip(tmp_path: Path) -> None:
    local = LocalIssuer(tmp_path)
    assert json.loads(json.dumps(local.discovery_document()))["issuer"] == local.issuer


def test_device_flow_unreachable_issuer() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    f = DeviceFlow(httpx.Client(transport=httpx.MockTransport(refuse)), ISS, "cli")
    with pytest.raises(AuthError, match="cannot reach"):
        f.start()


def test_device_flow_incomplete_answer() -> None:
    def half(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("openid-configuration"):
            meta = {
                "issuer": ISS,
                "device_authorization_endpoint": ISS + "/d",
                "token_endpoint": "t",
            }
            return httpx.Response(200, json=meta)
        return httpx.Response(200, json={"device_code": "x"})

    f = DeviceFlow(httpx.Client(transport=httpx.MockTransport(half)), ISS, "cli")
    with pytest.raises(AuthError, match="incomplete"):
        f.start()
