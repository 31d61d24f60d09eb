"""Applying models with partitions spread over a ``Distributor`` (a Dask cluster).

``score_inputs`` cuts every input into ``(file, entry range)`` partitions with the
preprocessing's planner (the local ``step_size`` chunks of ``score_file``, consecutive
ones joined by ``data.partition.group`` into tasks of ``PARTITION_ENTRIES`` or more), runs
``score_partition`` on each through ``Distributor.map_ordered`` and hands the driver, per
input in order, its ``ScoredChunk``s in entry order, which it writes as the local run does
(one friend file per input, temporary file + rename):

```
 driver (mlaas4hep apply --dask-scheduler)         workers
   read_plan per input (branches, entries) ──────►  score_partition(bundles, part):
   map_ordered(partitions) ◄── ScoredChunks ──────    Model.load, score_file(range)
   friend writer per input (atomic)
```

* **Equal to a local run, bit for bit**: a partition starts on a chunk boundary of the
  local stream and is read with the same ``step_size``, so its chunks, and the scores of
  each, are the local ones; the driver writes them in the same order.
* **Retries**: a task is a pure function of (bundle paths, partition): a worker that dies
  loses only results never delivered, and the scheduler reruns its tasks elsewhere
  (``distributed.scheduler.allowed-failures``). Nothing of a partition is written until
  its whole result has reached the driver, so there are no part files to clean up.
* **Failures** of one input (unreadable, truncated, lacking a branch) come back as that
  input's error; the other inputs are still scored. A task never raises a domain error:
  it returns it, so one bad file does not cancel the others' tasks.
* **Memory** on the driver: the distributor's window of partition results (about 30
  bytes per entry: identifiers, scores, pass flags), not the inputs.

Workers read the inputs and the model bundles by path or URL: they must see the same
file system (one host, a shared volume) or read ``root://`` URLs. Layer: ``apply``;
it never imports dask (``mlaas4hep.jobs.dask_map`` provides the Distributor).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial

from mlaas4hep.apply.model import OUT_OF_FOLD, Model
from mlaas4hep.apply.score import ScoredChunk, chunk_step, read_plan, score_file
from mlaas4hep.data.partition import PARTITION_ENTRIES, Distributor, group
from mlaas4hep.data.stream import Partition
from mlaas4hep.errors import Mlaas4hepError, SpecError


@dataclass(frozen=True)
class ApplyTask:
    """What every partition task needs (picklable): bundle paths and the read options."""

    bundles: tuple[str, ...]
    step_size: int
    ids: tuple[str, ...] | None
    folds: tuple[str, ...] = ()  # per bundle: how a k-folded one scores (Model.folds)
    # per bundle: the training dataset whose own steps apply too (Model.dataset)
    datasets: tuple[str | None, ...] = ()


@dataclass(frozen=True)
class PartitionScores:
    """A task's result: the scored chunks of one partition, or the error that stopped it."""

    chunks: list[ScoredChunk] = field(default_factory=list)
    error: Mlaas4hepError | None = None


@dataclass(frozen=True)
class InputScores:
    """One input's scores, in entry order. Iterating ``chunks`` raises the input's error
    (``Mlaas4hepError``); ``tree`` is the tree read ("" when planning failed)."""

    source: str
    tree: str
    chunks: Iterator[ScoredChunk]


def score_partition(task: ApplyTask, part: Partition) -> PartitionScores:
    """Score one partition (runs on a worker): load the bundles, read, score."""
    try:
        modes = task.folds or (OUT_OF_FOLD,) * len(task.bundles)
        datasets = task.datasets or (None,) * len(task.bundles)
        models = [
            Model.load(b, folds=f, dataset=d)
            for b, f, d in zip(task.bundles, modes, datasets, strict=True)
        ]
        chunks = score_file(
            models, part.file, tree=part.tree, step_size=task.step_size,
            ids=task.ids, entry_start=part.entry_start, entry_stop=part.entry_stop,
        )  # fmt: skip
        return PartitionScores(list(chunks))
    except Mlaas4hepError as exc:
        return PartitionScores(error=_portable(exc))


