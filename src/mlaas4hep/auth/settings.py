"""Authentication settings: trusted issuers, group mapping, proxy peers, limits.

Frozen dataclasses built once (by the config loader or ``AuthSettings.from_mapping``) and
handed to :func:`mlaas4hep.auth.tokens.build_authenticator`. Nothing here does I/O.

A typical configuration (YAML or env-derived mapping)::

    auth:
      admin_group: /mlaas/admin
      issuers:
        - issuer: https://cms-auth.web.cern.ch/
          audience: https://mlaas.example.org
          token_types: [at+jwt, JWT]  # IAM marks access tokens 'JWT' (default: [at+jwt])
          groups:                     # used only when a token has no capability scopes
            /cms: [compute.read, "storage.read:/store"]
            /cms/mlaas: [compute.create, compute.read, compute.cancel, "storage.create:/models"]
      trusted_proxies: [10.0.0.0/8]   # oauth2-proxy peers allowed to send X-Forwarded-*
      local_issuer: false
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlaas4hep.errors import SpecError

#: Signature algorithms we accept; never ``none``, never HMAC (a public key is no secret).
ALLOWED_ALGORITHMS: tuple[str, ...] = ("RS256", "ES256")
#: Claims every access token must carry.
REQUIRED_CLAIMS: tuple[str, ...] = ("iss", "sub", "aud", "exp", "iat")
#: The JOSE ``typ`` of an OAuth 2.0 access token in JWT format (RFC 9068 s2.1).
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 (a media type, not a secret)
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


@dataclass(frozen=True)
class IssuerSettings:
    """One trusted token issuer.

    ``issuer`` is compared byte for byte with the token's ``iss`` and with the discovery
    document's ``issuer``. ``audience`` lists the accepted ``aud`` values (one must match).
    ``groups`` maps a ``wlcg.groups`` entry to the capability scopes it grants; it is used
    only for tokens that carry no capability scope (WLCG Common JWT Profile).
    ``token_types`` lists the JOSE ``typ`` values accepted from this issuer, compared
    case-insensitively with any ``application/`` prefix dropped (RFC 7515 s4.1.9): only
    ``at+jwt`` by default (RFC 9068 s2.1); add ``JWT`` for providers that mark their access
    tokens so (INDIGO IAM, Keycloak) and ``""`` for ones that send no ``typ`` at all.
    """

    issuer: str
    audience: tuple[str, ...]
    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)
    discovery_url: str | None = None
    name_claims: tuple[str, ...] = ("preferred_username", "name", "email")
    token_types: tuple[str, ...] = (ACCESS_TOKEN_TYPE,)

    def __post_init__(self) -> None:
        check_url(self.issuer, what="issuer")
        if not self.token_types:
            msg = (
                f"issuer {self.issuer!r} accepts no token type; set token_types, e.g. "
                f"[{ACCESS_TOKEN_TYPE}] or [{ACCESS_TOKEN_TYPE}, JWT]"
            )
            raise SpecError(msg)
        if self.discovery_url is not None:
            check_url(self.discovery_url, what="discovery_url")
        if not self.audience:
            msg = f"issuer {self.issuer!r} has no audience; set the audience your tokens carry"
            raise SpecError(msg)

    @property
    def metadata_url(self) -> str:
        """Where the OIDC discovery document lives."""
        if self.discovery_url:
            return self.discovery_url
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


@dataclass(frozen=True)
class AuthSettings:
    """Everything the authenticator needs; see the module docstring for an example.

    ``local_issuer`` turns on the embedded issuer (keys in ``data_dir``), for loopback
    deployments only; ``None`` (the default) means "on when no external issuer is
    configured". ``trusted_proxies`` are CIDRs whose ``X-Forwarded-*`` headers are
    read (oauth2-proxy mode). ``jwks_min_refresh_s`` bounds how often an unknown ``kid``
    may trigger a JWKS fetch; requests arriving meanwhile are answered at once from the
    cached keys (a rotated key is accepted at most this long after its first token).
    A ``kid`` that a fetch did not contain is refused without fetching again for
    ``jwks_unknown_kid_ttl_s`` (see :mod:`mlaas4hep.auth.jwks`).
    """

    issuers: tuple[IssuerSettings, ...] = ()
    admin_group: str | None = "/mlaas/admin"
    local_issuer: bool | None = None
    data_dir: Path | None = None
    local_audience: str = "mlaas4hep"
    local_groups: Mapping[str, frozenset[str]] = field(default_factory=dict)
    trusted_proxies: tuple[str, ...] = ()
    max_token_bytes: int = 8192
    leeway_s: int = 60
    jwks_ttl_s: float = 300.0
    jwks_min_refresh_s: float = 1.0
    jwks_unknown_kid_ttl_s: float = 60.0
    http_timeout_s: float = 5.0
    max_document_bytes: int = 256 * 1024
    extra_capabilities: frozenset[str] = frozenset({"mlaas.infer", "mlaas.metrics"})

    def __post_init__(self) -> None:
        for cidr in self.trusted_proxies:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                msg = f"trusted_proxies entry {cidr!r} is not an IP network (e.g. 10.0.0.0/8)"
                raise SpecError(msg) from exc
        seen = [i.issuer for i in self.issuers]
        if len(seen) != len(set(seen)):
            msg = f"issuers are listed twice: {sorted({s for s in seen if seen.count(s) > 1})}"
            raise SpecError(msg)
        if not 0 <= self.leeway_s <= 300:
            msg = f"leeway_s={self.leeway_s!r} is out of range; use 0..300 seconds (default 60)"
            raise SpecError(msg)
        if self.jwks_unknown_kid_ttl_s < self.jwks_min_refresh_s:
            msg = (
                f"jwks_unknown_kid_ttl_s={self.jwks_unknown_kid_ttl_s!r} is shorter than "
                f"jwks_min_refresh_s={self.jwks_min_refresh_s!r}; make it at least as long"
            )
            raise SpecError(msg)
        if self.max_token_bytes < 512:
            msg = f"max_token_bytes={self.max_token_bytes!r} is too small; use at least 512"
            raise SpecError(msg)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> AuthSettings:
        """Build settings from plain data (a parsed YAML ``auth:`` section, say).

        Raises:
            SpecError: a key is unknown or a value has the wrong shape.
        """
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            msg = f"unknown auth settings {unknown}; known: {sorted(known)}"
            raise SpecError(msg)
        values = dict(raw)
        values["issuers"] = tuple(_issuer_from_mapping(i) for i in raw.get("issuers", ()))
        values["local_groups"] = _groups(raw.get("local_groups", {}))
        values["trusted_proxies"] = tuple(raw.get("trusted_proxies", ()))
        if raw.get("data_dir") is not None:
            values["data_dir"] = Path(raw["data_dir"]).expanduser()
        if "extra_capabilities" in raw:
            values["extra_capabilities"] = frozenset(raw["extra_capabilities"])
        return cls(**values)


def _issuer_from_mapping(raw: Mapping[str, Any]) -> IssuerSettings:
    if not isinstance(raw, Mapping) or "issuer" not in raw or "audience" not in raw:
        msg = f"an issuer entry needs 'issuer' and 'audience' keys, got {raw!r}"
        raise SpecError(msg)
    audience = raw["audience"]
    return IssuerSettings(
        issuer=str(raw["issuer"]),
        audience=(audience,) if isinstance(audience, str) else tuple(audience),
        groups=_groups(raw.get("groups", {})),
        discovery_url=raw.get("discovery_url"),
        token_types=_token_types(raw.get("token_types", (ACCESS_TOKEN_TYPE,))),
    )


def _token_types(raw: object) -> tuple[str, ...]:
    if isinstance(raw, str) or not isinstance(raw, Sequence):
        msg = f"token_types must be a list such as [{ACCESS_TOKEN_TYPE}, JWT], got {raw!r}"
        raise SpecError(msg)
    return tuple("" if t is None else str(t) for t in raw)


def _groups(raw: Mapping[str, Sequence[str]]) -> dict[str, frozenset[str]]:
    if not isinstance(raw, Mapping):
        msg = f"a groups mapping must map group -> list of scopes, got {raw!r}"
        raise SpecError(msg)
    return {str(g): frozenset(str(s) for s in scopes) for g, scopes in raw.items()}


def check_url(url: str, *, what: str) -> None:
    """Reject URLs we must not fetch keys from: only https, or http on loopback.

    Raises:
        SpecError: naming the setting and the URL.
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme == "https" and host:
        return
    if parts.scheme == "http" and host in LOOPBACK_HOSTS:
        return
    msg = f"{what} {url!r} must be an https:// URL (plain http only on loopback)"
    raise SpecError(msg)


def default_data_dir() -> Path:
    """``$MLAAS4HEP_DATA_DIR``, else ``$XDG_DATA_HOME/mlaas4hep``, else ``~/.local/share``."""
    if env := os.environ.get("MLAAS4HEP_DATA_DIR"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mlaas4hep"
