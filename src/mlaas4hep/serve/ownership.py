"""Who owns a model, and who else may read or modify it.

The record lives with the model in the (shared) repository, so every inference replica
sees the same answer::

    <repo>/<name>/owner.json
    {"format": "mlaas4hep-owner/1", "owner": "ISSUER#SUBJECT", "owner_name": "alice",
     "groups": {"/cms/higgs": "read", "/cms/top": "modify"}, "created": 1760000000.0}

It is written once, at the first publish under a name, by an exclusive ``link`` of a
complete temporary file (the first publisher wins a race; nobody sees half a record);
changing the sharing later replaces it with an atomic ``rename``. Deleting the model
deletes the record and frees the name.

Access (on top of the ``storage.*:/models/NAME`` scopes, which are checked first):

========================  =====================================================
read, infer               the owner, members of a group shared ``read`` or
                          ``modify`` (``*``: every caller), the admin group
modify (new version,      the owner, members of a group shared ``modify``, the
load/unload, delete)      admin group
change the sharing        the owner and the admin group
========================  =====================================================

A model published before records existed (versions on disk, no ``owner.json``) belongs
to the admin group: only admins modify, unload or delete it, and every caller holding
the read scope may still read and infer on it, as before. An admin hands it to a user
by writing its ``owner.json``. An unreadable record denies everyone but admins.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mlaas4hep.auth.policy import can_access, can_modify, in_group
from mlaas4hep.auth.principal import Principal
from mlaas4hep.errors import PermissionDenied, SpecError

OWNER_FILE = "owner.json"
FORMAT = "mlaas4hep-owner/1"
LEVELS = ("read", "modify")
EVERYONE = "*"  # shares with every caller that holds the scope (a public model)
# What each data-plane action needs of the record.
_NEEDS = {"read": "read", "infer": "read", "create": "modify", "modify": "modify"}
_MAX_RECORD = 64 << 10


@dataclass(frozen=True)
class OwnerRecord:
    """One model's owner and sharing. ``owner`` is a principal key (``iss#sub``)."""

    owner: str
    owner_name: str | None = None
    groups: tuple[tuple[str, str], ...] = ()
    created: float = 0.0
    legacy: bool = False  # no owner.json: the admin group's, readable by all
    broken: bool = False  # owner.json unreadable: admins only

    def allows(self, principal: Principal, action: str) -> bool:
        """Whether *principal* may do *action* (read, infer, create, modify)."""
        need = _NEEDS.get(action)
        if principal.is_admin or need is None or self.broken:
            return principal.is_admin
        if self.legacy:  # the admin group's; readable as before records existed
            return need == "read"
        if need == "read":
            shared = frozenset(g for g, _ in self.groups if g != EVERYONE)
            public = any(g == EVERYONE for g, _ in self.groups)
            return can_access(principal, self.owner, shared_groups=shared, public=public)
        writers = [g for g, level in self.groups if level == "modify"]
        return can_modify(principal, self.owner) or any(
            g == EVERYONE or in_group(principal, g) for g in writers
        )

    def to_json(self) -> dict[str, object]:
        return {
            "format": FORMAT,
            "owner": self.owner,
            "owner_name": self.owner_name,
            "groups": dict(self.groups),
            "created": self.created,
        }


def parse_sharing(text: str) -> tuple[tuple[str, str], ...]:
    """``"/cms/higgs:read,/cms/top:modify"`` -> pairs; SpecError naming the bad entry."""
    pairs: dict[str, str] = {}
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        group, sep, level = item.rpartition(":")
        if not sep or not (group.startswith("/") or group == EVERYONE) or level not in LEVELS:
            msg = (
                f"invalid sharing entry {item!r}: write GROUP:LEVEL with a WLCG group path "
                f"(or '*' for everyone) and a level of {list(LEVELS)}, e.g. '/cms/higgs:read'"
            )
            raise SpecError(msg)
        pairs[group] = level
    return tuple(sorted(pairs.items()))