def score_inputs(
    models: Sequence[Model],
    sources: Sequence[str],
    distributor: Distributor,
    *,
    tree: str | None = None,
    step_size: int | None = None,
    ids: Sequence[str] | None = None,
    min_entries: int = PARTITION_ENTRIES,
) -> Iterator[InputScores]:
    """Yield each input's ``InputScores``, in order, its partitions scored by *distributor*.

    Arguments as in ``score_file``; *min_entries*: entries a task aims at. Consume each
    input's ``chunks`` before asking for the next input (what is left is skipped).
    """
    if not models:
        msg = "score_inputs needs at least one model"
        raise SpecError(msg)
    step = chunk_step(models[0], step_size)
    bundles = tuple(str(m.bundle) for m in models)
    folds = tuple(m.folds or OUT_OF_FOLD for m in models)
    datasets = tuple(m.dataset for m in models)
    task = ApplyTask(bundles, step, None if ids is None else tuple(ids), folds, datasets)
    planned: list[tuple[str, str, list[Partition] | Mlaas4hepError]] = []
    for source in sources:
        try:
            schema, _, _ = read_plan(models, source, tree, ids)
        except Mlaas4hepError as exc:
            planned.append((source, "", exc))
            continue
        # the tree as the local run names it (the friend tree is named after it)
        read_tree = tree or models[0].tree or schema.tree
        parts = plan_input(source, read_tree, schema.entries, step, min_entries)
        planned.append((source, read_tree, parts))
    every = [p for _, _, ps in planned if isinstance(ps, list) for p in ps]
    results = _Results(distributor.map_ordered(partial(score_partition, task), every))
    for source, read_tree, ps in planned:
        if isinstance(ps, Mlaas4hepError):
            yield InputScores(source, read_tree, _chunks(iter([PartitionScores(error=ps)])))
            continue
        mine = results.take(len(ps))
        yield InputScores(source, read_tree, _chunks(mine))
        with contextlib.suppress(Mlaas4hepError):  # kept by _Results for the next inputs
            for _ in mine:  # what the consumer left of this input (it stopped on an error)
                pass


def plan_input(
    source: str, tree: str | None, entries: int, step: int, min_entries: int
) -> list[Partition]:
    """The partitions of one input: ``step`` pieces joined by ``data.partition.group``."""
    pieces = [
        Partition("", None, source, tree, s, min(s + step, entries))
        for s in range(0, entries, step)
    ]
    return group(pieces, min_entries)


class _Results:
    """The distributor's results, taken input by input. Once the distributor itself
    failed (the cluster gave up on a task, or was lost), every later input gets that
    error rather than an empty output."""

    def __init__(self, results: Iterable[PartitionScores]) -> None:
        self._it = iter(results)
        self._broken: Mlaas4hepError | None = None

    def take(self, n: int) -> Iterator[PartitionScores]:
        for _ in range(n):
            if self._broken is not None:
                raise self._broken
            try:
                yield next(self._it)
            except StopIteration:
                msg = "the distributor returned fewer results than partitions; run again"
                self._broken = Mlaas4hepError(msg)
            except Mlaas4hepError as exc:
                self._broken = exc
        if self._broken is not None:
            raise self._broken


def _chunks(results: Iterator[PartitionScores]) -> Iterator[ScoredChunk]:
    for result in results:
        if result.error is not None:
            raise result.error
        yield from result.chunks


def _portable(exc: Mlaas4hepError) -> Mlaas4hepError:
    """*exc* if it can be rebuilt from its pickled form (the trip back to the driver),
    else its message as the base type: a result the driver cannot unpickle would fail
    the whole run, not one input."""
    try:
        back = copy.deepcopy(exc)  # rebuilt through __reduce_ex__, as pickle does
    except Exception:  # a custom __init__ signature: keep the message
        return Mlaas4hepError(str(exc))
    return back if str(back) == str(exc) else Mlaas4hepError(str(exc))
