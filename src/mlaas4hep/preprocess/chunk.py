"""What a compiled ``Program`` does to one chunk of columns, for training or for scoring.

Order on a chunk: object selections (``select``, which also update the ``nC`` counter),
then the defines in order (the dataset's own in place), then the cuts (the global ones,
then the dataset's own; an event is kept when it passes all), then features, label,
weight, split and the reweighting variables on the kept events (``run_chunk``).

``apply_chunk`` keeps entry alignment for scoring: an ``AppliedChunk`` has a pass mask
over every event of the chunk, the features of the passing ones, and the identifiers of
every event in their original dtypes (never through float32).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import awkward as ak
import numpy as np

from mlaas4hep.errors import DataQualityError
from mlaas4hep.preprocess import jagged
from mlaas4hep.preprocess.expr import Expr
from mlaas4hep.preprocess.features import build_matrix
from mlaas4hep.preprocess.split import assign_split
from mlaas4hep.preprocess.steps import DatasetSteps
from mlaas4hep.spec import DatasetSpec, PipelineSpec

if TYPE_CHECKING:
    from mlaas4hep.preprocess.program import Program

LABEL, WEIGHT = "<label>", "<weight>"
DEFINE_PREFIX = "define:"  # non-finite counts of defines (before cuts) use this key prefix


@dataclass(frozen=True)
class ChunkResult:
    """One processed chunk: only the events that passed the cuts (and finite checks)."""

    X: np.ndarray[Any, Any]  # float32 (n, n_features)
    y: np.ndarray[Any, Any]
    w: np.ndarray[Any, Any]  # float32 (n,)
    split: np.ndarray[Any, Any]  # uint8 (n,)
    n_in: int  # events in the chunk
    passed: tuple[int, ...]  # events passing cuts[0], cuts[0:2], ... (cumulative)
    nonfinite: dict[str, int]  # feature / <label> / <weight> / define:NAME -> NaN/inf count
    dropped: int  # events dropped for NaN/inf features (nonfinite: drop)
    dataset: str = ""  # the dataset the chunk came from
    # expression text -> float64 (n,): the reweighting variables (preprocess.reweight)
    columns: dict[str, np.ndarray[Any, Any]] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class AppliedChunk:
    """One chunk in apply mode: every event of the chunk, in order."""

    X: np.ndarray[Any, Any]  # float32 (passed.sum(), n_features): the passing events only
    passed: np.ndarray[Any, Any]  # bool (n,): the event passes every cut (and has finite X)
    ids: dict[str, np.ndarray[Any, Any]]  # identifier -> (n,) in the branch's own dtype


def run_chunk(program: Program, columns: Mapping[str, Any], dataset: DatasetSpec) -> ChunkResult:
    """Process one training chunk of *dataset* (binds *program* on it when unbound)."""
    if program.types is None:
        program.bind(columns)
    n = _length(columns)
    env = {k: _event_or_object(v) for k, v in columns.items()}
    select_objects(program, env)
    steps = program.steps_of(dataset.name)
    nonfinite: dict[str, int] = {}
    for name, e in steps.defines.items():
        env[name] = _broadcast(program.evaluate(e, env), n)
        nonfinite[DEFINE_PREFIX + name] = _count_nonfinite(env[name])
    keep, passed = _cut(program, steps, env, n)
    # per-event columns are filtered here; object columns go whole to build_matrix,
    # which maps kept events itself (cheaper than slicing every jagged array)
    index = np.flatnonzero(keep)  # take() beats boolean indexing per column
    kept = _take(env, _after_cut_columns(program, steps), index)
    m = len(index)
    X = build_matrix(kept, program.spec.preprocess.features, keep)
    y = _targets(program, kept, dataset, m, steps.label or program.label)
    w = _weights(program, kept, dataset, m)
    split = _split(program.spec, [np.asarray(kept[i]) for i in program.spec.data.identifiers], m)
    # on every event, then the kept ones: kept object columns are not filtered yet
    extra = {
        e.text: np.asarray(_broadcast(program.evaluate(e, env), n), dtype=np.float64)[index]
        for _, e in program.extras
    }
    result = _finite(program, X, y, w, split, n, tuple(passed), nonfinite, extra)
    return dataclasses.replace(result, dataset=dataset.name)


def apply_chunk(program: Program, columns: Mapping[str, Any]) -> AppliedChunk:
    """Process one chunk for scoring: every event kept, with a pass mask (module doc).

    Events with a NaN/inf feature fail too when ``preprocess.nonfinite`` is ``drop``
    (training dropped them); with ``error`` they raise ``DataQualityError``, as in
    training.
    """
    if program.types is None:
        program.bind(columns)
    n = _length(columns)
    ids = {i: np.asarray(_event_or_object(columns[i])) for i in program.identifiers}
    env = {k: _event_or_object(v) for k, v in columns.items()}
    select_objects(program, env)
    for name, e in program.applied.defines.items():
        env[name] = _broadcast(program.evaluate(e, env), n)
    keep, _ = _cut(program, program.applied, env, n)
    index = np.flatnonzero(keep)
    kept = _take(env, program.feature_cols, index)
    X = build_matrix(kept, program.spec.preprocess.features, keep)
    counts: dict[str, int] = {}
    bad = _nonfinite_rows(X, program.names, counts)
    if bad is not None:
        if program.spec.preprocess.nonfinite != "drop":
            msg = (
                f"features {sorted(counts)} are NaN/inf for {int(bad.sum())} passing "
                "event(s) and the model's spec says preprocess.nonfinite: error"
            )
            raise DataQualityError(msg)
        keep[index[bad]] = False
        X = X[~bad]
    return AppliedChunk(X, keep, ids)


def select_objects(program: Program, env: dict[str, Any]) -> None:
    """Apply the object selections to the ``C_*`` columns of *env* (and ``nC``), in place."""
    for coll, e in program.selects.items():
        mask = program.evaluate(e, env)
        found = jagged.parts(mask)
        selection = jagged.Selection.from_mask(found) if found is not None else None
        prefix = coll + "_"
        for name in [k for k in env if k.startswith(prefix)]:
            if isinstance(env[name], ak.Array):
                env[name] = jagged.apply_mask(env[name], mask, selection)
        if "n" + coll in env:  # keep the counter consistent with the selected objects
            counts = selection.counts() if selection else ak.to_numpy(ak.sum(mask, axis=1))
            env["n" + coll] = np.asarray(counts).astype(env["n" + coll].dtype)


def _cut(
    program: Program, steps: DatasetSteps, env: Mapping[str, Any], n: int
) -> tuple[np.ndarray[Any, Any], list[int]]:
    """The pass mask of the global cuts then *steps*' own, and the cumulative counts."""
    keep = np.ones(n, dtype=bool)
    passed = []
    for _, e in (*program.cuts, *steps.cuts):
        keep &= _broadcast(program.evaluate(e, env), n).astype(bool)
        passed.append(int(keep.sum()))
    return keep, passed