@dataclass
class ModelOwners:
    """Owner records of one repository, cached by the record file's identity."""

    root: Path
    _cache: dict[str, tuple[tuple[int, int, int], OwnerRecord]] = field(default_factory=dict)

    def record(self, name: str) -> OwnerRecord | None:
        """The model's record; a legacy one for an unrecorded model; None if unclaimed.

        On the inference path: one ``stat`` when the record is cached (plain strings, no
        ``Path`` objects: this runs for every request).
        """
        model_dir = f"{self.root}/{name}"
        path = f"{model_dir}/{OWNER_FILE}"
        try:
            info = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return self._unrecorded(name, model_dir)
        except OSError:
            return _BROKEN
        key = (info.st_ino, info.st_mtime_ns, info.st_size)
        hit = self._cache.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]
        record = _read(Path(path))
        self._cache[name] = (key, record)
        return record

    def _unrecorded(self, name: str, model_dir: str) -> OwnerRecord | None:
        # Legacy (versions, no record) or unclaimed; cached by the directory's identity
        # (adding or removing a version changes its mtime).
        try:
            info = os.stat(model_dir)
        except OSError:
            self._cache.pop(name, None)
            return None
        key = (info.st_ino, info.st_mtime_ns, -1)
        hit = self._cache.get(name)
        if hit is not None and hit[0] == key:
            return hit[1] if hit[1].legacy else None
        legacy = _has_versions(Path(model_dir))
        self._cache[name] = (key, _LEGACY if legacy else _UNCLAIMED)
        return _LEGACY if legacy else None

    def check(self, principal: Principal, action: str, name: str) -> None:
        """Raise PermissionDenied unless the record (if any) lets *principal* do *action*."""
        record = self.record(name)
        if record is None or record.allows(principal, action):
            return
        raise PermissionDenied(denied_message(name, action, record))

    def claim(
        self,
        name: str,
        owner: str,
        owner_name: str | None = None,
        groups: tuple[tuple[str, str], ...] = (),
    ) -> OwnerRecord:
        """Record *owner* (a principal key) as owner of the unclaimed *name*; return the
        record in force.

        Exclusive: if another publisher claimed the name first, its record is returned
        (the caller checks it like any other).
        """
        record = OwnerRecord(owner, owner_name, groups, time.time())
        model_dir = self.root / name
        model_dir.mkdir(parents=True, exist_ok=True)
        tmp = _write_tmp(model_dir, record)
        try:
            os.link(tmp, model_dir / OWNER_FILE)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        found = self.record(name)
        return found if found is not None else _BROKEN

    def share(self, name: str, groups: tuple[tuple[str, str], ...]) -> OwnerRecord:
        """Replace the sharing of an owned model (the caller checked it may)."""
        current = self.record(name)
        if current is None or current.legacy or current.broken:
            msg = f"model {name!r} has no owner record to share; an admin writes one first"
            raise SpecError(msg)
        record = OwnerRecord(current.owner, current.owner_name, groups, current.created)
        tmp = _write_tmp(self.root / name, record)
        os.replace(tmp, self.root / name / OWNER_FILE)
        return record


def denied_message(name: str, action: str, record: OwnerRecord) -> str:
    """Why *action* on *name* is refused (never naming the owner)."""
    if record.legacy:
        return (
            f"model {name!r} predates owner records and belongs to the admin group; "
            f"only an admin may {action} it (docs/inference.md, 'Ownership')"
        )
    if record.broken:
        return f"model {name!r} has an unreadable owner record; ask an admin to repair it"
    return (
        f"model {name!r} belongs to another user and is not shared with you for {action}; "
        "ask its owner to share it, or publish under another name"
    )


_LEGACY = OwnerRecord(owner="", legacy=True)
_UNCLAIMED = OwnerRecord(owner="")  # cache marker only; never returned
_BROKEN = OwnerRecord(owner="", broken=True)


def _read(path: Path) -> OwnerRecord:
    try:
        with open(path, "rb", opener=_nofollow) as fh:
            doc = json.loads(fh.read(_MAX_RECORD))
        groups = doc.get("groups") or {}
        if not isinstance(doc.get("owner"), str) or not isinstance(groups, Mapping):
            return _BROKEN
        pairs = tuple(sorted((str(g), str(v)) for g, v in groups.items() if v in LEVELS))
        name = doc.get("owner_name")
        return OwnerRecord(
            doc["owner"],
            name if isinstance(name, str) else None,
            pairs,
            float(doc["created"]) if isinstance(doc.get("created"), int | float) else 0.0,
        )
    except (OSError, ValueError, AttributeError):
        return _BROKEN


def _nofollow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)


def _write_tmp(model_dir: Path, record: OwnerRecord) -> Path:
    fd, name = tempfile.mkstemp(prefix=".owner-", suffix=".json", dir=model_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(record.to_json(), out, indent=1)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
    return Path(name)


def _has_versions(model_dir: Path) -> bool:
    try:
        return any(p.name.isdigit() for p in model_dir.iterdir())
    except OSError:
        return False
