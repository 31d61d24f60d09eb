"""``mlaas4hep apply MODEL INPUTS... --out DIR``: score every event of ROOT files.

MODEL (and each ``--model``) is a model bundle directory (the output of ``mlaas4hep run``,
or of ``mlaas4hep download JOB``) or a model ``NAME[:VERSION]`` published in the service,
whose bundle is fetched first (``mlaas4hep.client.models``). INPUTS are what a spec
accepts: paths, globs, ``@lists``, ``root://`` (through the first model's
``data.xrootd_proxy``) and ``http(s)://`` URLs. Every input is streamed once through
every model (``mlaas4hep.apply.score_file``) into one output per input,
``DIR/<input stem>.<model>[+<model>...].friend.root`` (or ``.parquet``):
a friend tree with the same entries in the same order, the identifier branches in their
exact types and per model ``<model>_score`` (one ``_score_<class>`` per class, or
``_value``) and ``<model>_pass``. ``--only-passing`` writes only the events passing
(any model's) cuts. A failing input (truncated, unreadable, lacking a branch) is reported
in one line naming it on stderr; the others are still written; the exit status is then 2.
``--folds out-of-fold`` (default) scores each event with the model of a k-folded bundle
that did not train on it, ``--folds average`` with the mean of its k models (real data).
``--dataset NAME`` also runs training dataset NAME's own ``define`` and ``cuts``
(``data.datasets[]``) in every model, to score more events of that sample as it was
trained on (default: the global preprocessing only, what any new events need).
``--dask-scheduler ADDRESS`` scores the inputs' partitions on that Dask cluster
(``mlaas4hep.apply.distributed``); the outputs are the same, bit for bit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from mlaas4hep.apply import Model, ScoredChunk, score_file
from mlaas4hep.apply.distributed import score_inputs
from mlaas4hep.apply.model import FOLD_MODES, OUT_OF_FOLD
from mlaas4hep.data.friend import FORMATS, SUFFIXES, Format, open_output
from mlaas4hep.data.partition import PARTITION_ENTRIES, Distributor
from mlaas4hep.data.schema import inspect_tree
from mlaas4hep.data.sources import resolve_files
from mlaas4hep.errors import Mlaas4hepError, SpecError

EXIT_FAILED_INPUTS = 2
ENTRY = "entry"  # the identifier written with --no-ids


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a model bundle directory (mlaas4hep run's output)")
    parser.add_argument("inputs", nargs="+", help="ROOT files: paths, globs, @list.txt, URLs")
    parser.add_argument("--out", type=Path, required=True, help="directory for the outputs")
    parser.add_argument("--model", dest="more", action="append", default=[], metavar="MODEL",
                        help="a further model, applied in the same pass (repeatable)")  # fmt: skip
    parser.add_argument("--tree", default=None, help="tree (default: the model's training tree)")
    parser.add_argument("--format", choices=FORMATS, default="root", help="output format")
    parser.add_argument("--only-passing", action="store_true", help="write passing events only")
    parser.add_argument("--step-size", type=int, default=None, help="entries per chunk")
    parser.add_argument("--no-ids", action="store_true",
                        help=f"write entry numbers ({ENTRY!r}), not identifiers")  # fmt: skip
    parser.add_argument("--folds", choices=FOLD_MODES, default=OUT_OF_FOLD,
                        help="k-folded models: each event by the model that did not train "
                        "on it (simulation), or the mean of the k models (real data)")  # fmt: skip
    parser.add_argument("--dataset", metavar="NAME", default=None,
                        help="also apply the own defines and cuts of the models' training "
                        "dataset NAME (default: the global preprocessing only)")  # fmt: skip
    parser.add_argument("--progress-json", action="store_true",
                        help="one JSON progress object per line on stdout")  # fmt: skip
    parser.add_argument("--dask-scheduler", metavar="ADDRESS",
                        help="score on this Dask cluster (tcp://host:8786)")  # fmt: skip
    parser.add_argument("--partition-entries", type=int, default=PARTITION_ENTRIES,
                        metavar="N", help="with --dask-scheduler: entries a task aims at "
                        f"(default {PARTITION_ENTRIES})")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    if args.step_size is not None and args.step_size < 1:
        msg = f"--step-size must be positive, got {args.step_size!r}"
        raise SpecError(msg)
    if args.partition_entries < 1:
        msg = f"--partition-entries must be positive, got {args.partition_entries!r}"
        raise SpecError(msg)
    sources = [args.model, *args.more]
    models = [load_model(m, folds=args.folds, dataset=args.dataset) for m in sources]
    data = models[0].spec.data
    files = resolve_files(
        args.inputs,
        redirector=data.redirector,
        xrootd_proxy=data.xrootd_proxy,
        proxy_mode=data.xrootd_proxy_mode,
    )
    report = _Reporter(args.progress_json, len(files))
    failed = 0
    with _distributor(args.dask_scheduler) as distributor:
        for path, write in _outputs(models, files, distributor, args):
            out = output_path(args.out, path, models, args.format)
            try:
                n = write(out, args)
            except Mlaas4hepError as exc:
                failed += 1
                print(f"mlaas4hep apply: error: {path}: {exc}", file=sys.stderr)
                continue
            report.file_done(path, out, n)
    report.done(failed)
    return EXIT_FAILED_INPUTS if failed else 0


def load_model(source: str, folds: str = OUT_OF_FOLD, dataset: str | None = None) -> Model:
    """A bundle directory, or a model ``NAME[:VERSION]`` of the service, fetched first
    (``mlaas4hep.client.models``: URL and token from the environment, the client
    config or ``mlaas4hep login``); *folds*: how a k-folded model scores; *dataset*: the
    training dataset whose own defines and cuts apply too (``SpecError`` listing the
    bundle's datasets when it has none of that name)."""
    return Model.load(source, folds=folds, dataset=dataset)


def output_path(out_dir: Path, source: str, models: Sequence[Model], fmt: Format) -> Path:
    """``out_dir/<input stem>.<model>[+<model>...].friend<suffix>``."""
    name = PurePosixPath(urlsplit(source).path if "://" in source else source).name
    stem = name[: -len(".root")] if name.endswith(".root") else name
    return out_dir / f"{stem}.{'+'.join(m.name for m in models)}.friend{SUFFIXES[fmt]}"


@contextlib.contextmanager
def _distributor(address: str | None) -> Iterator[Distributor | None]:
    if address is None:
        yield None
        return
    from mlaas4hep.jobs.dask_map import distributor_at  # only with --dask-scheduler: dask

    with distributor_at(address) as distributor:
        yield distributor


def _outputs(
    models: Sequence[Model], files: Sequence[str], distributor: Distributor | None, args: Any
) -> Iterator[tuple[str, Callable[[Path, Any], int]]]:
    """Per input in order: its name and the function writing its output (out, args)."""
    if distributor is None:
        for path in files:
            yield path, partial(apply_one, models, path)
        return
    ids: list[str] | None = [] if args.no_ids else None
    scored = score_inputs(
        models, files, distributor, tree=args.tree or None, step_size=args.step_size,
        ids=ids, min_entries=args.partition_entries,
    )  # fmt: skip
    for s in scored:
        yield s.source, partial(write_output, models, s.chunks, s.tree, source=s.source)


def apply_one(models: Sequence[Model], source: str, out: Path, args: Any) -> int:
    """Score *source* into *out* (atomically); return the number of entries read."""
    # the friend tree is named like the source tree, so AddFriend finds it by name
    tree = args.tree or models[0].tree or inspect_tree(source).tree
    ids: list[str] | None = [] if args.no_ids else None
    with closing(
        score_file(models, source, tree=tree, step_size=args.step_size, ids=ids)
    ) as chunks:
        return write_output(models, chunks, tree, out, args, source=source)


def write_output(
    models: Sequence[Model],
    chunks: Iterable[ScoredChunk],
    tree: str,
    out: Path,
    args: Any,
    *,
    source: str,
) -> int:
    """Write the scored *chunks* of one input into *out* (atomically); return the entries."""
    columns = [c for m in models for c in (*m.output_columns, m.pass_column)]
    writer = None
    n = 0
    try:
        for chunk in chunks:
            rows, cols = _rows(chunk, models, args.only_passing, args.no_ids)
            if writer is None:
                dtypes = {k: v.dtype for k, v in rows.items()}
                writer = open_output(out, args.format, tree=tree, ids=dtypes, columns=columns)
            writer.write(rows, cols)
            n += len(chunk)
        if writer is None:  # an empty tree: an empty friend, still entry-aligned
            empty = _empty_ids(models, args, source, tree)
            writer = open_output(out, args.format, tree=tree, ids=empty, columns=columns)
        writer.commit()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return n


def _rows(
    chunk: ScoredChunk, models: Sequence[Model], only_passing: bool, no_ids: bool
) -> tuple[dict[str, np.ndarray[Any, Any]], dict[str, np.ndarray[Any, Any]]]:
    ids = dict(chunk.ids)
    if no_ids:
        ids = {ENTRY: np.arange(chunk.entry_start, chunk.entry_stop, dtype=np.int64)}
    cols = chunk.columns
    if only_passing:
        keep = np.zeros(len(chunk), dtype=bool)
        for m in models:
            keep |= cols[m.pass_column]
        ids = {k: v[keep] for k, v in ids.items()}
        cols = {k: v[keep] for k, v in cols.items()}
    return ids, cols


def _empty_ids(
    models: Sequence[Model], args: Any, source: str, tree: str
) -> dict[str, np.dtype[Any]]:
    """The identifier columns of an input without entries: the source branches' own
    types (a uint64 ``event`` stays uint64, so outputs of one sample concatenate)."""
    if args.no_ids:
        return {ENTRY: np.dtype(np.int64)}
    schema = inspect_tree(source, tree)
    return {i: np.dtype(schema.branch(i).dtype) for i in models[0].identifiers}


@dataclass
class _Reporter:
    """Progress: a line per file on stderr, or JSON lines (``--progress-json``) on stdout."""

    as_json: bool
    n_files: int
    events: int = 0
    files: int = 0
    started: float = 0.0

    def __post_init__(self) -> None:
        self.started = time.monotonic()

    def file_done(self, source: str, out: Path, n: int) -> None:
        self.events += n
        self.files += 1
        message = f"{self.files}/{self.n_files} {out.name}"
        if self.as_json:
            self._emit("apply", message)
        else:
            print(f"{source}: {n} entries -> {out}", file=sys.stderr)

    def done(self, failed: int) -> None:
        message = f"{self.files} of {self.n_files} input(s) written, {failed} failed"
        if self.as_json:
            self._emit("done", message)
        else:
            print(message, file=sys.stderr)

    def _emit(self, phase: str, message: str) -> None:
        line = {
            "phase": phase,
            "events": self.events,
            "elapsed_s": round(time.monotonic() - self.started, 3),
            "message": message,
        }
        print(json.dumps(line), flush=True)
