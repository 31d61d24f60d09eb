"""Reverse-proxy (oauth2-proxy) mode: forwarded identity headers from trusted peers only.

Behind oauth2-proxy the service sees ``X-Forwarded-User``, ``X-Forwarded-Groups`` and
``X-Forwarded-Access-Token``. Anyone can send those headers, so they are read only when
the TCP peer is in the configured CIDR list; for every other peer they are dropped,
including spellings with underscores (``X_Forwarded_User``), which some servers fold into
the same CGI variable. Even from a trusted peer the forwarded access token is validated
like any bearer token: the proxy is trusted to route, never to vouch for an identity.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

FORWARDED_USER = "x-forwarded-user"
FORWARDED_GROUPS = "x-forwarded-groups"
FORWARDED_TOKEN = "x-forwarded-access-token"  # noqa: S105 (a header name)
FORWARDED_EMAIL = "x-forwarded-email"
FORWARDED_PREFERRED = "x-forwarded-preferred-username"
IDENTITY_HEADERS = frozenset(
    {FORWARDED_USER, FORWARDED_GROUPS, FORWARDED_TOKEN, FORWARDED_EMAIL, FORWARDED_PREFERRED}
)


@dataclass(frozen=True)
class Forwarded:
    """Identity headers a trusted proxy sent (all optional)."""

    user: str | None = None
    groups: frozenset[str] = frozenset()
    access_token: str | None = None

    @property
    def present(self) -> bool:
        return self.user is not None or self.access_token is not None or bool(self.groups)


class TrustedProxies:
    """The CIDR list of peers whose ``X-Forwarded-*`` identity headers are believed."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        self._nets = tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)

    def trusts(self, peer: str | None) -> bool:
        """Whether ``peer`` (an IP address string) is a configured proxy."""
        if not peer or not self._nets:
            return False
        try:
            addr = ipaddress.ip_address(peer)
        except ValueError:
            return False  # a unix socket or a hostname is never a trusted proxy
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self._nets)

    def extract(self, peer: str | None, headers: Iterable[tuple[str, str]]) -> Forwarded:
        """The forwarded identity from ``headers``, or an empty one if ``peer`` is untrusted.

        A header sent twice is ambiguous (two proxies, or a client that slipped one past
        the proxy): it is ignored, so the request falls back to its own bearer token.
        """
        if not self.trusts(peer):
            return Forwarded()
        values: dict[str, list[str]] = {}
        for name, value in headers:
            key = normalise(name)
            if key in IDENTITY_HEADERS:
                values.setdefault(key, []).append(value)

        def one(key: str) -> str | None:
            got = values.get(key, [])
            return got[0].strip() or None if len(got) == 1 else None

        groups = one(FORWARDED_GROUPS)
        return Forwarded(
            user=one(FORWARDED_USER),
            groups=frozenset(g.strip() for g in groups.split(",") if g.strip())
            if groups
            else frozenset(),
            access_token=one(FORWARDED_TOKEN),
        )


def normalise(name: str) -> str:
    """Header name folded the way CGI-style servers fold it (case, ``_`` vs ``-``)."""
    return name.strip().lower().replace("_", "-")


def strip_identity_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` without any forwarded identity header, in any spelling.

    For ASGI middleware that must not pass client-supplied identity headers downstream.
    """
    return [(n, v) for n, v in headers if normalise(n) not in IDENTITY_HEADERS]
