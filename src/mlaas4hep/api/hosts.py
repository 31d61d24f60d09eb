"""The ``Host`` and ``Origin`` check: no DNS rebinding of a service on loopback.

A page on ``http://evil.example:8000`` whose name the attacker re-points at 127.0.0.1
reaches a loopback service as "its own origin": the browser sends ``Host: evil.example``
and happily shows the page the answers. So every request (API, UI, inference, health)
must name this service: its ``Host`` header is checked against ``allowed_hosts`` before
any route runs, and a state-changing request's ``Origin``, when a browser sends one, too.

The rules are Django's ``ALLOWED_HOSTS`` and Jupyter's local-host check:

* the port is ignored (the attacker controls the name, not which port the socket is on);
* an IP literal always passes (no name, so nothing to re-point; Kubernetes probes send
  the pod IP);
* a name must be listed: exactly, or under a ``.example.org`` entry (the domain and its
  subdomains); ``*`` lists every name (only behind a proxy that checks ``Host`` itself);
* the default list is the loopback names (``localhost`` and ``*.localhost``, which
  browsers always resolve to loopback, RFC 6761) plus the ``host`` the service binds to.

Refusals: a foreign ``Host`` gets 421 Misdirected Request; a foreign or ``null``
``Origin`` on POST/PUT/PATCH/DELETE gets 403. Both are problem+json, before any
authentication (so a token is never checked on behalf of a foreign page).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from mlaas4hep.api.errors import problem

log = logging.getLogger(__name__)
LOOPBACK_NAMES = ("localhost", ".localhost")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 (names, not a bind)


@dataclass(frozen=True)
class AllowedHosts:
    """Which ``Host`` names this service answers to (see the module docstring)."""

    names: frozenset[str]

    @classmethod
    def build(cls, configured: Iterable[str] | None, bind_host: str) -> AllowedHosts:
        """The configured list, or the default for a service bound to *bind_host*."""
        if configured is not None:
            return cls(frozenset(n.strip().lower().rstrip(".") for n in configured if n.strip()))
        names = set(LOOPBACK_NAMES)
        if bind_host.lower() not in _WILDCARD_BINDS:
            names.add(bind_host.lower())
        else:
            log.warning(
                "the service listens on all interfaces but allowed_hosts is not set: only "
                "loopback names and IP addresses are answered; set MLAAS4HEP_ALLOWED_HOSTS "
                "(e.g. '[mlaas.example.org]') to the names clients use"
            )
        return cls(frozenset(names))

    def permits(self, host: str | None) -> bool:
        """Whether a ``Host`` value (``name[:port]``, ``[v6]:port``) names this service."""
        name = _hostname(host)
        if name is None:
            return False
        if _is_ip(name) or "*" in self.names or name in self.names:
            return True
        return any(n.startswith(".") and (name == n[1:] or name.endswith(n)) for n in self.names)

    def permits_origin(self, origin: str) -> bool:
        """Whether an ``Origin`` header (``scheme://host[:port]``) is one of ours."""
        if origin == "null":
            return False
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and self.permits(parts.netloc)


def _hostname(host: str | None) -> str | None:
    if not host or len(host) > 255 or any(c.isspace() or c in "/@\\?#" for c in host):
        return None
    if host.startswith("["):  # [v6] or [v6]:port
        end = host.find("]")
        return host[1:end].lower() if end > 0 else None
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name.lower().rstrip(".") or None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostGuard:
    """ASGI middleware applying :class:`AllowedHosts` to every HTTP request."""

    def __init__(self, app: ASGIApp, allowed: AllowedHosts) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host")
        if scope["type"] == "websocket" and not self.allowed.permits(host):
            await send({"type": "websocket.close", "code": 1008})
            return
        if not self.allowed.permits(host):
            detail = (
                f"this service does not answer to the host name {(host or '')[:100]!r}; "
                "use its own address (an operator lists extra names in allowed_hosts)"
            )
            await problem(421, detail, slug="misdirected-request")(scope, receive, send)
            return
        origin = headers.get("origin")
        method = scope.get("method", "GET")
        foreign = origin is not None and not self.allowed.permits_origin(origin)
        if foreign and method not in _SAFE_METHODS:
            detail = "this request comes from a page of another site; use the service's pages"
            await problem(403, detail, slug="foreign-origin")(scope, receive, send)
            return
        await self.app(scope, receive, send)
