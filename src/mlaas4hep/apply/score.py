"""Score every entry of one ROOT input with one or more models, in bounded memory.

``score_file`` reads the union of the branches the models need (plus the identifiers),
``step_size`` entries at a time (the next chunk is read while one is scored), and yields
one ``ScoredChunk`` per chunk: every entry of ``[entry_start, entry_stop)`` in source
order, the identifiers in their exact branch dtypes (a uint64 event number stays
uint64), and per model its score columns (float32, ``FILL_VALUE`` where the event fails
the model's cuts) and its ``<model>_pass`` flag.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np

from mlaas4hep.apply.model import Model
from mlaas4hep.data.prefetch import prefetch
from mlaas4hep.data.schema import TreeSchema, inspect_tree
from mlaas4hep.data.stream import iterate_file
from mlaas4hep.errors import SpecError, closest
from mlaas4hep.preprocess.partitioned import chunk_columns

Array = np.ndarray[Any, Any]
#: Default chunk cap: smaller chunks let reading the next one overlap scoring this one
#: within a file (a file of one 200k-entry chunk has no overlap at all); measured on
#: 2 x 200k events, 50k-entry chunks ran at 1.0-1.07x the bare preprocess+ORT rate.
MAX_DEFAULT_STEP = 50_000


@dataclass(frozen=True, eq=False)  # eq would compare arrays element-wise
class ScoredChunk:
    """Scores of the entries ``[entry_start, entry_stop)`` of one input, in order."""

    entry_start: int
    entry_stop: int
    ids: dict[str, Array]
    columns: dict[str, Array]

    def __len__(self) -> int:
        return self.entry_stop - self.entry_start


def score_file(
    models: Sequence[Model],
    source: str,
    *,
    tree: str | None = None,
    step_size: int | None = None,
    ids: Sequence[str] | None = None,
    entry_start: int = 0,
    entry_stop: int | None = None,
) -> Generator[ScoredChunk, None, None]:
    """Yield the ``ScoredChunk``s of every entry of *source* (see the module docstring).

    Args:
        models: the models to apply (distinct names: one column set each).
        source: a local path or a ``root://`` / ``http(s)://`` URL (resolved already).
        tree: the tree (default: the first model's training tree, else the only one).
        step_size: entries per chunk (default: the first model's ``data.step_size``, at
            most ``MAX_DEFAULT_STEP``).
        ids: identifier branches (default: the first model's identifiers; ``[]``: none).
        entry_start, entry_stop: score only these entries (a partition of the file, see
            ``mlaas4hep.apply.distributed``); chunks start at ``entry_start``.

    Raises:
        SpecError: a model needs a branch the tree lacks, or the identifiers are missing
            (the message says to pass ``--no-ids``); the data layer's errors for an
            unreadable or truncated file (``NotRootFileError``, ``DataSourceError``).
    """
    _, id_names, branches = read_plan(models, source, tree, ids)
    first = models[0]
    tree = tree if tree is not None else first.tree
    step = chunk_step(first, step_size)
    remote = first.spec.data.remote
    chunks = iterate_file(
        source, tree, branches, step,
        entry_start=entry_start, entry_stop=entry_stop, remote=remote,
    )  # fmt: skip
    for chunk in prefetch(chunks, depth=1):
        columns = chunk_columns(chunk.arrays)
        out: dict[str, Array] = {}
        for model in models:
            scored = model.score_columns(columns)
            for j, name in enumerate(model.output_columns):
                out[name] = np.ascontiguousarray(scored.scores[:, j])
            out[model.pass_column] = scored.passed
        chunk_ids = {i: _exact(columns[i]) for i in id_names}
        yield ScoredChunk(chunk.entry_start, chunk.entry_stop, chunk_ids, out)


def chunk_step(first: Model, step_size: int | None) -> int:
    """Entries per chunk: *step_size*, else the model's ``data.step_size`` capped at
    ``MAX_DEFAULT_STEP``."""
    return step_size or min(first.spec.data.step_size, MAX_DEFAULT_STEP)


def read_plan(
    models: Sequence[Model], source: str, tree: str | None, ids: Sequence[str] | None
) -> tuple[TreeSchema, list[str], list[str]]:
    """What scoring *source* reads: its tree's schema, the identifiers and all branches.

    *tree* and *ids* default as in ``score_file``. Opens the file (metadata only).
    Raises what ``score_file`` raises before reading.
    """
    if not models:
        msg = "score_file needs at least one model"
        raise SpecError(msg)
    _check_names(models)
    id_names = list(models[0].identifiers if ids is None else ids)
    schema = inspect_tree(source, tree if tree is not None else models[0].tree)
    available = schema.names()
    _check_ids(id_names, available, source)
    branches = sorted(set(id_names).union(*(m.branches(available) for m in models)))
    return schema, id_names, branches


def _exact(column: Any) -> Array:
    """A per-event column as numpy in its own dtype (never through float)."""
    return np.asarray(ak.to_numpy(column) if isinstance(column, ak.Array) else column)


def _check_names(models: Sequence[Model]) -> None:
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        msg = (
            f"models {names!r} share a name, so their columns would collide; apply them in "
            "separate runs or give their specs distinct deploy names"
        )
        raise SpecError(msg)


def _check_ids(ids: Sequence[str], available: Any, source: str) -> None:
    missing = [i for i in ids if i not in available]
    if missing:
        hints = "; ".join(f"{m!r} ({closest(m, available)})" for m in missing)
        msg = (
            f"{source!r} has no identifier branch {hints}; the model's identifiers are "
            f"{list(ids)!r}. Use --no-ids to write entry numbers only"
        )
        raise SpecError(msg)
