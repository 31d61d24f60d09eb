"""Stream events from many files and datasets in chunks of bounded size.

Memory depends on ``step_size`` and the branches asked for, never on the file size: each
chunk holds at most ``step_size`` entries of only the requested branches (jagged ones stay
jagged awkward arrays). Branches are selected by exact name (a ``filter_name`` predicate);
uproot's ``expressions``/``cut``/``aliases`` are never used, because uproot evaluates those
with Python ``eval``.

Remote files are read ahead (``RemoteSpec.readahead``): the next chunks are fetched while
one is decompressed, so the network and the CPU work at the same time.

``stream`` walks a ``DataSpec`` dataset by dataset and file by file; ``partitions`` cuts the
same walk into independent ``(file, entry range)`` pieces for distributed executors, and
``iterate_partition`` reads one of them. ``count_entries`` says how many entries a walk will
yield, from the files' metadata only (for progress reports).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from threading import Event
from typing import Any

import awkward as ak
import numpy as np

from mlaas4hep.data.prefetch import ordered_map
from mlaas4hep.data.remote import Retrier, is_transient
from mlaas4hep.data.schema import is_rntuple, rntuple_branches
from mlaas4hep.data.sources import corrupt_file_error, is_remote, open_tree, resolve_files
from mlaas4hep.errors import (
    BranchNotFoundError,
    Mlaas4hepError,
    SpecError,
    closest,
)
from mlaas4hep.spec import DatasetSpec, DataSpec, RemoteSpec

Label = int | float | str | None  # a dataset's label: a number or an expression


@dataclass(frozen=True, eq=False)  # eq would compare awkward arrays element-wise
class Chunk:
    """At most ``step_size`` consecutive entries of one file.

    ``arrays`` is an awkward record array with one field per requested branch, in the
    order asked for; ``entry_start``/``entry_stop`` locate it in ``file``.
    """

    arrays: ak.Array
    dataset: str
    label: Label
    file: str
    entry_start: int
    entry_stop: int

    def __len__(self) -> int:
        return self.entry_stop - self.entry_start


@dataclass(frozen=True)
class Partition:
    """An independent piece of work: entries ``[entry_start, entry_stop)`` of one file."""

    dataset: str
    label: Label
    file: str
    tree: str | None
    entry_start: int
    entry_stop: int


def iterate_file(
    path: str,
    tree: str | None,
    branches: Sequence[str],
    step_size: int,
    *,
    entry_start: int = 0,
    entry_stop: int | None = None,
    dataset: str = "",
    label: Label = None,
    remote: RemoteSpec | None = None,
) -> Iterator[Chunk]:
    """Yield chunks of at most ``step_size`` entries of ``branches`` from one file.

    ``entry_stop`` is clipped to the number of entries. For a remote file, a transient
    failure (expired request, reset or refused connection) reopens the file and resumes at
    the chunk that failed, with the timeouts, retries and backoff of ``remote`` (default
    ``RemoteSpec()``). Raises the errors of ``open_tree``, ``BranchNotFoundError`` (with the
    closest names), ``NotRootFileError`` when a basket cannot be read and
    ``DataSourceError`` (URL, operation, last error) when the retries are spent.
    """
    names = _check_request(branches, step_size)
    where = _Position(entry_start)
    if not is_remote(path):
        yield from _read_file(path, tree, names, step_size, entry_stop, dataset, label, where)
        return
    spec = remote or RemoteSpec()
    retrier = Retrier(path, spec)
    while True:
        try:
            for chunk in _read_file(
                path, tree, names, step_size, entry_stop, dataset, label, where, spec
            ):
                yield chunk
                retrier.succeeded()
            return
        # OSError mostly; the XRootD bindings raise ValueError on a handle whose connection
        # died ("I/O operation on closed file").
        except (OSError, ValueError) as exc:
            # Before the file was ever opened, an unreachable host is a mistake, not a blip.
            if not where.opened or not is_transient(exc):
                raise
            retrier.failed(exc, f"reading entries from {where.start} of")


@dataclass
class _Position:
    """Where a read has got to: the next entry, and whether the file was opened once."""

    start: int
    opened: bool = False


def _read_file(
    path: str,
    tree: str | None,
    names: list[str],
    step_size: int,
    entry_stop: int | None,
    dataset: str,
    label: Label,
    where: _Position,
    remote: RemoteSpec | None = None,
) -> Iterator[Chunk]:
    with open_tree(path, tree, remote=remote) as obj:
        where.opened = True
        stop = obj.num_entries if entry_stop is None else min(entry_stop, obj.num_entries)
        if where.start >= stop:
            return
        readahead = remote.readahead if remote is not None else 0
        try:
            for arrays in _reader(obj, path, names, step_size, where.start, stop, readahead):
                start = where.start
                where.start = start + len(arrays)
                yield Chunk(arrays, dataset, label, path, start, where.start)
        except Mlaas4hepError:
            raise
        # uproot fails on a damaged basket with many exception types (DecompressionError,
        # DeserializationError, TypeError, IndexError...): all mean "this file is corrupt".
        # A remote read that failed on the way is not corruption: it goes up to be retried.
        except Exception as exc:
            if remote is not None and is_transient(exc):
                raise
            msg = f"reading entries from {where.start}"
            raise corrupt_file_error(path, exc, msg) from exc


def stream(
    data: DataSpec, branches: Sequence[str], *, datasets: Sequence[str] | None = None
) -> Iterator[Chunk]:
    """Yield chunks of every selected dataset (default: all, in spec order), file by file.

    Each chunk carries its dataset's name and label. ``data.max_events`` caps each dataset
    exactly. Raises ``SpecError`` for an unknown dataset name and the errors of
    ``resolve_files`` and ``iterate_file``.
    """
    for ds in _select(data, datasets):
        remaining = data.max_events
        for path in _files(data, ds):
            if remaining == 0:
                break
            for chunk in iterate_file(
                path,
                data.tree,
                branches,
                data.step_size,
                entry_stop=remaining,
                dataset=ds.name,
                label=ds.label,
                remote=data.remote,
            ):
                remaining = None if remaining is None else remaining - len(chunk)
                yield chunk


def iterate_partition(
    part: Partition,
    branches: Sequence[str],
    step_size: int,
    *,
    remote: RemoteSpec | None = None,
) -> Iterator[Chunk]:
    """Yield the chunks of one partition (see ``partitions``); ``remote`` as in
    ``iterate_file``."""
    return iterate_file(
        part.file,
        part.tree,
        branches,
        step_size,
        entry_start=part.entry_start,
        entry_stop=part.entry_stop,
        dataset=part.dataset,
        label=part.label,
        remote=remote,
    )


def partitions(
    data: DataSpec, *, datasets: Sequence[str] | None = None, split: bool = True
) -> list[Partition]:
    """Cut the selected datasets into ``(dataset, file, entry range)`` pieces.

    With ``split`` (the default) each piece holds at most ``data.step_size`` entries, one
    task each for a distributed executor; without it, one piece per file. ``max_events`` is
    honoured: the pieces of a dataset add up to at most that many entries, taken in the same
    order as ``stream``. Opens every file (metadata only) to count its entries.
    """
    out: list[Partition] = []
    for ds in _select(data, datasets):
        for path, n in _file_entries(data, ds):
            step = data.step_size if split else max(n, 1)
            out.extend(
                Partition(ds.name, ds.label, path, data.tree, s, min(s + step, n))
                for s in range(0, n, step)
            )
    return out


def count_entries(
    data: DataSpec, *, datasets: Sequence[str] | None = None, stop: Event | None = None
) -> int | None:
    """The entries ``stream`` will yield for the selected datasets (``max_events`` honoured).

    Reads only each file's metadata (the tree header: no basket is fetched, remote files
    included), so it costs one open per file. *stop*, once set, ends the count early with
    None (the caller no longer needs it). Raises the errors of ``resolve_files`` and
    ``open_tree``.
    """
    total = 0
    for ds in _select(data, datasets):
        for _, n in _file_entries(data, ds, stop):
            total += n
    return None if stop is not None and stop.is_set() else total


def _file_entries(
    data: DataSpec, ds: DatasetSpec, stop: Event | None = None
) -> Iterator[tuple[str, int]]:
    """``(file, entries to read)`` of one dataset, in stream order, up to ``max_events``."""
    remaining = data.max_events
    for path in _files(data, ds):
        if remaining == 0 or (stop is not None and stop.is_set()):
            return
        with open_tree(path, data.tree, remote=data.remote) as obj:
            n = int(obj.num_entries)
        n = n if remaining is None else min(n, remaining)
        remaining = None if remaining is None else remaining - n
        yield path, n


def _files(data: DataSpec, ds: DatasetSpec) -> list[str]:
    return resolve_files(
        ds.files,
        redirector=data.redirector,
        xrootd_proxy=data.xrootd_proxy,
        proxy_mode=data.xrootd_proxy_mode,
    )


def _select(data: DataSpec, names: Sequence[str] | None) -> list[DatasetSpec]:
    if names is None:
        return list(data.datasets)
    known = {d.name: d for d in data.datasets}
    for name in names:
        if name not in known:
            msg = f"no dataset {name!r} in the spec; {closest(name, known)}"
            raise SpecError(msg)
    return [known[n] for n in names]


def _check_request(branches: Sequence[str], step_size: int) -> list[str]:
    if isinstance(branches, str):  # a lone string would be read as a list of letters
        branches = [branches]
    if not branches:
        msg = "no branches requested; name at least one branch to read"
        raise SpecError(msg)
    if not isinstance(step_size, int) or step_size < 1:
        msg = f"step_size must be a positive integer number of entries, not {step_size!r}"
        raise SpecError(msg)
    return list(dict.fromkeys(branches))


def _missing(have: Sequence[str], wanted: Sequence[str], path: str) -> None:
    known = set(have)
    missing = [w for w in wanted if w not in known]
    if missing:
        hints = "; ".join(f"{m!r}: {closest(m, have)}" for m in missing)
        msg = f"branch not found in {path!r}: {hints}"
        raise BranchNotFoundError(msg)


def _ttree_reader(
    tree: Any, path: str, names: list[str], step: int, start: int, stop: int, readahead: int
) -> Iterator[ak.Array]:
    """Chunks of a TTree; with *readahead*, that many chunks are fetched ahead concurrently."""
    _missing(tree.keys(recursive=True), names, path)
    wanted = frozenset(names)
    ranges = _cluster_ranges(tree, wanted, start, stop, step) if readahead else None
    chunks: Generator[ak.Array, None, None]
    if ranges is not None:
        # Remote files: while one chunk is decompressed, the next ones travel over the
        # network (uproot's iterate fetches a chunk only once the previous one is done).
        def fetch(entries: tuple[int, int]) -> ak.Array:
            first, last = entries
            return tree.arrays(
                filter_name=wanted.__contains__, entry_start=first, entry_stop=last, library="ak"
            )

        chunks = ordered_map(fetch, ranges, readahead + 1, "mlaas4hep-readahead")
    else:
        chunks = tree.iterate(
            filter_name=wanted.__contains__,
            step_size=step,
            entry_start=start,
            entry_stop=stop,
            library="ak",
        )
    try:
        for arrays in chunks:
            # uproot returns fields in file order; give them in the order asked for.
            yield arrays if arrays.fields == names else arrays[names]
    finally:
        chunks.close()  # a reader stopped early cancels the fetches still pending


def _cluster_ranges(
    tree: Any, wanted: frozenset[str], start: int, stop: int, step: int
) -> list[tuple[int, int]] | None:
    """``[start, stop)`` in pieces of at most *step* entries that end on basket boundaries.

    A piece ends on the last boundary shared by the baskets of every wanted branch in its
    second half. None when some piece has no such boundary (baskets longer than half a
    chunk): chunks read independently would then fetch and decompress the same basket
    twice, which costs more than reading ahead saves (``iterate`` keeps such baskets).
    """
    bounds = np.asarray(tree.common_entry_offsets(filter_name=wanted.__contains__))
    ranges = []
    first = start
    while first < stop:
        limit = min(first + step, stop)
        i = int(np.searchsorted(bounds, limit, side="right")) - 1
        if i >= 0 and bounds[i] > first + step // 2:
            last = int(bounds[i])
        elif limit == stop:
            last = stop
        else:
            return None
        ranges.append((first, last))
        first = last
    return ranges


def _reader(
    obj: Any, path: str, names: list[str], step: int, start: int, stop: int, readahead: int
) -> Iterator[ak.Array]:
    if is_rntuple(obj):
        return _rntuple_reader(obj, path, names, step, start, stop)
    return _ttree_reader(obj, path, names, step, start, stop, readahead)


def _rntuple_reader(
    ntuple: Any, path: str, names: list[str], step: int, start: int, stop: int
) -> Iterator[ak.Array]:
    """Read an RNTuple under NanoAOD names (``Jet_pt`` <- field ``Jet.pt``, ``nJet``)."""
    infos = {b.name: b for b in rntuple_branches(ntuple)}
    _missing(list(infos), names, path)
    fields: set[str] = set()
    for name in names:
        info = infos[name]
        if info.kind == "counter":  # any member gives the multiplicity
            member = next(b for b in infos.values() if b.collection == info.collection)
            fields.add(f"{info.collection}.{member.name[len(str(info.collection)) + 1 :]}")
        elif info.kind == "jagged" and info.collection:
            fields.add(f"{info.collection}.{name[len(info.collection) + 1 :]}")
        else:
            fields.add(name)
    for arrays in ntuple.iterate(
        filter_name=fields.__contains__, step_size=step, entry_start=start, entry_stop=stop
    ):
        out = {}
        for name in names:
            info = infos[name]
            coll = info.collection
            if info.kind == "counter" and coll:
                # int32 like NanoAOD's counter branches, so both formats give one type
                out[name] = ak.values_astype(ak.num(arrays[coll], axis=1), np.int32)
            elif info.kind == "jagged" and coll:
                out[name] = arrays[coll][name[len(coll) + 1 :]]
            else:
                out[name] = arrays[name]
        yield ak.zip(out, depth_limit=1)