def _take(
    env: Mapping[str, Any], names: Iterable[str], index: np.ndarray[Any, Any]
) -> dict[str, Any]:
    """The per-event columns *names* at *index*; object columns whole (see ``run_chunk``)."""
    return {
        k: env[k] if isinstance(env[k], ak.Array) else np.asarray(env[k]).take(index) for k in names
    }


def _after_cut_columns(program: Program, steps: DatasetSteps) -> set[str]:
    """The columns read after the cuts: features, identifiers, label, weights, extras."""
    cols = set(program.feature_cols) | set(program.identifiers)
    for _, e in program.late_exprs(steps)[len(program.cuts) + len(steps.cuts) :]:
        cols |= e.names()
    return cols


def _split(spec: PipelineSpec, ids: list[np.ndarray[Any, Any]], n: int) -> np.ndarray[Any, Any]:
    """The train/validation/test assignment of the kept events, hashed from *ids*."""
    if not ids:  # no identifiers (the spec then asks for no validation/test): all train
        return np.zeros(n, dtype=np.uint8)
    s = spec.preprocess.split
    return assign_split(ids, validation=s.validation, test=s.test, seed=s.seed)


def _targets(
    program: Program, env: Mapping[str, Any], dataset: DatasetSpec, n: int, label: Expr | None
) -> np.ndarray[Any, Any]:
    """The targets: the dataset's class, or *label* evaluated and checked for the task."""
    labels = program.labels
    dtype = np.int64 if labels.task == "multiclass" else np.float32
    if label is None:
        return np.full(n, labels.targets[dataset.name], dtype=dtype)
    y = np.asarray(_broadcast(program.evaluate(label, env), n), dtype=np.float64)
    task, k = labels.task, labels.n_classes
    allowed = (0.0, 1.0) if task == "binary" else range(k) if task == "multiclass" else None
    if allowed is not None and len(y):
        bad = ~np.isin(y, np.asarray(allowed, dtype=np.float64))
        if bad.any():
            msg = (
                f"{program.where(label)} {label.text!r} gave {float(y[bad][0])!r} for "
                f"a {task} task; it must give {list(allowed)!r} (fix the expression, or "
                "set task / preprocess.classes)"
            )
            raise DataQualityError(msg)
    return y.astype(dtype)


