"""The streaming preprocessor: ROOT chunks in, feature batches out, in bounded memory.

``Preprocessor(spec).fit()`` makes a first pass over the data (statistics of every
feature on the training split, after selections, defines and cuts; the cut flow; event
counts) and returns a ``FeatureInfo``; ``batches()`` then streams ``FeatureBatch`` objects
(raw features, targets, weights, split codes) chunk by chunk, optionally mixing datasets
in proportion and shuffling within a buffer. The per-chunk work is ``preprocess.program``;
this module only drives the stream and accumulates.

The first pass reports its progress to ``fit(progress=...)``: entries read so far and the
entries in all, which a background thread counts from the files' metadata while the data
streams (``data.stream.count_entries``), so the first chunk is not delayed by opening every
file first.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from mlaas4hep.data.prefetch import ordered_map, prefetch
from mlaas4hep.data.schema import inspect_tree
from mlaas4hep.data.sources import resolve_files
from mlaas4hep.data.stream import Partition, count_entries, stream
from mlaas4hep.errors import DataQualityError, SpecError
from mlaas4hep.preprocess import cache, partitioned
from mlaas4hep.preprocess.firstpass import Accumulator
from mlaas4hep.preprocess.info import FeatureBatch, FeatureInfo
from mlaas4hep.preprocess.partitioned import Distributor, chunk_columns
from mlaas4hep.preprocess.program import LABEL, WEIGHT, ChunkResult, Program
from mlaas4hep.preprocess.reweight import Reweighter, check_variable_names
from mlaas4hep.preprocess.shuffle import shuffled
from mlaas4hep.preprocess.split import SPLIT_CODES
from mlaas4hep.spec import DataSpec, PipelineSpec

SplitName = Literal["train", "validation", "test"]
__all__ = ["ChunkLike", "FeatureBatch", "FeatureInfo", "Preprocessor", "ReadProgress", "SplitName"]


class ChunkLike(Protocol):
    """What the preprocessor needs of a data chunk (``mlaas4hep.data.stream.Chunk``)."""

    @property
    def arrays(self) -> Any: ...
    @property
    def dataset(self) -> str: ...
    @property
    def file(self) -> str: ...


StreamFn = Callable[[DataSpec, Sequence[str], Sequence[str] | None], Iterable[ChunkLike]]
NamesFn = Callable[[DataSpec], Collection[str]]
CountFn = Callable[[DataSpec, threading.Event], int | None]
#: Called by the first pass with (entries read so far, entries in all or None until known).
ReadProgress = Callable[[int, int | None], None]


class Preprocessor:
    """Streams a pipeline spec's data through its preprocessing (see the module docstring).

    Args:
        spec: the validated pipeline spec.
        cache_dir: where first-pass results are cached, keyed by the spec's data and
            preprocess sections and the identity (path, size, mtime) of local input files.
        threads: chunks processed at once (numpy and awkward release the GIL for most of
            the work); default: 2, or 1 on a single-core machine.
        stream_fn, names_fn: the data source (default: ``mlaas4hep.data``); tests inject
            in-memory chunks here.
        count_fn: counts the entries the stream will yield, for progress reports (default:
            ``data.stream.count_entries`` with the default stream, none with another).
        distributor: run the chunks as partitions there (a Dask cluster, say) instead of
            in this process; same per-chunk code, same results (``preprocess.partitioned``).
            ``stream_fn`` is then not used.

    Raises:
        SpecError / ExpressionError: at construction for an invalid expression or label
            set-up; at the first pass for names that are not branches.
    """

    def __init__(
        self,
        spec: PipelineSpec,
        *,
        cache_dir: Path | None = None,
        threads: int | None = None,
        stream_fn: StreamFn | None = None,
        names_fn: NamesFn | None = None,
        count_fn: CountFn | None = None,
        distributor: Distributor | None = None,
    ) -> None:
        self.spec = spec
        self.program = Program(spec)
        if spec.preprocess.balance and self.program.labels.task == "regression":
            raise SpecError("preprocess.balance needs a classification task, not regression")
        self.cache_dir = cache_dir
        self.threads = threads if threads is not None else min(2, os.cpu_count() or 1)
        self._stream_fn = stream_fn or _data_stream
        self._names_fn = names_fn or _data_branch_names
        self._count_fn = count_fn if count_fn is not None or stream_fn else _data_count
        self.distributor = distributor
        self._plans: dict[tuple[str, ...] | None, list[Partition]] = {}
        self._branches: list[str] | None = None
        self._info: FeatureInfo | None = None
        self._reweighter: Reweighter | None = None

    @property
    def branches(self) -> list[str]:
        """The branches read from the files (resolved against the tree on first use)."""
        if self._branches is None:
            names = self._names_fn(self.spec.data)
            check_variable_names(self.spec, set(names))  # a SpecError, before the caret ones
            self._branches = self.program.branches(names)
        return self._branches

    def chunks(self, datasets: Sequence[str] | None = None) -> Iterator[ChunkResult]:
        """Every chunk of *datasets* (default: all, in spec order) through the program.

        The next chunk is read in a background thread while the current ones are processed
        on ``threads`` threads; results come in stream order. With a distributor, the
        partitions run there and their results stream back in the same order.
        """
        if self.distributor is not None:
            parts = self._plan(datasets)
            yield from partitioned.results(self.spec, self.branches, self.distributor, parts)
            return
        source = prefetch(self._stream_fn(self.spec.data, self.branches, datasets), depth=1)
        yield from self._run_all(source)

    def _plan(self, datasets: Sequence[str] | None) -> list[Partition]:
        """The partitions of *datasets*, planned once per run (planning opens every file)."""
        key = None if datasets is None else tuple(datasets)
        if key not in self._plans:
            self._plans[key] = partitioned.plan(self.spec, datasets)
        return self._plans[key]

    def _run_all(self, chunks: Iterator[ChunkLike]) -> Iterator[ChunkResult]:
        """Chunks through the program, on ``threads`` threads, in order."""
        by_name = {d.name: d for d in self.spec.data.datasets}
        first = next(chunks, None)
        if first is None:
            return
        # bind (type-check) on the first chunk before any concurrent use of the program
        yield self.program.run(_columns(first.arrays), by_name[first.dataset])

        def run(chunk: ChunkLike) -> ChunkResult:
            return self.program.run(_columns(chunk.arrays), by_name[chunk.dataset])

        yield from ordered_map(run, chunks, self.threads)

    # -- first pass ----------------------------------------------------------------------

    def fit(self, *, strict: bool = True, progress: ReadProgress | None = None) -> FeatureInfo:
        """First pass: feature statistics (train split), cut flow, counts; cached.

        *progress* is called after each chunk of the first pass with the entries read so
        far and the entries in all (None until counted), and once at the end with both equal
        to the entries read; not at all when the result comes from the cache. Raises
        ``DataQualityError`` when *strict* and a feature, label or weight has NaN/inf (with
        ``preprocess.nonfinite: error``) or no training event passes the cuts.
        """
        if self._info is None:
            key = cache.key(self.spec)
            cached = cache.load(self.cache_dir, key) if self.cache_dir else None
            if cached is not None:
                self._info = FeatureInfo.from_dict(cached)
            else:
                self._info, files = self._first_pass(progress or _ignore)
                if self.cache_dir:
                    cache.save(self.cache_dir, key, self._info.to_dict(), files)
        if strict:
            self._check(self._info)
        return self._info

    def _first_pass(self, progress: ReadProgress) -> tuple[FeatureInfo, list[str]]:
        if self.distributor is not None:
            merged, read = partitioned.first_pass(
                self.spec, self.program, self.branches, self.distributor, self._plan(None),
                progress,
            )  # fmt: skip
            return merged.info(), read
        acc = Accumulator(self.program)
        files: list[str] = []
        entries = 0

        def seen(chunks: Iterable[ChunkLike]) -> Iterator[ChunkLike]:
            for chunk in chunks:
                if not files or files[-1] != chunk.file:
                    files.append(chunk.file)
                yield chunk

        source = prefetch(seen(self._stream_fn(self.spec.data, self.branches, None)), depth=1)
        total = _Total(self._count_fn, self.spec.data)
        try:
            for result in self._run_all(source):
                acc.add(result.dataset, result)
                entries += result.n_in
                progress(entries, total.value)
        finally:
            total.close()
        progress(entries, entries)
        return acc.info(), files

    def _check(self, info: FeatureInfo) -> None:
        watched = set(info.names) | {LABEL, WEIGHT}
        bad = {k: v for k, v in info.nonfinite.items() if v and k in watched}
        if bad and self.spec.preprocess.nonfinite == "error":
            defines = {k: v for k, v in info.nonfinite.items() if v and k not in watched}
            msg = (
                f"NaN/inf values after preprocessing: {bad!r}"
                + (f" (from defines {defines!r})" if defines else "")
                + ". Guard the expressions (e.g. where(x > 0, log(x), 0)), cut those events, "
                "or set preprocess.nonfinite: drop"
            )
            raise DataQualityError(msg)
        train = sum(e.get("train", 0) for e in info.events.values())
        if train == 0:
            msg = (
                "no training events after the cuts: check preprocess.cuts with "
                "`mlaas4hep preview` (cut flow) and preprocess.split"
            )
            raise DataQualityError(msg)

    def cutflow(self) -> list[dict[str, Any]]:
        """Per cut: name, expr, events before/after, efficiency; per dataset too."""
        return self.fit(strict=False).cutflow

    # -- batches -------------------------------------------------------------------------

    def batches(
        self, split: SplitName | None = None, *, shuffle: bool = False, seed: int = 0
    ) -> Iterator[FeatureBatch]:
        """Stream the events of *split* (default: all) as ``FeatureBatch`` objects.

        Without *shuffle*: one batch per chunk, datasets in spec order (deterministic).
        With *shuffle*: datasets are interleaved chunk by chunk with probabilities in
        proportion to their remaining events, and events are shuffled within a buffer of
        ``train.shuffle_buffer`` events; the order is a function of *seed*. Memory is
        bounded by the chunk size plus the buffer.
        """
        if split is not None and split not in SPLIT_CODES:
            raise SpecError(f"unknown split {split!r}; use one of {sorted(SPLIT_CODES)}")
        info = self.fit()
        code = None if split is None else SPLIT_CODES[split]
        rng = np.random.default_rng(seed)
        results = self._mixed(info, rng) if shuffle else self.chunks()
        batches = (b for r in results if len(b := self._batch(r, code, info)))
        if not shuffle:
            yield from batches
            return
        yield from shuffled(batches, self.spec.train.shuffle_buffer, rng)

    def _batch(self, r: ChunkResult, code: int | None, info: FeatureInfo) -> FeatureBatch:
        keep = slice(None) if code is None else r.split == code
        y, w = r.y[keep], r.w[keep]
        if info.reweight and self.program.reweighting is not None:
            if self._reweighter is None:
                self._reweighter = Reweighter(self.program.reweighting, info.reweight)
            columns = {k: v[keep] for k, v in r.columns.items()}
            w = (w * self._reweighter.factors(columns, y)).astype(np.float32)
        if info.class_weights:
            w = (w * np.asarray(info.class_weights, dtype=np.float32)[y.astype(np.int64)]).astype(
                np.float32
            )
        return FeatureBatch(r.X[keep], y, w, r.split[keep])

    def _mixed(self, info: FeatureInfo, rng: np.random.Generator) -> Iterator[ChunkResult]:
        names = [d.name for d in self.spec.data.datasets]
        its = {n: iter(self.chunks([n])) for n in names}
        left = {n: float(max(info.events.get(n, {}).get("read", 1), 1)) for n in names}
        while its:
            alive = list(its)
            p = np.array([left[n] for n in alive])
            name = alive[int(rng.choice(len(alive), p=p / p.sum()))]
            r = next(its[name], None)
            if r is None:
                del its[name]
                continue
            left[name] = max(left[name] - r.n_in, 1.0)
            yield r


_columns = chunk_columns


def _ignore(_read: int, _total: int | None) -> None:
    """No progress reports."""


class _Total:
    """The entries of a first pass, counted in a background thread while the data streams.

    ``value`` is None until the count is done, and stays None when it fails: it is only a
    progress hint, and the stream itself reports an unreadable file with the right error.
    """

    def __init__(self, count_fn: CountFn | None, data: DataSpec) -> None:
        self.value: int | None = None
        self._stop = threading.Event()
        if count_fn is not None:
            threading.Thread(
                target=self._count, args=(count_fn, data), name="mlaas4hep-count", daemon=True
            ).start()

    def _count(self, count_fn: CountFn, data: DataSpec) -> None:
        try:
            self.value = count_fn(data, self._stop)
        except Exception:  # a hint only: the stream raises the real error for a bad file
            self.value = None

    def close(self) -> None:
        """Stop counting (the pass is over); a file being opened is finished first."""
        self._stop.set()


# -- the default data source: mlaas4hep.data --------------------------------------------


def _data_stream(
    data: DataSpec, branches: Sequence[str], datasets: Sequence[str] | None
) -> Iterable[ChunkLike]:
    return stream(data, branches, datasets=datasets)


def _data_count(data: DataSpec, stop: threading.Event) -> int | None:
    return count_entries(data, stop=stop)


def _data_branch_names(data: DataSpec) -> Collection[str]:
    """Branch names of the first file of the first dataset (the others must match)."""
    first = data.datasets[0]
    files = resolve_files(
        first.files,
        redirector=data.redirector,
        xrootd_proxy=data.xrootd_proxy,
        proxy_mode=data.xrootd_proxy_mode,
    )
    return inspect_tree(files[0], data.tree).names()
