"""Settings of the web UI: the ``ui:`` section of the service settings.

::

    ui:
      session_lifetime_s: 28800        # local sign-in: how long the session token lives
      local_user: alice                # local sign-in: the subject (default: the OS user)
      oidc:                            # browser sign-in against an external issuer
        issuer: https://cms-auth.cern.ch/       # must be one of auth.issuers
        client_id: mlaas4hep-ui                 # a public client, authorization code + PKCE
        client_secret: null                     # only for a confidential client
        scopes: [openid, compute.read, compute.create, compute.cancel]
        redirect_uri: null          # default: <service URL>/ui/login/callback
        resource: null              # RFC 8707 resource indicator (the audience), if needed

Frozen dataclasses built once by :func:`mlaas4hep.api.ui.install_ui`; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlaas4hep.auth.settings import check_url
from mlaas4hep.errors import SpecError

_MAX_SESSION_S = 7 * 24 * 3600


@dataclass(frozen=True)
class OidcClientSettings:
    """The UI as an OAuth 2.0 client of an external issuer (authorization code + PKCE)."""

    issuer: str
    client_id: str
    client_secret: str | None = None
    scopes: tuple[str, ...] = ("openid",)
    redirect_uri: str | None = None
    resource: str | None = None
    discovery_url: str | None = None

    def __post_init__(self) -> None:
        check_url(self.issuer, what="ui.oidc.issuer")
        if self.redirect_uri is not None:
            check_url(self.redirect_uri, what="ui.oidc.redirect_uri")
        if not self.client_id:
            raise SpecError("ui.oidc.client_id is empty; register a client with the issuer")

    @property
    def metadata_url(self) -> str:
        """Where the issuer's discovery document lives."""
        return self.discovery_url or (self.issuer.rstrip("/") + "/.well-known/openid-configuration")


@dataclass(frozen=True)
class UiSettings:
    """Everything the UI needs besides the service itself."""

    session_lifetime_s: int = 8 * 3600
    local_user: str | None = None
    oidc: OidcClientSettings | None = None

    def __post_init__(self) -> None:
        if not 60 <= self.session_lifetime_s <= _MAX_SESSION_S:
            msg = (
                f"ui.session_lifetime_s={self.session_lifetime_s!r} is out of range; "
                f"use 60..{_MAX_SESSION_S} seconds"
            )
            raise SpecError(msg)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> UiSettings:
        """Build the settings from the parsed ``ui:`` section.

        Raises:
            SpecError: an unknown key or a value of the wrong shape.
        """
        known = {"session_lifetime_s", "local_user", "oidc"}
        unknown = sorted(set(raw) - known)
        if unknown:
            msg = f"unknown ui settings {unknown}; known: {sorted(known)}"
            raise SpecError(msg)
        oidc = raw.get("oidc")
        return cls(
            session_lifetime_s=int(raw.get("session_lifetime_s", 8 * 3600)),
            local_user=raw.get("local_user"),
            oidc=None if oidc is None else _oidc(oidc),
        )


def _oidc(raw: Any) -> OidcClientSettings:
    if not isinstance(raw, Mapping) or "issuer" not in raw or "client_id" not in raw:
        msg = f"ui.oidc needs 'issuer' and 'client_id' keys, got {raw!r}"
        raise SpecError(msg)
    known = set(OidcClientSettings.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        msg = f"unknown ui.oidc settings {unknown}; known: {sorted(known)}"
        raise SpecError(msg)
    values = dict(raw)
    if "scopes" in values:
        values["scopes"] = tuple(str(s) for s in values["scopes"])
    return OidcClientSettings(**values)
