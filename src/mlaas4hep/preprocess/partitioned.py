"""Partition-parallel preprocessing: the per-chunk code of the local path, run on pieces.

A run is cut into ``(dataset, file, entry_start, entry_stop)`` partitions: the local
stream's ``step_size`` chunks (``mlaas4hep.data.stream.partitions``), consecutive ones of
a file joined into tasks of ``PARTITION_ENTRIES`` or more (``data.partition.group``).
Reading a partition with the same ``step_size`` yields exactly the local chunks. Two
functions run on one partition, anywhere:

* ``fit_partition``: the first-pass sums (``Accumulator``) of each of its chunks;
* ``run_partition``: its ``ChunkResult``s (features, targets, weights, split codes).

Both call ``Program.run`` and ``Accumulator.add`` exactly as ``Preprocessor`` does
locally; the per-chunk sums are merged in chunk order, which is the local stream order,
so the statistics, counts, cut flow and split sizes equal the local run's bit for bit.

Where the partitions run is a ``Distributor`` (``mlaas4hep.data.partition``):
``SerialDistributor`` in-process (the reference, tests), ``DaskDistributor`` on a cluster
(``mlaas4hep.jobs.dask_map``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import awkward as ak

from mlaas4hep.data.partition import PARTITION_ENTRIES, Distributor, SerialDistributor, group
from mlaas4hep.data.stream import Partition, iterate_partition, partitions
from mlaas4hep.preprocess.firstpass import Accumulator
from mlaas4hep.preprocess.program import ChunkResult, Program
from mlaas4hep.spec import PipelineSpec

__all__ = [
    "Distributor",
    "SerialDistributor",
    "chunk_columns",
    "first_pass",
    "fit_partition",
    "plan",
    "results",
    "run_partition",
]


def chunk_columns(arrays: Any) -> dict[str, Any]:
    """Columns of a chunk: a record array (one field per branch) or a mapping."""
    if isinstance(arrays, dict):
        return arrays
    return dict(zip(ak.fields(arrays), ak.unzip(arrays), strict=True))


def plan(
    spec: PipelineSpec,
    datasets: Sequence[str] | None = None,
    *,
    min_entries: int = PARTITION_ENTRIES,
) -> list[Partition]:
    """The partitions of *datasets* (default: all), in local stream order: ``step_size``
    pieces joined per file into tasks of at least *min_entries* (``data.partition.group``).
    """
    return group(partitions(spec.data, datasets=datasets, split=True), min_entries)


def run_partition(
    spec: PipelineSpec, branches: Sequence[str], part: Partition
) -> list[ChunkResult]:
    """The processed chunks of one partition, in order (the local stream's chunks)."""
    return list(_results(Program(spec), spec, branches, part))


def fit_partition(
    spec: PipelineSpec, branches: Sequence[str], part: Partition
) -> list[Accumulator]:
    """The first-pass sums of each chunk of one partition, in order, ready to merge.

    One accumulator per chunk, not one per partition: merged in order by the caller they
    give exactly the local sums, whatever the grouping of chunks into partitions.
    """
    program = Program(spec)
    out = []
    for result in _results(program, spec, branches, part):
        acc = Accumulator(program)
        acc.add(result.dataset, result)
        out.append(acc)
    return out


def first_pass(
    spec: PipelineSpec,
    program: Program,
    branches: Sequence[str],
    distributor: Distributor,
    parts: Sequence[Partition],
    progress: Callable[[int, int | None], None] | None = None,
) -> tuple[Accumulator, list[str]]:
    """Merged first-pass sums of *parts* (``plan(spec)``), and the files read (in order).

    *progress* is called after each partition with the entries read so far and the
    entries of all *parts* (known from the plan), as ``Preprocessor.fit`` describes.
    """
    total = Accumulator(program)
    entries, planned = 0, sum(p.entry_stop - p.entry_start for p in parts)
    for accs in distributor.map_ordered(partial(fit_partition, spec, list(branches)), parts):
        for acc in accs:
            total.merge(acc)
            program.learn_types(acc.bound_types())
            entries += sum(e["read"] for e in acc.events.values())
        if progress is not None:
            progress(entries, planned)
    if progress is not None:
        progress(entries, entries)
    return total, list(dict.fromkeys(p.file for p in parts))


def results(
    spec: PipelineSpec,
    branches: Sequence[str],
    distributor: Distributor,
    parts: Sequence[Partition],
) -> Iterator[ChunkResult]:
    """The processed chunks of *parts* (from ``plan``), in order."""
    for chunks in distributor.map_ordered(partial(run_partition, spec, list(branches)), parts):
        yield from chunks


def _results(
    program: Program, spec: PipelineSpec, branches: Sequence[str], part: Partition
) -> Iterator[ChunkResult]:
    ds = next(d for d in spec.data.datasets if d.name == part.dataset)
    # The same remote settings (timeouts, retries) as the local stream.
    chunks = iterate_partition(part, branches, spec.data.step_size, remote=spec.data.remote)
    for chunk in chunks:
        yield program.run(chunk_columns(chunk.arrays), ds)
