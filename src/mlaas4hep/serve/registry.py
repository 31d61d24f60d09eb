"""The model registry's records on disk: version provenance and named aliases.

They live with the model in the (shared) repository, beside ``owner.json``, so every
inference replica reads the same::

    <repo>/<name>/aliases.json         {"format": "mlaas4hep-aliases/1",
                                        "aliases": {"production": 3, "staging": 4},
                                        "history": {"production": [1, 2]}}
    <repo>/<name>/<version>/version.json
                                       {"format": "mlaas4hep-version/1", "source": "job",
                                        "source_job": "4f2c…", "owner": "ISS#SUB",
                                        "owner_name": "alice", "created": 1760000000.0}

``aliases.json`` is rewritten whole (temp file + ``rename``) under an exclusive lock on
``<repo>/<name>/.aliases.lock``, so two replicas promoting at once never lose a change.
``history[alias]`` lists the versions the alias pointed to before (oldest first): a
rollback moves the alias back to the last one and drops it from the list.
``version.json`` is written into the staged directory before its atomic rename, so a
version never appears without its record. The spec hash, test metrics and creation time
of the bundle itself are in ``metadata.json`` (:mod:`mlaas4hep.serve.metadata`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlaas4hep.errors import NotFound, SpecError

ALIASES_FILE = "aliases.json"
VERSION_FILE = "version.json"
ALIASES_FORMAT = "mlaas4hep-aliases/1"
VERSION_FORMAT = "mlaas4hep-version/1"
#: What ``NAME@ALIAS`` separates: not a character of model names.
ALIAS_SEPARATOR = "@"
RESERVED_ALIASES = ("latest",)
_ALIAS = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_MAX_RECORD = 256 << 10
_MAX_HISTORY = 50
#: Aliases per model: each pins its version in memory, whatever the serving policy.
MAX_ALIASES = 16
_MAX_VERSION_DIGITS = 9


def check_alias(alias: str) -> str:
    """Return *alias* if it is a valid alias name, else raise SpecError saying the rule."""
    if not _ALIAS.fullmatch(alias) or alias in RESERVED_ALIASES:
        msg = (
            f"invalid alias {alias!r}: use 1-64 lower-case letters, digits, '_' or '-', "
            f"starting with a letter (not {', '.join(map(repr, RESERVED_ALIASES))}), "
            "e.g. 'production' or 'staging'"
        )
        raise SpecError(msg)
    return alias


def parse_version(text: str) -> int:
    """A version number written in ASCII digits (``"3"``), else SpecError saying so."""
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_VERSION_DIGITS:
        msg = f"version {text[:40]!r} is not a version number; give a positive integer, e.g. 3"
        raise SpecError(msg)
    if int(text) < 1:
        msg = f"version {text!r}: versions start at 1"
        raise SpecError(msg)
    return int(text)


def split_ref(name: str, version: str | None) -> tuple[str, str | None]:
    """``NAME@ALIAS`` -> ``(NAME, ALIAS)``; a plain name keeps *version* (number, alias,
    ``latest`` or None). SpecError when both a ``@ALIAS`` and a version are given."""
    base, sep, alias = name.partition(ALIAS_SEPARATOR)
    if not sep:
        return name, version
    if not alias:  # "NAME@" from an unset variable must not serve the default version
        msg = f"{name!r} names no alias after '@'; write NAME@ALIAS, e.g. m@production"
        raise SpecError(msg)
    if version not in (None, "", alias):
        msg = f"{name!r} names alias {alias!r} and the request names version {version!r}; give one"
        raise SpecError(msg)
    return base, alias


@dataclass(frozen=True)
class AliasTable:
    """A model's aliases (alias -> version) and each alias's earlier versions."""

    aliases: Mapping[str, int] = field(default_factory=dict)
    history: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def resolve(self, name: str, alias: str) -> int:
        """The version *alias* points to; NotFound listing the model's aliases."""
        found = self.aliases.get(alias)
        if found is None:
            have = ", ".join(f"{a} -> {v}" for a, v in sorted(self.aliases.items())) or "none"
            msg = (
                f"model {name!r} has no alias {alias!r} (aliases: {have}); promote a version "
                f"with `mlaas4hep models promote {name} VERSION --alias {alias}`"
            )
            raise NotFound(msg)
        return found

    def promote(self, alias: str, version: int) -> AliasTable:
        """The table with *alias* -> *version* (the old target goes to the history)."""
        aliases, history = dict(self.aliases), dict(self.history)
        old = aliases.get(alias)
        if old is None and len(aliases) >= MAX_ALIASES:
            msg = (
                f"the model has {len(aliases)} aliases, the most it may have; remove one "
                f"(DELETE /v2/repository/models/NAME/aliases/ALIAS) before adding {alias!r}"
            )
            raise SpecError(msg)
        if old is not None and old != version:
            history[alias] = (*history.get(alias, ()), old)[-_MAX_HISTORY:]
        aliases[alias] = version
        return AliasTable(aliases, history)

    def rollback(self, name: str, alias: str) -> AliasTable:
        """The table with *alias* back on its previous version; SpecError when none."""
        self.resolve(name, alias)
        earlier = self.history.get(alias, ())
        if not earlier:
            msg = (
                f"alias {alias!r} of model {name!r} has no earlier version to roll back to; "
                f"promote the version you want instead"
            )
            raise SpecError(msg)
        aliases, history = dict(self.aliases), dict(self.history)
        aliases[alias] = earlier[-1]
        history[alias] = earlier[:-1]
        return AliasTable(aliases, history)

    def remove(self, name: str, alias: str) -> AliasTable:
        """The table without *alias*; NotFound when it is not there."""
        self.resolve(name, alias)
        aliases = {a: v for a, v in self.aliases.items() if a != alias}
        history = {a: h for a, h in self.history.items() if a != alias}
        return AliasTable(aliases, history)

    def of_version(self, version: int) -> list[str]:
        """The aliases pointing to *version* (sorted)."""
        return sorted(a for a, v in self.aliases.items() if v == version)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": ALIASES_FORMAT,
            "aliases": dict(sorted(self.aliases.items())),
            "history": {a: list(h) for a, h in sorted(self.history.items()) if h},
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> AliasTable:
        try:
            if data.get("format", ALIASES_FORMAT) != ALIASES_FORMAT:
                raise ValueError(f"unknown format {data.get('format')!r}")
            aliases = {check_alias(str(a)): _positive(v) for a, v in data["aliases"].items()}
            history = {
                str(a): tuple(_positive(v) for v in h)
                for a, h in (data.get("history") or {}).items()
            }
        except (AttributeError, KeyError, TypeError, ValueError, SpecError) as exc:
            msg = f"{where}: not a valid aliases record ({exc}); fix or delete it"
            raise SpecError(msg) from exc
        return cls(aliases, history)


