"""Bearer token validation: from an ``Authorization`` header to a :class:`Principal`.

One code path for every issuer, the embedded local one included::

    header ─► size cap ─► JOSE header (alg allow-list, kid, no crit) ─► iss allow-list
           ─► typ allow-list of that issuer ─► issuer keys (discovery, JWKS cache)
           ─► signature, aud, exp/nbf/iat + leeway, required claims ─► not an ID token
           ─► wlcg.ver ─► scopes/groups ─► Principal

Only access tokens are accepted. The JOSE ``typ`` must be one the issuer is configured to
use for access tokens (``at+jwt`` by default, RFC 9068 s2.1 and RFC 8725 s3.11), and a
token carrying a claim that only ID tokens carry (``nonce``, ``at_hash``, ``c_hash``,
``s_hash``; OpenID Connect Core s2, s3.1.3.6, s3.3.2.11), or ``auth_time`` without any
``scope``, is refused as an ID token, also from issuers that type both kinds ``JWT``.

Failures raise :class:`AuthError` with a short reason that is safe to show to an
unauthenticated client (it never echoes the token or the claims). Tokens are never logged.
Where the caller can fix it (no token, an expired one, one signed by a key or an issuer this
service does not trust) the reason ends with the command that gets a good token from the
issuer concerned: ``mlaas4hep token`` for the embedded local issuer, ``mlaas4hep login``
for an OIDC issuer. Reasons stay under 100 characters, without quotes or URLs, so the API
shows them as they are.
An unreachable issuer raises :class:`~mlaas4hep.errors.IssuerUnavailable` (503) instead.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from jwt.exceptions import (
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAudienceError,
    InvalidIssuedAtError,
    InvalidIssuerError,
    InvalidSignatureError,
    MissingRequiredClaimError,
    PyJWTError,
)

from mlaas4hep.auth.jwks import IssuerKeys, UnknownKeyError
from mlaas4hep.auth.local_issuer import LocalIssuer
from mlaas4hep.auth.policy import effective_scopes
from mlaas4hep.auth.principal import Principal
from mlaas4hep.auth.proxy import TrustedProxies
from mlaas4hep.auth.settings import (
    ALLOWED_ALGORITHMS,
    REQUIRED_CLAIMS,
    AuthSettings,
    IssuerSettings,
)
from mlaas4hep.documents import load_json
from mlaas4hep.errors import AuthError

log = logging.getLogger(__name__)

# PyJWT's messages can quote claim values; clients get these fixed reasons instead.
_REASONS: tuple[tuple[type[PyJWTError], str], ...] = (
    (ImmatureSignatureError, "token not yet valid"),
    (InvalidIssuedAtError, "token issued-at time is invalid"),
    (InvalidAudienceError, "token audience is not this service"),
    (InvalidIssuerError, "token issuer mismatch"),
    (InvalidSignatureError, "token signature is invalid"),
    (MissingRequiredClaimError, "token lacks a required claim"),
)


#: How a user gets a token: from the embedded local issuer, and from an OIDC issuer.
MINT_COMMAND = "mlaas4hep token --user NAME --save"
LOGIN_COMMAND = "mlaas4hep login"


@dataclass(frozen=True)
class TrustedIssuer:
    """An issuer's settings together with its key cache; ``local``: the embedded issuer."""

    settings: IssuerSettings
    keys: IssuerKeys
    local: bool = False

    @property
    def remedy(self) -> str:
        """The command that gets a token from this issuer."""
        return MINT_COMMAND if self.local else LOGIN_COMMAND


