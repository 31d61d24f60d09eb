"""First-pass statistics of a ``DataSpec``, cached per file on disk.

The accumulators (``ScalarStats``, ``CollectionStats``, ``SampleStats``) live in
``mlaas4hep.data.accumulators`` and are re-exported here.

Each file's ``SampleStats`` is cached under a key made of the file identity (absolute path
+ size + mtime, the XRootD stat, or the HTTP validators; see ``sources.file_identity``),
the tree, the sorted branch set and the entry range read. A rewritten file has a new
identity, so it can never reuse stale statistics; the old entry is simply never read
again. The identity is taken again after reading and nothing is cached when it changed
meanwhile. Cache files are written to a temporary name and renamed (atomic); an
unreadable or mismatching cache file is ignored and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from mlaas4hep.data.accumulators import CollectionStats, SampleStats, ScalarStats, StatsLayout
from mlaas4hep.data.partition import Distributor, SerialDistributor
from mlaas4hep.data.schema import TreeSchema, inspect_tree
from mlaas4hep.data.sources import file_identity
from mlaas4hep.data.stream import Partition, iterate_partition, partitions
from mlaas4hep.errors import SpecError
from mlaas4hep.spec import DataSpec, RemoteSpec

__all__ = [
    "OVERALL",
    "CollectionStats",
    "SampleStats",
    "ScalarStats",
    "StatsLayout",
    "first_pass",
    "plan_layout",
]

OVERALL = "*"  # key of the all-datasets result; not a valid dataset name
CACHE_VERSION = 1


def first_pass(
    data: DataSpec,
    branches: Sequence[str],
    *,
    cache_dir: Path | None = None,
    datasets: Sequence[str] | None = None,
    distributor: Distributor | None = None,
) -> dict[str, SampleStats]:
    """Statistics of ``branches`` per dataset name and overall (key ``OVERALL``).

    Honours ``max_events`` like ``stream``. With ``cache_dir``, per-file results are read
    from and written to that directory. With ``distributor`` (``data.partition``), the
    files are read there (a Dask cluster); their results merge in file order, so they
    equal the local ones bit for bit. Raises the errors of ``stream`` and ``SpecError``
    for a branch whose type has no statistics (neither numeric flat nor jagged).
    """
    names = [d.name for d in data.datasets] if datasets is None else list(datasets)
    result = {name: SampleStats() for name in names}
    parts = partitions(data, datasets=datasets, split=False)
    if parts:
        layout = plan_layout(inspect_tree(parts[0].file, data.tree), branches)
        per_file = partial(
            _file_stats, branches=list(branches), layout=layout, step_size=data.step_size,
            cache_dir=cache_dir, remote=data.remote,
        )  # fmt: skip
        runner = distributor or SerialDistributor()
        for part, stats in zip(parts, runner.map_ordered(per_file, parts), strict=True):
            result[part.dataset] = result[part.dataset].merge(stats)
    overall = SampleStats()
    for stats in result.values():
        overall = overall.merge(stats)
    result[OVERALL] = overall
    return result


def plan_layout(schema: TreeSchema, branches: Sequence[str]) -> StatsLayout:
    """Split ``branches`` into scalars (flat, counters) and jagged collections."""
    schema.require(branches)
    scalars: list[str] = []
    collections: dict[str, list[str]] = {}
    for name in dict.fromkeys(branches):
        info = schema.branch(name)
        if info.kind in ("flat", "counter"):
            scalars.append(name)
        elif info.kind == "jagged":
            collections.setdefault(info.collection or name, []).append(name)
        else:
            msg = f"branch {name!r} has type {info.dtype!r}; statistics need numeric branches"
            raise SpecError(msg)
    return StatsLayout(tuple(scalars), {k: tuple(v) for k, v in collections.items()})


def _file_stats(
    part: Partition,
    branches: Sequence[str],
    layout: StatsLayout,
    step_size: int,
    cache_dir: Path | None,
    remote: RemoteSpec | None = None,
) -> SampleStats:
    key = _cache_key(part, branches) if cache_dir is not None else None
    if cache_dir is not None and key is not None:
        cached = _read_cache(cache_dir, key)
        if cached is not None:
            return cached
    stats = SampleStats()
    for chunk in iterate_partition(part, branches, step_size, remote=remote):
        stats.update(chunk.arrays, layout)
    if cache_dir is not None and key is not None and _cache_key(part, branches) == key:
        _write_cache(cache_dir, key, stats)
    return stats


def _cache_key(part: Partition, branches: Sequence[str]) -> dict[str, Any]:
    return {
        "version": CACHE_VERSION,
        "file": file_identity(part.file),
        "tree": part.tree,
        "branches": sorted(set(branches)),
        "entries": [part.entry_start, part.entry_stop],
    }


def _cache_path(cache_dir: Path, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return cache_dir / f"stats-{digest[:32]}.json"


def _read_cache(cache_dir: Path, key: dict[str, Any]) -> SampleStats | None:
    path = _cache_path(cache_dir, key)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        # The stored key guards against hash collisions and hand-edited files.
        if doc.get("key") != json.loads(json.dumps(key)):
            return None
        return SampleStats.from_dict(doc["stats"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing or damaged: recompute


def _write_cache(cache_dir: Path, key: dict[str, Any], stats: SampleStats) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = _cache_path(cache_dir, key)
    doc = json.dumps({"key": key, "stats": stats.to_dict()}, sort_keys=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".stats-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(doc)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
