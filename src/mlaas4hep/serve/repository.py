"""The model repository on disk (Triton-like) and its version policies.

Layout::

    <repo>/<model>/config.json          optional: version policy, batching (see below)
    <repo>/<model>/owner.json           owner and sharing (serve/ownership.py)
    <repo>/<model>/aliases.json         named aliases and their history (serve/registry.py)
    <repo>/<model>/<version>/model.onnx
    <repo>/<model>/<version>/metadata.json
    <repo>/<model>/<version>/version.json   provenance: source job, publisher, time

Versions are positive integers. A version directory appears atomically: publishers copy
the artifact files (without following links: serve/intake.py) into a hidden
``<repo>/.staging-*`` directory, check them, and rename it into place, so a poller never
sees half a model. ``config.json``::

    {"version_policy": {"latest": 2} | {"all": {}} | {"specific": [1, 3]} | {"aliased": {}},
     "batching": {"max_batch_size": 1024, "max_queue_delay_ms": 0, "max_queue_size": 1024}}
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path, PurePath
from typing import Any

from mlaas4hep.artifact import MODEL_FILE
from mlaas4hep.errors import Conflict, NotFound, SpecError, closest
from mlaas4hep.serve.intake import IntakeLimits, copy_artifacts, read_regular
from mlaas4hep.serve.onnx_check import check_loads_bounded, check_self_contained
from mlaas4hep.serve.ownership import ModelOwners
from mlaas4hep.serve.registry import (
    AliasTable,
    VersionRecord,
    read_aliases,
    read_version_record,
    update_aliases,
    write_version_record,
)
from mlaas4hep.serve.settings import BatchPolicy

CONFIG_FILE = "config.json"
_PUBLISH_RETRIES = 50
_HERE = PurePath()
_NAME = MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}(?<!\.)")


def check_model_name(name: str) -> str:
    """Return *name* if it is a valid model name, else raise SpecError saying the rule."""
    if not _NAME.fullmatch(name):
        msg = (
            f"invalid model name {name!r}: use 1-128 letters, digits, '_', '-' or '.', "
            f"starting with a letter or digit"
        )
        raise SpecError(msg)
    return name


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions on disk are loaded: the latest N, all, specific ones, or the aliased.

    Versions an alias points to are loaded whatever the policy (``select``'s *pinned*):
    an alias never names a version out of service. ``aliased`` loads only those (the
    newest version while the model has no alias, so a first publish serves).
    """

    latest: int | None = 1
    specific: tuple[int, ...] = ()
    aliased: bool = False

    def select(self, available: list[int], pinned: Collection[int] = ()) -> list[int]:
        """Return the versions to load out of *available* (ascending), *pinned* included."""
        ordered = sorted(available)
        if self.aliased:
            chosen = [] if pinned else ordered[-1:]
        elif self.specific:
            chosen = [v for v in ordered if v in self.specific]
        elif self.latest is None:
            chosen = ordered
        else:
            chosen = ordered[-self.latest :]
        return sorted(set(chosen) | (set(pinned) & set(ordered)))

    def describe(self) -> str:
        """The policy as ``parse`` reads it: ``latest``, ``latest:2``, ``all``, ``aliased``,
        ``versions:1,3``."""
        if self.aliased:
            return "aliased"
        if self.specific:
            return "versions:" + ",".join(str(v) for v in self.specific)
        if self.latest is None:
            return "all"
        return "latest" if self.latest == 1 else f"latest:{self.latest}"

    def to_json(self) -> dict[str, Any]:
        """The ``version_policy`` entry of ``config.json``."""
        if self.aliased:
            return {"aliased": {}}
        if self.specific:
            return {"specific": list(self.specific)}
        if self.latest is None:
            return {"all": {}}
        return {"latest": self.latest}

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """``latest``, ``latest:N``, ``all``, ``aliased`` or ``versions:1,3`` (``1,3``)."""
        word, _, arg = text.strip().lower().replace(" ", "").partition(":")
        try:
            if word == "latest":
                n = int(arg) if arg else 1
                if n >= 1:
                    return cls(latest=n)
            elif word in ("all", "aliased") and not arg:
                return cls(latest=None, aliased=word == "aliased")
            elif word in ("versions", "specific") or word[:1].isdigit():
                listed = arg if word in ("versions", "specific") else text
                versions = tuple(sorted({int(v) for v in listed.split(",") if v.strip()}))
                if versions and min(versions) >= 1:
                    return cls(latest=None, specific=versions)
        except ValueError:
            pass
        msg = (
            f"invalid serving policy {text!r}: use 'latest', 'latest:N', 'all', 'aliased' "
            "(the versions an alias points to) or 'versions:1,3'"
        )
        raise SpecError(msg)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> VersionPolicy:
        if "aliased" in data:
            return cls(latest=None, aliased=True)
        if "latest" in data:
            n = data["latest"]
            if isinstance(n, dict):
                n = n.get("num_versions", 1)
            if not isinstance(n, int) or n < 1:
                msg = f"{where}: version_policy.latest must be a positive integer, got {n!r}"
                raise SpecError(msg)
            return cls(latest=n)
        if "all" in data:
            return cls(latest=None)
        if "specific" in data:
            versions = data["specific"]
            if isinstance(versions, dict):
                versions = versions.get("versions", [])
            if not isinstance(versions, list) or not all(isinstance(v, int) for v in versions):
                msg = f"{where}: version_policy.specific must list integers, got {versions!r}"
                raise SpecError(msg)
            return cls(latest=None, specific=tuple(versions))
        msg = (
            f"{where}: version_policy must have one of 'latest', 'all', 'specific', "
            f"'aliased'; got {data!r}"
        )
        raise SpecError(msg)


