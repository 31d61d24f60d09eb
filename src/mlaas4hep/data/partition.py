"""Where partitions run: the ``Distributor`` protocol and its in-process reference.

A run is cut into ``Partition`` pieces (``data.stream.partitions``); a function of one
partition returns a mergeable result (``SampleStats``, the preprocessing's
``Accumulator``, a processed chunk). A distributor runs that function on every partition
somewhere and yields the results **in partition order**, which is the order of the local
stream, so merging them in that order gives what one process gives, bit for bit.

``SerialDistributor`` runs them here, one after the other (the reference, and tests);
the Dask one is ``mlaas4hep.jobs.dask_map.DaskDistributor``. ``group`` joins the
``step_size`` pieces of a file into tasks of a useful size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

from mlaas4hep.data.stream import Partition

T = TypeVar("T")
R = TypeVar("R")


class Distributor(Protocol):
    """Runs a function on many items somewhere; results come back in item order."""

    def map_ordered(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        """Yield ``fn(item)`` for each item, in order; a bounded number run at once."""
        ...


class SerialDistributor:
    """Runs every item in this process, one after the other."""

    def map_ordered(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        """Yield ``fn(item)`` for each item, in order."""
        return map(fn, items)


#: Entries a partition aims at: a task reads whole baskets (often 10^4-10^5 entries) and
#: pays for a file open, so tasks much smaller than this waste decompression and time.
PARTITION_ENTRIES = 200_000


def group(parts: Sequence[Partition], min_entries: int = PARTITION_ENTRIES) -> list[Partition]:
    """Join consecutive pieces of one file into partitions of at least *min_entries*.

    *parts* are ``step_size`` pieces from ``stream.partitions``; a joined partition starts
    on a piece boundary, so reading it with the same ``step_size`` yields exactly the same
    chunks as the local stream. The last partition of a file may be smaller.
    """
    out: list[Partition] = []
    for part in parts:
        last = out[-1] if out else None
        if (
            last is not None
            and (last.dataset, last.file) == (part.dataset, part.file)
            and last.entry_stop == part.entry_start
            and last.entry_stop - last.entry_start < min_entries
        ):
            out[-1] = dataclasses.replace(last, entry_stop=part.entry_stop)
        else:
            out.append(part)
    return out
