"""The model registry's operations: versions with provenance, aliases, serving policy.

Plain Python over the data plane (its permission checks) and the manager (what serves):
the HTTP routes (serve/registry_routes.py), the web UI and the CLI (through the routes)
all call these. Reading needs the ``read`` right on the model, changing aliases or the
policy the ``modify`` right, exactly like load/unload (serve/ownership.py).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlaas4hep.artifact import FEATURES_FILE, read_features
from mlaas4hep.auth.principal import Principal
from mlaas4hep.errors import Mlaas4hepError, NotFound, SpecError
from mlaas4hep.serve.dataplane import DataPlane
from mlaas4hep.serve.metadata import read_metadata
from mlaas4hep.serve.registry import AliasTable, check_alias
from mlaas4hep.serve.repository import ModelRepository, VersionPolicy, check_model_name

#: Versions a serving policy may load at once (aliased versions are counted apart,
#: bounded by ``registry.MAX_ALIASES``).
MAX_POLICY_VERSIONS = 16


@dataclass(frozen=True)
class FeatureDefaults:
    """Starting values of the predict form: one per feature, and where they come from."""

    values: tuple[float, ...]
    source: str


class ModelRegistry:
    """Registry views and changes for one inference service."""

    def __init__(self, plane: DataPlane) -> None:
        self._plane = plane

    @property
    def _repo(self) -> ModelRepository:
        return self._plane.manager.repository

    async def view(self, principal: Principal, name: str) -> dict[str, Any]:
        """The model's versions (state, aliases, provenance, metrics), aliases and policy."""
        self._plane.check(principal, "read", check_model_name(name))
        manager = self._plane.manager
        on_disk = await asyncio.to_thread(self._repo.versions, name)
        if not on_disk:
            msg = f"model {name!r} is not in the repository"
            raise NotFound(msg)
        config = manager.config_of(name)
        if config is None:
            config = await asyncio.to_thread(self._repo.config, name)
        stored = await asyncio.to_thread(self._repo.aliases, name)
        index = {e.version: e for e in await manager.index(name)}
        versions = []
        for version in sorted(on_disk, reverse=True):
            row = await asyncio.to_thread(self._version_row, name, version)
            entry = index.get(version)
            row["state"] = entry.state if entry else "UNAVAILABLE"
            row["status"] = entry.status if entry else "not loaded"
            row["reason"] = entry.reason if entry else ""
            row["aliases"] = stored.of_version(version)
            versions.append(row)
        record = self._plane.owners.record(name)
        return {
            "name": name,
            "owner": _who(record.owner_name, record.owner) if record else "",
            "policy": config.version_policy.describe(),
            "policy_set": config.policy_set,
            "aliases": dict(sorted(stored.aliases.items())),
            "history": {a: list(h) for a, h in stored.history.items() if h},
            "versions": versions,
        }

    def _version_row(self, name: str, version: int) -> dict[str, Any]:
        vdir = self._repo.root / name / str(version)
        record = self._repo.record(name, version)
        try:
            meta = read_metadata(vdir)
        except Mlaas4hepError:
            meta = None
        created = record.created if record else 0.0
        return {
            "version": version,
            "source": record.source if record else "unknown",
            "source_job": record.source_job if record else None,
            "published_by": _who(record.owner_name, record.owner) if record else "",
            "created": _iso(created) if created else (meta.created if meta else None),
            "spec_hash": meta.spec_hash if meta else None,
            "metrics": dict(meta.metrics) if meta else {},
        }

    async def promote(
        self, principal: Principal, name: str, version: int, alias: str
    ) -> dict[str, Any]:
        """Point *alias* at *version* (loaded first); return the change."""
        self._plane.check(principal, "modify", check_model_name(name))
        check_alias(alias)
        before = await asyncio.to_thread(self._repo.aliases, name)
        table = await self._plane.manager.change_aliases(name, lambda t: t.promote(alias, version))
        return _change(name, alias, before, table)

    async def rollback(self, principal: Principal, name: str, alias: str) -> dict[str, Any]:
        """Move *alias* back to the version it pointed to before; return the change."""
        self._plane.check(principal, "modify", check_model_name(name))
        before = await asyncio.to_thread(self._repo.aliases, name)
        table = await self._plane.manager.change_aliases(name, lambda t: t.rollback(name, alias))
        return _change(name, alias, before, table)

    async def remove_alias(self, principal: Principal, name: str, alias: str) -> dict[str, Any]:
        """Delete *alias* (its version stays published; the policy decides if it loads)."""
        self._plane.check(principal, "modify", check_model_name(name))
        before = await asyncio.to_thread(self._repo.aliases, name)
        table = await self._plane.manager.change_aliases(name, lambda t: t.remove(name, alias))
        return _change(name, alias, before, table)

    async def set_policy(self, principal: Principal, name: str, text: str) -> dict[str, Any]:
        """Set which versions are loaded (``latest``, ``latest:N``, ``all``, ``aliased``,
        ``versions:1,3``) and apply it now; return the versions loaded after."""
        self._plane.check(principal, "modify", check_model_name(name))
        policy = VersionPolicy.parse(text)
        on_disk = await asyncio.to_thread(self._repo.versions, name)
        if not on_disk:
            msg = f"model {name!r} is not in the repository"
            raise NotFound(msg)
        check_policy(name, policy, on_disk)
        await asyncio.to_thread(self._repo.set_policy, name, policy)
        await self._plane.manager.sync(name)
        loaded = self._plane.manager.served_versions(name)
        return {"name": name, "policy": policy.describe(), "loaded": loaded}

    def feature_defaults(self, principal: Principal, name: str) -> FeatureDefaults | None:
        """Per-feature starting values from the served version's normalisation statistics
        (``features.json``: the means for ``standard``, the mid-range for ``minmax``);
        None when the version carries none."""
        self._plane.check(principal, "read", check_model_name(name))
        loaded = self._plane.manager.get(name)
        return bundle_defaults(self._repo.root / name / str(loaded.version))


