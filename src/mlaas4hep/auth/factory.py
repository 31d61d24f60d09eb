"""Build the service's authenticator from the ``auth:`` settings section, once.

The app factory calls :func:`create_authenticator` with the raw mapping, the data
directory and the listen address; it gets the :class:`Authenticator` for the request
dependency and the :class:`LocalIssuer` (or ``None``) whose documents it publishes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mlaas4hep.auth.local_issuer import LocalIssuer, check_loopback
from mlaas4hep.auth.settings import AuthSettings
from mlaas4hep.auth.tokens import Authenticator, build_authenticator
from mlaas4hep.errors import SpecError


@dataclass(frozen=True)
class AuthSetup:
    """What the app factory needs from the auth layer."""

    settings: AuthSettings
    authenticator: Authenticator
    local_issuer: LocalIssuer | None


def create_authenticator(
    raw: Mapping[str, Any] | AuthSettings, *, data_dir: Path, listen_host: str
) -> AuthSetup:
    """Settings -> authenticator (+ local issuer when enabled or defaulted).

    The local issuer is on when ``local_issuer`` is true, or unset and no external issuer
    is configured; it then requires a loopback ``listen_host``.

    Raises:
        SpecError: invalid settings, or the local issuer on a non-loopback address, or no
            issuer at all.
    """
    settings = raw if isinstance(raw, AuthSettings) else AuthSettings.from_mapping(raw)
    if settings.data_dir is None:
        settings = replace(settings, data_dir=data_dir)
    use_local = settings.local_issuer
    if use_local is None:
        use_local = not settings.issuers
    local = None
    if use_local:
        check_loopback(listen_host)
        local = LocalIssuer.from_settings(settings)
    elif not settings.issuers:
        msg = "auth: no token issuer configured; add auth.issuers or set auth.local_issuer"
        raise SpecError(msg)
    return AuthSetup(settings, build_authenticator(settings, local=local), local)