def _weights(
    program: Program, env: Mapping[str, Any], dataset: DatasetSpec, n: int
) -> np.ndarray[Any, Any]:
    """The dataset's weight times the global weight (1 where none), as float32."""
    w = np.ones(n, dtype=np.float64)
    for e in (program.dataset_weights.get(dataset.name), program.weight):
        if e is not None:
            w = w * _broadcast(program.evaluate(e, env), n)
    return w.astype(np.float32)


def _finite(
    program: Program,
    X: np.ndarray[Any, Any],
    y: np.ndarray[Any, Any],
    w: np.ndarray[Any, Any],
    split: np.ndarray[Any, Any],
    n_in: int,
    passed: tuple[int, ...],
    nonfinite: dict[str, int],
    extra: dict[str, np.ndarray[Any, Any]],
) -> ChunkResult:
    """Count NaN/inf in features, label and weight; drop those events under ``drop``."""
    bad_rows = _nonfinite_rows(X, program.names, nonfinite)
    nonfinite[LABEL] = int((~np.isfinite(y)).sum()) if y.dtype.kind == "f" else 0
    nonfinite[WEIGHT] = int((~np.isfinite(w)).sum())
    dropped = 0
    if program.spec.preprocess.nonfinite == "drop":
        good = np.isfinite(w) if bad_rows is None else ~bad_rows & np.isfinite(w)
        if y.dtype.kind == "f":
            good &= np.isfinite(y)
        dropped = int((~good).sum())
        if dropped:
            X, y, w, split = X[good], y[good], w[good], split[good]
            extra = {k: v[good] for k, v in extra.items()}
    return ChunkResult(X, y, w, split, n_in, passed, nonfinite, dropped, columns=extra)


def _nonfinite_rows(
    X: np.ndarray[Any, Any], names: tuple[str, ...], counts: dict[str, int]
) -> np.ndarray[Any, Any] | None:
    """Count NaN/inf per feature into *counts*; the rows holding any (None if none)."""
    # A sum is finite iff all its values are (barring overflow, which then takes the exact
    # path): one contiguous pass in the common all-finite case.
    if np.isfinite(X.sum()):
        return None
    bad = ~np.isfinite(X)
    for j in np.flatnonzero(bad.any(axis=0)):
        counts[names[j]] = int(bad[:, j].sum())
    return np.asarray(bad.any(axis=1))


def _length(columns: Mapping[str, Any]) -> int:
    return len(next(iter(columns.values()))) if columns else 0


def _event_or_object(column: Any) -> Any:
    if isinstance(column, ak.Array) and column.ndim == 1:
        return np.asarray(ak.to_numpy(column))
    return column


def _broadcast(value: Any, n: int) -> Any:
    """Constants (``define: one: '1'``) become a per-event column of length *n*."""
    if isinstance(value, np.ndarray | ak.Array):
        return value
    return np.full(n, value)


def _count_nonfinite(value: Any) -> int:
    if isinstance(value, ak.Array):
        value = ak.flatten(value, axis=None)
    arr = np.asarray(value)
    if arr.dtype.kind != "f":
        return 0
    return int((~np.isfinite(arr)).sum())