def _positive(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"a version must be a positive integer, got {value!r}")
    return value


def read_aliases(model_dir: Path) -> AliasTable:
    """The aliases of the model in *model_dir* (empty when it has none)."""
    path = model_dir / ALIASES_FILE
    data = _read_json(path)
    return AliasTable() if data is None else AliasTable.from_json(data, repr(str(path)))


def update_aliases(model_dir: Path, change: Callable[[AliasTable], AliasTable]) -> AliasTable:
    """Apply *change* to the model's aliases under the model's lock; return the new table."""
    with _locked(model_dir):
        table = change(read_aliases(model_dir))
        _write_json(model_dir / ALIASES_FILE, table.to_json())
    return table


@dataclass(frozen=True)
class VersionRecord:
    """Where a version came from: a job (``source_job``), an upload, a UI deploy."""

    source: str  # job | upload | deploy
    owner: str = ""  # the publisher's principal key (iss#sub)
    owner_name: str | None = None
    source_job: str | None = None
    created: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "format": VERSION_FORMAT,
            "source": self.source,
            "source_job": self.source_job,
            "owner": self.owner,
            "owner_name": self.owner_name,
            "created": self.created,
        }


def write_version_record(version_dir: Path, record: VersionRecord) -> None:
    """Write ``version.json`` into a (staged) version directory."""
    _write_json(version_dir / VERSION_FILE, record.to_json())


def read_version_record(version_dir: Path) -> VersionRecord | None:
    """The version's record; None for a version published before records existed or
    whose record is unreadable (provenance is informative, never load-bearing)."""
    try:
        data = _read_json(version_dir / VERSION_FILE)
    except SpecError:
        return None
    if not isinstance(data, dict):
        return None
    job, name, created = data.get("source_job"), data.get("owner_name"), data.get("created")
    return VersionRecord(
        source=str(data.get("source") or "unknown"),
        owner=str(data.get("owner") or ""),
        owner_name=name if isinstance(name, str) else None,
        source_job=job if isinstance(job, str) else None,
        created=float(created) if isinstance(created, int | float) else 0.0,
    )


def _read_json(path: Path) -> Any:
    try:
        with open(path, "rb", opener=_nofollow) as fh:
            raw = fh.read(_MAX_RECORD + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        msg = f"cannot read {str(path)!r}: {exc}; fix or delete it"
        raise SpecError(msg) from exc
    try:
        if len(raw) > _MAX_RECORD:
            raise ValueError(f"over {_MAX_RECORD} bytes")
        return json.loads(raw)
    except ValueError as exc:
        msg = f"cannot read {str(path)!r}: {exc}; fix or delete it"
        raise SpecError(msg) from exc


def _write_json(path: Path, doc: Mapping[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".registry-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(doc, out, indent=1)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(model_dir: Path) -> Iterator[None]:
    fd = os.open(model_dir / ".aliases.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _nofollow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
