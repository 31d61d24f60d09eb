"""The embedded local token issuer, for ``make demo`` and single-user local use.

It signs ES256 access tokens with a key generated on first use and kept in
``<data_dir>/auth/`` (directory 0700, key 0600), and publishes an OIDC discovery document
and a JWKS exactly like an external issuer. The service validates its tokens through the
same :class:`~mlaas4hep.auth.jwks.IssuerKeys` and :class:`~mlaas4hep.auth.tokens.Authenticator`
path; only the HTTP transport is in-process (:meth:`LocalIssuer.transport`), so no request
leaves the process. The same documents are what the API serves under ``/auth/local/``.

It is meant for loopback only: :func:`check_loopback` refuses any other listen address.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import secrets
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from mlaas4hep.auth.settings import LOOPBACK_HOSTS, AuthSettings, IssuerSettings
from mlaas4hep.errors import AuthError, SpecError

log = logging.getLogger(__name__)

#: The local issuer's identifier; a fixed loopback URL so that tokens minted by the CLI
#: (another process, maybe before the server starts) carry the same ``iss``.
LOCAL_ISSUER = "http://127.0.0.1/mlaas4hep/local-issuer"
_KEY_FILE = "local-issuer-key.pem"
_MAX_LIFETIME_S = 30 * 24 * 3600


class LocalIssuer:
    """Key, discovery document, JWKS and token minting of the embedded issuer.

    Args:
        data_dir: the service data directory; the key lives in ``data_dir/auth``.
        audience: the ``aud`` minted tokens carry and the service expects.
        groups: group -> scopes mapping for tokens minted without scopes.
        issuer: the issuer identifier (default :data:`LOCAL_ISSUER`).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        audience: str = "mlaas4hep",
        groups: dict[str, frozenset[str]] | None = None,
        issuer: str = LOCAL_ISSUER,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self._groups = dict(groups or {})
        self._key = _load_or_create_key(Path(data_dir) / "auth")
        public = json.loads(ECAlgorithm.to_jwk(self._key.public_key()))
        self.kid = _thumbprint(public)
        self._public_jwk = {**public, "kid": self.kid, "alg": "ES256", "use": "sig"}

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> LocalIssuer:
        """The local issuer configured by ``settings`` (needs ``data_dir``)."""
        if settings.data_dir is None:
            raise SpecError("the local issuer needs auth data_dir (where its key is kept)")
        return cls(
            settings.data_dir, audience=settings.local_audience, groups=dict(settings.local_groups)
        )

    def issuer_settings(self) -> IssuerSettings:
        """This issuer as an entry of the trusted-issuer list."""
        return IssuerSettings(issuer=self.issuer, audience=(self.audience,), groups=self._groups)

    def discovery_document(self) -> dict[str, Any]:
        """The OIDC discovery metadata (``/.well-known/openid-configuration``)."""
        return {
            "issuer": self.issuer,
            "jwks_uri": self.issuer + "/jwks",
            "id_token_signing_alg_values_supported": ["ES256"],
            "response_types_supported": [],
            "subject_types_supported": ["public"],
            "grant_types_supported": [],
        }

    def jwks(self) -> dict[str, Any]:
        """The public key set (``jwks_uri``)."""
        return {"keys": [dict(self._public_jwk)]}

    def mint(
        self,
        user: str,
        scopes: Iterable[str] = (),
        *,
        groups: Iterable[str] = (),
        lifetime_s: int = 3600,
    ) -> str:
        """Sign an access token for ``user`` with WLCG claims.

        Raises:
            SpecError: empty user name or a lifetime outside 1 s .. 30 days.
        """
        if not user.strip():
            raise SpecError("a token needs a user name (--user NAME)")
        if not 0 < lifetime_s <= _MAX_LIFETIME_S:
            msg = f"token lifetime {lifetime_s!r} s is out of range; use 1..{_MAX_LIFETIME_S}"
            raise SpecError(msg)
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": user,
            "aud": self.audience,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime_s,
            "jti": str(uuid.uuid4()),
            "preferred_username": user,
            "scope": " ".join(sorted(set(scopes))),
            "wlcg.ver": "1.0",
            "wlcg.groups": sorted(set(groups)),
        }
        # typ at+jwt: an access token (RFC 9068 s2.1), which is all the validator accepts.
        headers = {"kid": self.kid, "typ": "at+jwt"}
        return jwt.encode(claims, self._key, algorithm="ES256", headers=headers)

    def transport(self) -> httpx.BaseTransport:
        """An in-process HTTP transport answering the discovery and JWKS URLs."""
        routes = {
            self.issuer + "/.well-known/openid-configuration": self.discovery_document,
            self.issuer + "/jwks": self.jwks,
        }

        def handle(request: httpx.Request) -> httpx.Response:
            url = str(request.url.copy_with(query=None))
            doc = routes.get(url)
            if request.method != "GET" or doc is None:
                return httpx.Response(404, json={"error": "not found"})
            return httpx.Response(200, json=doc())

        return httpx.MockTransport(handle)


def check_loopback(host: str) -> None:
    """Refuse to run the local issuer on a non-loopback listen address, loudly.

    Raises:
        SpecError: ``host`` is not a loopback address.
    """
    if host.strip("[]").lower() not in LOOPBACK_HOSTS | {"::1"}:
        msg = (
            f"the local token issuer only runs when the service listens on loopback, not "
            f"{host!r}; configure an external OIDC issuer (auth.issuers) for this deployment"
        )
        raise SpecError(msg)
    log.warning(
        "LOCAL TOKEN ISSUER ENABLED: anyone with shell access to this data directory can "
        "mint tokens (mlaas4hep token --user NAME --scope ...); single-user local use only"
    )


def _load_or_create_key(directory: Path) -> ec.EllipticCurvePrivateKey:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    path = directory / _KEY_FILE
    if not path.exists():
        _create_key(path)
    if path.stat().st_mode & 0o077:
        msg = f"{path} is readable by others; run: chmod 600 {path}"
        raise AuthError(msg)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        msg = f"{path} does not hold an EC private key; delete it to generate a new one"
        raise AuthError(msg)
    return key


def _create_key(path: Path) -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Write a private temp file, then link it into place: a concurrent process (CLI and
    # server starting together) either wins the link or reads the complete winner.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint, the key id."""
    members = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode())
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