def check_policy(name: str, policy: VersionPolicy, on_disk: list[int]) -> None:
    """Refuse a policy that would serve none of *on_disk* (everything unloaded) or more
    than ``MAX_POLICY_VERSIONS`` versions (each loaded version holds its session in
    memory); SpecError saying what to set instead."""
    chosen = policy.select(on_disk)
    wants = len(policy.specific) if policy.specific else policy.latest or len(chosen)
    if max(wants, len(chosen)) > MAX_POLICY_VERSIONS:
        msg = (
            f"serving policy {policy.describe()!r} loads {max(wants, len(chosen))} versions of "
            f"model {name!r}; at most {MAX_POLICY_VERSIONS} are served at once: use "
            f"'latest:{MAX_POLICY_VERSIONS}' or fewer, or 'versions:' with the ones you need"
        )
        raise SpecError(msg)
    if not chosen:
        msg = (
            f"serving policy {policy.describe()!r} names none of the versions of model "
            f"{name!r} ({', '.join(map(str, on_disk))}): it would unload them all; name "
            "versions that exist, or 'latest'"
        )
        raise SpecError(msg)


def bundle_defaults(version_dir: Path) -> FeatureDefaults | None:
    """See :meth:`ModelRegistry.feature_defaults` (a version directory's statistics)."""
    if not (version_dir / FEATURES_FILE).is_file():
        return None
    try:
        features = read_features(version_dir)
    except Mlaas4hepError:
        return None
    n = len(features.features)
    if len(features.offset) != n or len(features.scale) != n or n == 0:
        return None
    if features.normalize == "standard":
        values = features.offset
        source = "the training means (standard normalisation)"
    elif features.normalize == "minmax":
        values = tuple(o + s / 2 for o, s in zip(features.offset, features.scale, strict=True))
        source = "the middle of each training range (minmax normalisation)"
    else:
        return None
    return FeatureDefaults(tuple(float(f"{v:.6g}") for v in values), source)


def _change(name: str, alias: str, before: AliasTable, after: AliasTable) -> dict[str, Any]:
    return {
        "name": name,
        "alias": alias,
        "previous": before.aliases.get(alias),
        "version": after.aliases.get(alias),
        "aliases": dict(sorted(after.aliases.items())),
    }


def _who(name: str | None, key: str) -> str:
    """A user's display name: the recorded one, else the subject of the key (iss#sub)."""
    return name or key.rpartition("#")[2]


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