@dataclass(frozen=True)
class ModelConfig:
    """Per-model serving configuration (``config.json``), with service-wide defaults."""

    version_policy: VersionPolicy
    batching: BatchPolicy
    policy_set: bool = False  # the model's config.json names its policy (else the default)


class ModelRepository:
    """Read and write the on-disk repository. Knows nothing of sessions or HTTP."""

    def __init__(
        self,
        root: Path,
        default_policy: VersionPolicy,
        batching: BatchPolicy,
        intake: IntakeLimits | None = None,
    ) -> None:
        self.root = root
        self._default_policy = default_policy
        self._batching = batching
        self._intake = intake or IntakeLimits()
        root.mkdir(parents=True, exist_ok=True)

    def model_names(self) -> list[str]:
        """Names of the models that have at least one version directory."""
        names = []
        for path in sorted(self.root.iterdir()):
            if path.is_dir() and _NAME.fullmatch(path.name) and self.versions(path.name):
                names.append(path.name)
        return names

    def versions(self, name: str) -> list[int]:
        """Version numbers on disk for model *name* (ascending; empty if none)."""
        model_dir = self.root / check_model_name(name)
        if not model_dir.is_dir():
            return []
        found = []
        for path in model_dir.iterdir():
            if path.name.isdigit() and int(path.name) > 0 and (path / MODEL_FILE).is_file():
                found.append(int(path.name))
        return sorted(found)

    def version_dir(self, name: str, version: int) -> Path:
        """Directory of one version; NotFound (with the versions there are) if absent."""
        path = self.root / check_model_name(name) / str(version)
        if not (path / MODEL_FILE).is_file():
            have = self.versions(name)
            if not have:
                msg = f"model {name!r} is not in the repository; " + closest(
                    name, self.model_names()
                )
                raise NotFound(msg)
            msg = f"model {name!r} has no version {version}; versions: {have}"
            raise NotFound(msg)
        return path

    def config(self, name: str) -> ModelConfig:
        """The model's ``config.json`` merged over the defaults."""
        path = self.root / check_model_name(name) / CONFIG_FILE
        if not path.is_file():
            return ModelConfig(self._default_policy, self._batching)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            msg = f"cannot read {str(path)!r}: {exc}; fix or delete it"
            raise SpecError(msg) from exc
        policy = self._default_policy
        if "version_policy" in data:
            policy = VersionPolicy.from_json(data["version_policy"], str(path))
        batching = _batching_from(data.get("batching", {}), self._batching, path)
        return ModelConfig(policy, batching, "version_policy" in data)

    def set_policy(self, name: str, policy: VersionPolicy) -> None:
        """Write *policy* into the model's ``config.json`` (its other keys kept), atomically."""
        model_dir = self.root / check_model_name(name)
        self.config(name)  # refuse to rewrite a file that does not parse
        path = model_dir / CONFIG_FILE
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        data["version_policy"] = policy.to_json()
        fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".json", dir=model_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=1)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def aliases(self, name: str) -> AliasTable:
        """The model's aliases (``aliases.json``; empty when it has none)."""
        return read_aliases(self.root / check_model_name(name))

    def update_aliases(self, name: str, change: Callable[[AliasTable], AliasTable]) -> AliasTable:
        """Apply *change* to the model's aliases under its lock; return the new table."""
        return update_aliases(self.root / check_model_name(name), change)

    def record(self, name: str, version: int) -> VersionRecord | None:
        """The provenance record of a version (None when it predates records)."""
        return read_version_record(self.root / check_model_name(name) / str(version))

    def publish(
        self,
        name: str,
        base: Path,
        rel: PurePath = _HERE,
        version: int | None = None,
        expect_owner: str | None = None,
        record: VersionRecord | None = None,
    ) -> int:
        """Copy the model directory ``base/rel`` in as a new version; return its number.

        ``stage`` then ``commit`` (see both). Raises UnsafeModelFiles/SpecError for a
        directory or model that cannot be published, Conflict if *version* exists or
        the owner changed, PermissionDenied never (the caller checks rights first).
        """
        staged = self.stage(base, rel)
        try:
            return self.commit(name, staged, version, expect_owner, record)
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    def stage(self, base: Path, rel: PurePath = _HERE) -> Path:
        """Copy ``base/rel``'s artifact files into a hidden directory of the repository.

        The source is hostile (a job wrote it): see :mod:`mlaas4hep.serve.intake` for the
        rules (no links anywhere below *base*, regular single-link files, allow-listed
        names, size caps). The copied ``model.onnx`` must reference no external file
        (:mod:`mlaas4hep.serve.onnx_check`). The caller removes the directory.
        """
        tmp = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        try:
            copy_artifacts(base, rel, tmp, self._intake)
            model = read_regular(tmp / MODEL_FILE, self._intake.max_model_bytes)
            check_self_contained(model, f"the model ({MODEL_FILE})")
            check_loads_bounded(model, f"the model ({MODEL_FILE})")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return tmp

    def commit(
        self,
        name: str,
        staged: Path,
        version: int | None = None,
        expect_owner: str | None = None,
        record: VersionRecord | None = None,
    ) -> int:
        """Rename a staged directory in as a version of *name* (next number if None).

        *record* (its ``created`` filled in when 0) is written into the staged directory
        first as ``version.json``: the version appears with its provenance.

        *expect_owner*: the owner key the caller's rights were checked against; if the
        model's record names someone else now (deleted and re-claimed meanwhile), the
        publish is refused with Conflict. The rename is atomic: readers never see a
        partial version.
        """
        model_dir = self.root / check_model_name(name)
        model_dir.mkdir(parents=True, exist_ok=True)
        if expect_owner is not None:
            self._check_owner(name, expect_owner)
        if record is not None:
            created = record.created or time.time()
            write_version_record(staged, replace(record, created=created))
        return self._rename_in(name, staged, version)

    def _check_owner(self, name: str, expected: str) -> None:
        record = ModelOwners(self.root).record(name)
        if record is None or record.legacy or record.owner != expected:
            msg = f"model {name!r} changed owner while it was being published; publish again"
            raise Conflict(msg)

    def _rename_in(self, name: str, tmp: Path, version: int | None) -> int:
        # Several replicas may publish into one shared repository at once: the rename is
        # the arbiter (it fails onto a non-empty directory), and a publisher that lost the
        # race for the next number takes the one after.
        number = 0
        for _ in range(_PUBLISH_RETRIES):
            number = version if version is not None else max([number, *self.versions(name)]) + 1
            target = self.root / name / str(number)
            try:
                if target.exists():
                    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target))
                tmp.rename(target)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                if version is not None:
                    msg = f"model {name!r} version {number} already exists; publish a new version"
                    raise Conflict(msg) from exc
                continue
            return number
        msg = f"model {name!r}: {_PUBLISH_RETRIES} concurrent publishes won the race; try again"
        raise Conflict(msg)

    def delete(self, name: str) -> None:
        """Remove a model and all its versions; NotFound if it is not there."""
        model_dir = self.root / check_model_name(name)
        if not model_dir.is_dir():
            msg = f"model {name!r} is not in the repository; " + closest(name, self.model_names())
            raise NotFound(msg)
        # Rename first so a concurrent poll sees the model vanish at once, not file by file.
        trash = Path(tempfile.mkdtemp(prefix=".trash-", dir=self.root))
        model_dir.rename(trash / name)
        shutil.rmtree(trash, ignore_errors=True)


def _batching_from(data: Any, default: BatchPolicy, path: Path) -> BatchPolicy:
    if not isinstance(data, dict):
        msg = f"{str(path)!r}: 'batching' must be an object, got {data!r}"
        raise SpecError(msg)
    known = {f.name for f in fields(BatchPolicy)}
    unknown = set(data) - known
    if unknown:
        msg = f"{str(path)!r}: unknown batching keys {sorted(unknown)}; allowed: {sorted(known)}"
        raise SpecError(msg)
    merged = {f.name: data.get(f.name, getattr(default, f.name)) for f in fields(BatchPolicy)}
    return BatchPolicy(**merged)
