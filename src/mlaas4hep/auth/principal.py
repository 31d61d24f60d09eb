"""The authenticated caller, as every route and job sees it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Principal:
    """A verified identity: ``(issuer, subject)`` plus what the token grants.

    ``scopes`` are WLCG capability scopes (e.g. ``compute.create``,
    ``storage.read:/store/user/a``); ``groups`` come from ``wlcg.groups``.
    """

    issuer: str
    subject: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    groups: frozenset[str] = field(default_factory=frozenset)
    name: str | None = None
    is_admin: bool = False

    @property
    def key(self) -> str:
        """Stable owner key for stored resources (issuer and subject together)."""
        return f"{self.issuer}#{self.subject}"
