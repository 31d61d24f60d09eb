"""Loaded model versions and hot reload.

The manager owns which versions serve traffic. ``sync`` compares the repository with what
is loaded: new versions chosen by the model's version policy are loaded *and warmed up* in
a worker thread, then swapped in with one dict assignment, so a request sees either the
old set or the new one. Requests already holding an old version finish on it (its batcher
and session live as long as they are referenced). A version that fails to load is
remembered (until its files change) and the versions serving before keep serving.
Everything that mutates state runs on the event loop, under one lock.

Aliases (serve/registry.py) are resolved against the same snapshot: the versions an
alias points to are loaded whatever the policy, and a model's alias table is swapped in
together with its versions, after they have loaded. A request that names an alias thus
always finds its version in service, on every replica, whenever its poll sees the
change; ``change_aliases`` (promote, rollback) loads first, then writes the record and
swaps, and refuses a version that does not load.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

from mlaas4hep.artifact import INPUT_TENSOR, MODEL_FILE, OUTPUT_TENSOR
from mlaas4hep.errors import Mlaas4hepError, NotFound, SpecError, closest
from mlaas4hep.serve.batching import Batcher
from mlaas4hep.serve.metadata import ModelMetadata, TensorSpec
from mlaas4hep.serve.metrics import InferenceMetrics
from mlaas4hep.serve.raw import RawLoader, RawSupport
from mlaas4hep.serve.registry import AliasTable
from mlaas4hep.serve.repository import ModelConfig, ModelRepository
from mlaas4hep.serve.runtime import OnnxModel
from mlaas4hep.serve.stats import VersionStats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedVersion:
    """One model version in service: its session, metadata and batcher."""

    name: str
    version: int
    model: OnnxModel
    batcher: Batcher
    config: ModelConfig
    raw: RawSupport = field(default_factory=RawSupport)  # raw event columns (serve/raw.py)
    stats: VersionStats = field(default_factory=VersionStats)  # the statistics extension
    # Derived once from the metadata, for the per-request checks (dataplane.check_inputs).
    input_specs: Mapping[str, TensorSpec] = field(init=False, repr=False, compare=False)
    output_names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        meta = self.model.metadata
        object.__setattr__(self, "input_specs", {t.name: t for t in meta.inputs})
        object.__setattr__(self, "output_names", tuple(t.name for t in meta.outputs))

    @property
    def metadata(self) -> ModelMetadata:
        return self.model.metadata


@dataclass(frozen=True)
class IndexEntry:
    """One row of the repository index (V2 repository extension)."""

    name: str
    version: int
    state: str  # READY | UNAVAILABLE
    reason: str = ""
    status: str = "serving"  # serving | not loaded (by the policy) | unloaded | failed


class ModelManager:
    """Load, serve and retire model versions from a ``ModelRepository``."""

    def __init__(
        self,
        repository: ModelRepository,
        executor: Executor,
        metrics: InferenceMetrics,
        threads: int,
        inline_budget_s: float = 0.0,
        raw_loader: RawLoader | None = None,
    ) -> None:
        self.repository = repository
        self._raw_loader = raw_loader
        self._executor = executor
        self._metrics = metrics
        self._threads = threads
        self._inline_budget_s = inline_budget_s
        # name -> {version: LoadedVersion}; inner dicts are replaced, never mutated.
        self._served: dict[str, dict[int, LoadedVersion]] = {}
        self._aliases: dict[str, AliasTable] = {}  # swapped with _served, never mutated
        self._configs: dict[str, ModelConfig] = {}
        self._failed: dict[tuple[str, int], tuple[int, str]] = {}
        self._disabled: set[str] = set()
        self._lock = asyncio.Lock()
        self.ready = False

    @property
    def executor(self) -> Executor:
        """The inference threads (batches, raw-column preprocessing)."""
        return self._executor

    # ---- lookups (event loop, no I/O) -------------------------------------------------

    def names(self) -> list[str]:
        """Names of the models with at least one version in service."""
        return sorted(n for n, versions in self._served.items() if versions)

    def get(self, name: str, version: int | None = None) -> LoadedVersion:
        """The requested version (default: the highest in service); NotFound otherwise."""
        versions = self._served.get(name)
        if not versions:
            msg = f"model {name!r} is not loaded; " + closest(name, self.names())
            raise NotFound(msg)
        if version is None:
            return versions[max(versions)]
        found = versions.get(version)
        if found is None:
            msg = f"model {name!r} has no version {version} in service; serving: {sorted(versions)}"
            raise NotFound(msg)
        return found

    def resolve(self, name: str, ref: str | None) -> int | None:
        """A version reference as a number: None/``latest`` -> None (the newest in service),
        digits -> that number, else an alias of the loaded snapshot; NotFound otherwise."""
        if ref is None or ref in ("", "latest"):
            return None
        if ref.isdigit():
            if int(ref) < 1:
                msg = f"model version {ref!r} is not a positive integer"
                raise NotFound(msg)
            return int(ref)
        if not self._served.get(name):
            self.get(name)  # raises NotFound with the closest names
        return self.aliases(name).resolve(name, ref)

    def aliases(self, name: str) -> AliasTable:
        """The alias table in force for *name* (its versions are all in service)."""
        return self._aliases.get(name, _NO_ALIASES)

    def config_of(self, name: str) -> ModelConfig | None:
        """The configuration read at the model's last sync (None before any)."""
        return self._configs.get(name)

    def served_versions(self, name: str) -> list[int]:
        return sorted(self._served.get(name, {}))

    def served(self, name: str) -> list[LoadedVersion]:
        """Every version of *name* in service (ascending); NotFound when none."""
        versions = self._served.get(name)
        if not versions:
            self.get(name)  # raises NotFound with the closest names
            return []
        return [versions[v] for v in sorted(versions)]

    # ---- changes ------------------------------------------------------------------------

    async def sync(self, name: str | None = None) -> None:
        """Bring one model (or all) in line with the repository and version policies."""
        async with self._lock:
            names = [name] if name else await asyncio.to_thread(self.repository.model_names)
            for gone in set(self._served) - set(names) if name is None else ():
                self._swap(gone, {})
            for each in names:
                await self._sync_one(each)
        self.ready = True

    async def load(self, name: str) -> None:
        """Serve *name* again (after ``unload``); raise if no version could be loaded."""
        self._disabled.discard(name)
        await self.sync(name)
        if not self._served.get(name):
            reasons = [r for (n, _v), (_s, r) in self._failed.items() if n == name]
            detail = "; ".join(reasons) or "it has no version in the repository"
            msg = f"model {name!r} could not be loaded: {detail}"
            raise NotFound(msg) if not reasons else SpecError(msg)

    async def unload(self, name: str) -> None:
        """Take every version of *name* out of service until ``load`` is called."""
        async with self._lock:
            if name not in self._served and not self.repository.versions(name):
                msg = f"model {name!r} is not in the repository; " + closest(name, self.names())
                raise NotFound(msg)
            self._disabled.add(name)
            self._swap(name, {})

    async def poll_forever(self, interval: float) -> None:
        """Re-sync with the repository every *interval* seconds (until cancelled)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sync()
            except Exception:  # keep polling: a bad file must not stop the service
                log.exception("repository poll failed")

    async def index(self, only: str | None = None) -> list[IndexEntry]:
        """Every version on disk (of model *only*, or all) with its state and, when not
        serving, the reason."""
        if only is None:
            names = {*await asyncio.to_thread(self.repository.model_names), *self.names()}
        else:
            names = {only}
        entries = []
        for name in sorted(names):
            on_disk = await asyncio.to_thread(self.repository.versions, name)
            served = self._served.get(name, {})
            for version in sorted(set(on_disk) | set(served)):
                entries.append(self._entry(name, version, served))
        return entries

    def _entry(self, name: str, version: int, served: dict[int, LoadedVersion]) -> IndexEntry:
        if version in served:
            return IndexEntry(name, version, "READY")
        if name in self._disabled:
            return IndexEntry(name, version, "UNAVAILABLE", "unloaded", "unloaded")
        failed = self._failed.get((name, version))
        if failed:
            return IndexEntry(name, version, "UNAVAILABLE", failed[1], "failed")
        config = self._configs.get(name)
        policy = config.version_policy.describe() if config else "not read yet"
        reason = f"not loaded (policy: {policy})"
        return IndexEntry(name, version, "UNAVAILABLE", reason, "not loaded")

    async def change_aliases(
        self, name: str, change: Callable[[AliasTable], AliasTable]
    ) -> AliasTable:
        """Apply *change* (promote, rollback, remove) to *name*'s aliases: load the
        versions it points to first, then write the record and swap both in.

        Raises what *change* raises (unknown alias, nothing to roll back to), NotFound
        for a version not on disk, SpecError for one that does not load; the record is
        then left as it was.
        """
        async with self._lock:
            on_disk = await asyncio.to_thread(self.repository.versions, name)
            config = await asyncio.to_thread(self.repository.config, name)
            table = change(await asyncio.to_thread(self.repository.aliases, name))
            current = self._served.get(name, {})
            preloaded: dict[int, LoadedVersion] = {}
            for version in sorted(set(table.aliases.values()) - current.keys()):
                if version not in on_disk:
                    msg = f"model {name!r} has no version {version}; versions: {on_disk}"
                    raise NotFound(msg)
                loaded = await self._try_load(name, version, config)
                if loaded is None:
                    reason = self._failed.get((name, version), (0, "load failed"))[1]
                    msg = f"model {name!r} version {version} cannot be served: {reason}"
                    raise SpecError(msg)
                preloaded[version] = loaded
            written = await asyncio.to_thread(self.repository.update_aliases, name, change)
            self._disabled.discard(name)
            await self._sync_one(name, preloaded)
        return written

    # ---- internals ----------------------------------------------------------------------

    async def _sync_one(
        self, name: str, preloaded: Mapping[int, LoadedVersion] | None = None
    ) -> None:
        if name in self._disabled:
            self._swap(name, {})
            return
        try:
            config = await asyncio.to_thread(self.repository.config, name)
            on_disk = await asyncio.to_thread(self.repository.versions, name)
            table = await asyncio.to_thread(self.repository.aliases, name)
        except Mlaas4hepError as exc:
            log.error("model %r: %s (keeping the versions in service)", name, exc)
            return
        self._configs[name] = config
        current = {**(preloaded or {}), **self._served.get(name, {})}
        wanted = config.version_policy.select(on_disk, set(table.aliases.values()))
        new: dict[int, LoadedVersion] = {}
        failed_any = False
        for version in wanted:
            loaded = current.get(version) or await self._try_load(name, version, config)
            if loaded is None:
                failed_any = True
            else:
                new[version] = loaded
        if failed_any:  # a failed load never takes the old versions out of service
            old = self._served.get(name, {})
            new.update({v: lv for v, lv in old.items() if v in on_disk and v not in new})
        aliases = _in_service(table, self.aliases(name), new)
        if new.keys() != self._served.get(name, {}).keys() or aliases != self.aliases(name):
            self._swap(name, new, aliases)

    async def _try_load(self, name: str, version: int, config: ModelConfig) -> LoadedVersion | None:
        vdir = self.repository.root / name / str(version)
        signature = await asyncio.to_thread(_signature, vdir)
        failed = self._failed.get((name, version))
        if failed and failed[0] == signature:
            return None
        try:
            model, inline_rows, raw = await asyncio.to_thread(self._open, vdir)
        except Exception as exc:  # any load failure keeps the service up; reason is shown
            reason = f"load failed: {exc}"
            log.error("model %r version %d: %s", name, version, reason)
            self._failed[(name, version)] = (signature, reason)
            return None
        self._failed.pop((name, version), None)
        stats = VersionStats()
        metrics = self._metrics

        def executed(rows: int, waits: list[float], run_s: float) -> None:
            metrics.batch(name, rows, waits)
            stats.executed(rows, waits, run_s)

        batcher = Batcher(
            model.run,
            config.batching,
            self._executor,
            name=f"{name}/{version}",
            inline_rows=inline_rows,
            executed=executed,
        )
        return LoadedVersion(name, version, model, batcher, config, raw, stats)

    def _open(self, vdir: Path) -> tuple[OnnxModel, int, RawSupport]:
        model = OnnxModel(vdir, self._threads)
        model.warm_up()
        budget = self._inline_budget_s
        return model, model.inline_rows(budget) if budget > 0 else 0, self._raw(vdir, model)

    def _raw(self, vdir: Path, model: OnnxModel) -> RawSupport:
        """Raw-column support of a version; a failure only disables it (the reason shows)."""
        if self._raw_loader is None:
            return RawSupport()
        try:
            preprocessor = self._raw_loader(vdir, model.run)
            if preprocessor is None:  # no preprocessing in the version: features only
                return RawSupport()
            meta = model.metadata
            if [t.name for t in meta.inputs] != [INPUT_TENSOR] or OUTPUT_TENSOR not in {
                t.name for t in meta.outputs
            }:
                msg = f"its graph does not map {INPUT_TENSOR!r} to {OUTPUT_TENSOR!r} as a bundle's"
                raise SpecError(msg)
            return RawSupport.of(preprocessor)
        except Exception as exc:  # a bundle's preprocessing never takes the model offline
            log.warning("%s: raw event columns disabled: %s", vdir, exc)
            # clients see the reason: name the version, not where the repository lies
            where = f"{vdir.parent.name} version {vdir.name}"
            return RawSupport(reason=str(exc).replace(repr(str(vdir)), where))

    def _swap(
        self, name: str, new: dict[int, LoadedVersion], aliases: AliasTable | None = None
    ) -> None:
        old = self._served.get(name, {})
        # The two assignments run without an await between them: a request sees both
        # old or both new (an alias never names a version it cannot find).
        if new:
            self._served[name] = new
            self._aliases[name] = aliases or _NO_ALIASES
        else:
            self._served.pop(name, None)
            self._aliases.pop(name, None)
        for v in new.keys() - old.keys():
            self._metrics.loaded(name, v, True)
            log.info("model %r version %d in service", name, v)
        for v in old.keys() - new.keys():
            self._metrics.loaded(name, v, False)
            config = self._configs.get(name)
            policy = config.version_policy.describe() if config else "unloaded"
            log.info("model %r version %d not loaded any more (policy: %s)", name, v, policy)


_NO_ALIASES = AliasTable()


def _in_service(
    table: AliasTable, old: AliasTable, served: Mapping[int, LoadedVersion]
) -> AliasTable:
    """The aliases of *table* whose version is in *served*; an alias whose new version
    did not load keeps its old target while that one serves (else it is left out)."""
    aliases = {}
    for alias, version in table.aliases.items():
        if version in served:
            aliases[alias] = version
        elif old.aliases.get(alias) in served:
            aliases[alias] = old.aliases[alias]
    return AliasTable(aliases, table.history)


def _signature(vdir: Path) -> int:
    try:
        return (vdir / MODEL_FILE).stat().st_mtime_ns + vdir.stat().st_mtime_ns
    except OSError:
        return 0
