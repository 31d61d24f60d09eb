from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from mlaas4hep.auth.factory import create_authenticator
from mlaas4hep.auth.local_issuer import LOCAL_ISSUER, LocalIssuer, check_loopback
from mlaas4hep.auth.settings import AuthSettings
from mlaas4hep.auth.tokens import build_authenticator
from mlaas4hep.errors import AuthError, SpecError


def test_key_is_private_and_persistent(tmp_path: Path) -> None:
    first = LocalIssuer(tmp_path)
    key = tmp_path / "auth" / "local-issuer-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert LocalIssuer(tmp_path).kid == first.kid
    assert list(key.parent.iterdir()) == [key]  # no temp files left behind


def test_world_readable_key_is_refused(tmp_path: Path) -> None:
    LocalIssuer(tmp_path)
    (tmp_path / "auth" / "local-issuer-key.pem").chmod(0o644)
    with pytest.raises(AuthError, match="chmod 600"):
        LocalIssuer(tmp_path)


def test_concurrent_creation_agrees_on_one_key(tmp_path: Path) -> None:
    kids: list[str] = []
    threads = [
        threading.Thread(target=lambda: kids.append(LocalIssuer(tmp_path).kid)) for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(kids)) == 1


def test_documents_look_like_an_oidc_issuer(tmp_path: Path) -> None:
    local = LocalIssuer(tmp_path)
    meta = local.discovery_document()
    assert meta["issuer"] == LOCAL_ISSUER
    assert meta["jwks_uri"].startswith(LOCAL_ISSUER)
    (jwk,) = local.jwks()["keys"]
    assert (jwk["kid"], jwk["alg"], jwk["kty"]) == (local.kid, "ES256", "EC")
    assert "d" not in jwk  # public half only


def test_minted_token_validates_through_the_common_path(tmp_path: Path) -> None:
    local = LocalIssuer(tmp_path)
    auth = build_authenticator(AuthSettings(local_issuer=True), local=local)
    tok = local.mint("alice", ["compute.create", "storage.read:/data"], groups=["/mlaas/admin"])
    p = auth.authenticate("Bearer " + tok)
    assert (p.issuer, p.subject, p.name, p.is_admin) == (LOCAL_ISSUER, "alice", "alice", True)
    assert p.scopes == frozenset({"compute.create", "storage.read:/data"})


def test_token_from_another_data_dir_is_rejected(tmp_path: Path) -> None:
    mine, theirs = LocalIssuer(tmp_path / "a"), LocalIssuer(tmp_path / "b")
    auth = build_authenticator(AuthSettings(local_issuer=True), local=mine)
    with pytest.raises(AuthError, match="unknown key"):
        auth.validate(theirs.mint("mallory", ["compute.create"]))


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]"])
def test_loopback_hosts_are_accepted(host: str, caplog: pytest.LogCaptureFixture) -> None:
    check_loopback(host)
    assert "LOCAL TOKEN ISSUER ENABLED" in caplog.text


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.org"])
def test_non_loopback_is_refused(host: str) -> None:
    with pytest.raises(SpecError, match="only runs when the service listens on loopback"):
        check_loopback(host)


def test_factory_defaults_to_the_local_issuer_on_loopback(tmp_path: Path) -> None:
    setup = create_authenticator({}, data_dir=tmp_path, listen_host="127.0.0.1")
    assert setup.local_issuer is not None
    assert setup.authenticator.issuers == (LOCAL_ISSUER,)
    with pytest.raises(SpecError, match="loopback"):
        create_authenticator({}, data_dir=tmp_path, listen_host="0.0.0.0")


def test_factory_with_external_issuer_only(tmp_path: Path) -> None:
    raw = {"issuers": [{"issuer": "https://iam.example.org/", "audience": "mlaas"}]}
    setup = create_authenticator(raw, data_dir=tmp_path, listen_host="0.0.0.0")
    assert setup.local_issuer is None
    assert setup.authenticator.issuers == ("https://iam.example.org/",)
    with pytest.raises(SpecError, match="no token issuer"):
        create_authenticator({"local_issuer": False}, data_dir=tmp_path, listen_host="::1")


def test_mint_checks_its_arguments(tmp_path: Path) -> None:
    local = LocalIssuer(tmp_path)
    with pytest.raises(SpecError, match="user name"):
        local.mint(" ")
    with pytest.raises(SpecError, match="lifetime"):
        local.mint("a", lifetime_s=0)