class Authenticator:
    """Turns a request's credentials into a verified :class:`Principal`.

    Built once by :func:`build_authenticator`; thread-safe (FastAPI runs sync dependencies
    in a thread pool).
    """

    def __init__(self, settings: AuthSettings, issuers: Iterable[TrustedIssuer]) -> None:
        self._settings = settings
        self._issuers = {i.settings.issuer: i for i in issuers}
        self._proxies = TrustedProxies(settings.trusted_proxies)
        self._get_one = _how_to_get_one(self._issuers.values())

    @property
    def issuers(self) -> tuple[str, ...]:
        """The trusted issuer identifiers, for diagnostics and docs pages."""
        return tuple(self._issuers)

    def authenticate(
        self,
        authorization_header: str | None,
        peer: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> Principal:
        """Validate the request's bearer token and return the caller.

        Args:
            authorization_header: the raw ``Authorization`` header value, if any.
            peer: the TCP peer address; forwarded identity headers in ``headers`` are
                read only when it is a configured trusted proxy.
            headers: all request headers as (name, value) pairs (for the proxy mode).

        Raises:
            AuthError: no token, or the token is invalid (-> 401).
        """
        forwarded = self._proxies.extract(peer, headers)
        if forwarded.access_token is not None:
            principal = self.validate(forwarded.access_token)
            _check_forwarded_user(principal, forwarded.user)
            if not principal.groups and forwarded.groups:
                principal = self._with_groups(principal, forwarded.groups)
            return principal
        if forwarded.present:
            raise AuthError("proxy forwarded no access token; configure --pass-access-token")
        if not authorization_header:
            raise AuthError(f"missing bearer token; get one with: {self._get_one}")
        return self.validate(bearer_token(authorization_header))

    def validate(self, token: str) -> Principal:
        """Validate one access token (compact JWS) and return its principal.

        Raises:
            AuthError: with a short, client-safe reason.
        """
        if len(token) > self._settings.max_token_bytes:
            raise AuthError("token too large")
        header = _jose_header(token)
        issuer = self._issuers.get(_unverified_issuer(token))
        if issuer is None:
            raise AuthError(f"token issuer is not trusted; get one with: {self._get_one}")
        _check_token_type(header, issuer.settings)
        try:
            key = issuer.keys.key_for(header["kid"], header["alg"])
        except UnknownKeyError as exc:
            raise AuthError(_unknown_key(issuer)) from exc
        claims = self._verify(token, key.key, header["alg"], issuer)
        _check_not_id_token(claims)
        _check_wlcg_version(claims)
        return self._principal(claims, issuer.settings)

    def _verify(self, token: str, key: Any, alg: str, trusted: TrustedIssuer) -> dict[str, Any]:
        issuer = trusted.settings
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=list(issuer.audience),
                issuer=issuer.issuer,
                leeway=self._settings.leeway_s,
                options={"require": list(REQUIRED_CLAIMS), "verify_signature": True},
            )
        except ExpiredSignatureError as exc:
            raise AuthError(f"token expired; get a new one with: {trusted.remedy}") from exc
        except PyJWTError as exc:
            reason = next((r for t, r in _REASONS if isinstance(exc, t)), "token is invalid")
            raise AuthError(reason) from exc
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise AuthError("token subject is missing")
        return claims

    def _principal(self, claims: Mapping[str, Any], issuer: IssuerSettings) -> Principal:
        groups = _string_list(claims.get("wlcg.groups"))
        scope = claims.get("scope", "")
        token_scopes = scope.split() if isinstance(scope, str) else _string_list(scope)
        scopes = effective_scopes(
            token_scopes, groups, issuer.groups, self._settings.extra_capabilities
        )
        name = next((claims[c] for c in issuer.name_claims if isinstance(claims.get(c), str)), None)
        admin = self._settings.admin_group
        return Principal(
            issuer=claims["iss"],
            subject=claims["sub"],
            scopes=scopes,
            groups=frozenset(groups),
            name=name,
            is_admin=admin is not None and admin in groups,
        )

    def _with_groups(self, principal: Principal, groups: frozenset[str]) -> Principal:
        issuer = self._issuers[principal.issuer].settings
        scopes = principal.scopes or effective_scopes((), groups, issuer.groups)
        admin = self._settings.admin_group
        return Principal(
            issuer=principal.issuer,
            subject=principal.subject,
            scopes=scopes,
            groups=groups,
            name=principal.name,
            is_admin=admin is not None and admin in groups,
        )


def _how_to_get_one(issuers: Iterable[TrustedIssuer]) -> str:
    """The remedy for a caller without a (trusted) token: the commands of the issuers trusted."""
    kinds = {i.local for i in issuers}
    if kinds == {True}:
        return MINT_COMMAND
    if kinds == {True, False}:
        return f"{LOGIN_COMMAND} (or {MINT_COMMAND})"
    return LOGIN_COMMAND


def _unknown_key(issuer: TrustedIssuer) -> str:
    """The reason for a ``kid`` the issuer does not publish; names no key (not even its id)."""
    if issuer.local:
        # The local key lives in the service's data directory: a token minted against another
        # one (or before the key file was deleted and re-made) names a key this one lacks.
        return f"unknown key (minted with another --data-dir?): {MINT_COMMAND} --data-dir DIR"
    return f"token signed with an unknown key (kid); get a new one with: {LOGIN_COMMAND}"


def bearer_token(authorization_header: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header.

    Raises:
        AuthError: the header is missing or uses another scheme.
    """
    if not authorization_header:
        raise AuthError("missing bearer token")
    scheme, _, token = authorization_header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise AuthError("authorization header is not 'Bearer <token>'")
    return token


def _jose_header(token: str) -> dict[str, Any]:
    # Parsed here rather than by PyJWT so that each rejection gets its own reason.
    parts = token.split(".")
    if len(parts) != 3:
        raise AuthError("malformed token")
    header = _segment(parts[0])
    if header.get("alg") not in ALLOWED_ALGORITHMS:
        raise AuthError("token algorithm not allowed")
    if "crit" in header:
        # RFC 7515 s4.1.11: we understand no extension, so any critical one is fatal.
        raise AuthError("token uses an unsupported critical header")
    if not isinstance(header.get("kid"), str) or not header["kid"]:
        raise AuthError("token has no key id (kid)")
    return header


def _segment(part: str) -> dict[str, Any]:
    # Depth-capped (documents.py): a header or payload nested thousands deep would make
    # the json module raise RecursionError, i.e. a 500 instead of a 401.
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        value = load_json(raw, what="token", limit=len(raw))
    except ValueError as exc:  # binascii.Error and DocumentError are ValueErrors
        raise AuthError("malformed token") from exc
    if not isinstance(value, dict):
        raise AuthError("malformed token")
    return value


def _unverified_issuer(token: str) -> str:
    # Read only to pick the issuer's keys; every claim is verified against them below.
    claims = _segment(token.split(".")[1])
    iss = claims.get("iss")
    if not isinstance(iss, str):
        raise AuthError("token has no issuer")
    return iss


#: Claims defined for ID tokens only; an access token never needs them.
ID_TOKEN_CLAIMS = ("nonce", "at_hash", "c_hash", "s_hash")


def _check_token_type(header: Mapping[str, Any], issuer: IssuerSettings) -> None:
    typ = header.get("typ", "")
    if not isinstance(typ, str):
        raise AuthError("token type (typ) is malformed")
    allowed = {_media_type(t) for t in issuer.token_types}
    if _media_type(typ) not in allowed:
        raise AuthError("token is not an access token (typ); send an OAuth access token")


def _media_type(typ: str) -> str:
    # RFC 7515 s4.1.9: compare case-insensitively; "application/" may be omitted.
    typ = typ.strip().lower()
    return typ.removeprefix("application/")


def _check_not_id_token(claims: Mapping[str, Any]) -> None:
    if any(c in claims for c in ID_TOKEN_CLAIMS) or (
        "auth_time" in claims and "scope" not in claims
    ):
        raise AuthError("token is an ID token; send an OAuth access token instead")


def _check_wlcg_version(claims: Mapping[str, Any]) -> None:
    ver = claims.get("wlcg.ver")
    if ver is None:
        return
    if not isinstance(ver, str) or ver.split(".", 1)[0] != "1":
        raise AuthError("unsupported wlcg.ver; this service speaks WLCG token profile 1.x")


def _check_forwarded_user(principal: Principal, user: str | None) -> None:
    if user is None:
        return
    if user not in {principal.subject, principal.name}:
        raise AuthError("forwarded user does not match the forwarded access token")


def _string_list(value: object) -> list[str]:
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def build_authenticator(
    settings: AuthSettings,
    *,
    local: LocalIssuer | None = None,
    transport: httpx.BaseTransport | None = None,
) -> Authenticator:
    """Build the authenticator with one key cache per trusted issuer.

    Args:
        settings: the auth settings.
        local: a :class:`~mlaas4hep.auth.local_issuer.LocalIssuer` to trust as well; its
            documents are served by an in-process transport, everything else is the same.
        transport: HTTP transport for external issuers (tests may inject one).
    """
    issuers = [_trusted(s, settings, transport) for s in settings.issuers]
    if local is not None:
        own = _trusted(local.issuer_settings(), settings, local.transport())
        issuers.append(TrustedIssuer(settings=own.settings, keys=own.keys, local=True))
    if not issuers:
        log.warning("no trusted token issuer configured: every request will be rejected")
    return Authenticator(settings, issuers)


def _trusted(
    issuer: IssuerSettings, settings: AuthSettings, transport: httpx.BaseTransport | None
) -> TrustedIssuer:
    client = httpx.Client(
        transport=transport, timeout=settings.http_timeout_s, follow_redirects=False
    )
    keys = IssuerKeys(
        issuer.issuer,
        issuer.metadata_url,
        client,
        ttl_s=settings.jwks_ttl_s,
        min_refresh_s=settings.jwks_min_refresh_s,
        unknown_kid_ttl_s=settings.jwks_unknown_kid_ttl_s,
        wait_s=settings.http_timeout_s * 2,
        max_bytes=settings.max_document_bytes,
    )
    return TrustedIssuer(settings=issuer, keys=keys)
