"""A pipeline spec compiled into what runs on one chunk: select, define, cut, features.

``Program`` is pure: it parses every expression of the spec once, says which branches
it needs, type-checks against the column types of the data (``bind``), and turns one
chunk of columns into a ``ChunkResult`` (features, targets, weights, split, cut counts).
It does no I/O; ``preprocess.pipeline`` streams the data through it.

Order on a chunk: object selections (``select``, which also update the ``nC`` counter),
then ``define`` in order, then the ``cuts`` (an event is kept when it passes all), then
features, label, weight and split on the kept events. A dataset's own ``define``,
``cuts`` and ``label`` (``data.datasets[]``; ``preprocess.steps``) join these for its
chunks: its defines replace or follow the global ones, its cuts follow the global cuts.

Apply mode (``Program(spec, purpose="apply")``, for scoring any tree with a trained
model's preprocessing): the global steps only (or one dataset's, ``dataset=``); labels,
weights and the split are not evaluated nor read, and
``apply`` keeps entry alignment: an ``AppliedChunk`` has a pass mask over every event of
the chunk, the features of the passing ones, and the identifiers of every event in their
original dtypes (never through float32).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import awkward as ak
import numpy as np

from mlaas4hep.errors import DataQualityError, ExpressionError, SpecError, closest
from mlaas4hep.preprocess import jagged
from mlaas4hep.preprocess.evaluate import evaluate
from mlaas4hep.preprocess.expr import Expr, Name, error, parse, walk
from mlaas4hep.preprocess.features import build_matrix, feature_names, object_columns
from mlaas4hep.preprocess.labels import UNLABELLED, LabelPlan, check_label_type, plan_labels
from mlaas4hep.preprocess.reweight import plan_reweighting
from mlaas4hep.preprocess.split import assign_split
from mlaas4hep.preprocess.steps import DatasetSteps, dataset_steps, global_steps, steps_for
from mlaas4hep.preprocess.typecheck import Type, check, type_of_column
from mlaas4hep.spec import DatasetSpec, PipelineSpec

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


# Branch names that usually number events (eventNumber, EventNumber, evt, runNumber, lumi...).
_EVENT_NUMBER = re.compile(r"event|evt|run|lumi", re.IGNORECASE)


def _parse(text: str, where: str) -> Expr:
    try:
        return parse(text)
    except ExpressionError as exc:
        raise ExpressionError(f"in {where}: {exc}") from exc


class Program:
    """The compiled preprocessing of a ``PipelineSpec`` (see the module docstring)."""

    def __init__(
        self,
        spec: PipelineSpec,
        *,
        purpose: Literal["train", "apply"] = "train",
        identifiers: Sequence[str] | None = None,
        dataset: str | None = None,
    ) -> None:
        """*identifiers*: the id branches read (default ``spec.data.identifiers``);
        *dataset*: apply that dataset's own defines and cuts too (apply mode; default:
        the global steps only)."""
        self.spec = spec
        self.purpose = purpose
        self.identifiers = list(spec.data.identifiers if identifiers is None else identifiers)
        pre = spec.preprocess
        self.labels: LabelPlan = plan_labels(spec) if purpose == "train" else UNLABELLED
        self.names = feature_names(pre.features)
        self.selects = {c: _parse(t, f"preprocess.select.{c}") for c, t in pre.select.items()}
        self.defines = {n: _parse(t, f"preprocess.define.{n}") for n, t in pre.define.items()}
        self.cuts = [
            (c.name, _parse(c.expr, f"preprocess.cuts[{i}]")) for i, c in enumerate(pre.cut_list())
        ]
        training = purpose == "train"  # applying needs no label, weight or split
        self.label = _parse(pre.label, "preprocess.label") if pre.label and training else None
        self.weight = _parse(pre.weight, "preprocess.weight") if pre.weight and training else None
        self.dataset_weights = {
            d.name: _parse(d.weight, f"data.datasets[{d.name}].weight")
            for d in spec.data.datasets
            if d.weight and training
        }
        # per-event values handed on with the result: the reweighting variables
        self.extras = [
            (where, _parse(a.expr, where))
            for i, r in enumerate(pre.reweight if training else ())
            for j, a in enumerate(r.variables)
            for where in (f"preprocess.reweight[{i}].variables[{j}]",)
        ]
        self.reweighting = plan_reweighting(spec, self.labels) if training else None
        # each dataset's own defines, cuts and label (preprocess.steps); apply runs the
        # global steps, or those of the one dataset it is given
        self.steps = dataset_steps(spec, self.defines, _parse, labels=training)
        self.applied = steps_for(self.steps, dataset, self.defines)
        self.feature_cols = list(pre.features.scalars) + [
            c for coll, obj in pre.features.objects.items() for c in object_columns(coll, obj)
        ]
        self.types: dict[str, Type] | None = None
        self._layouts: dict[str, str] = {}  # input column -> its type, set by bind
        self._where = {id(e): w for w, e in self._all_exprs()}
        for steps in self.steps.values():
            self._where.update(steps.where)

    def _all_exprs(self) -> list[tuple[str, Expr]]:
        out = [(f"preprocess.select.{c}", e) for c, e in self.selects.items()]
        out += [(f"preprocess.define.{n}", e) for n, e in self.defines.items()]
        return out + self._late_exprs()

    def _eval(self, e: Expr, env: Mapping[str, Any]) -> Any:
        """Evaluate *e*; a failure names the spec field the expression comes from."""
        try:
            return evaluate(e, env)
        except ExpressionError as exc:
            raise ExpressionError(f"in {self._where.get(id(e), 'an expression')}: {exc}") from exc

    # -- which branches ----------------------------------------------------------------

    def _late_exprs(self, steps: DatasetSteps | None = None) -> list[tuple[str, Expr]]:
        """Expressions evaluated after the defines, with where they come from (with
        *steps*: that dataset's own cuts and label after the global cuts)."""
        out = [(f"preprocess.cuts[{i}]", e) for i, (_, e) in enumerate(self.cuts)]
        out += steps.late() if steps is not None else []
        out += [("preprocess.label", self.label)] if self.label else []
        out += [("preprocess.weight", self.weight)] if self.weight else []
        out += [(f"data.datasets[{n}].weight", e) for n, e in self._dataset_weights(steps)]
        return out + self.extras

    def _dataset_weights(self, steps: DatasetSteps | None) -> list[tuple[str, Expr]]:
        """Dataset weights under *steps*: its dataset's own; under the global steps, those
        of the datasets that have no steps of their own (the others may use their own
        defines); with None, all."""
        weights = self.dataset_weights.items()
        if steps is None:
            return list(weights)
        if steps.name:
            return [(n, e) for n, e in weights if n == steps.name]
        return [(n, e) for n, e in weights if not self.steps[n].own]

    def branches(self, available: Collection[str]) -> list[str]:
        """The branches to read, given the branch names of the tree.

        Raises ``ExpressionError`` (with a caret) for a name that is neither a branch nor
        an earlier define, and ``SpecError`` for a feature or identifier that is missing.
        """
        avail = set(available)
        needed: set[str] = set(self.identifiers)
        for where, e in (("preprocess.select." + c, e) for c, e in self.selects.items()):
            needed |= self._resolve(e, where, avail, set())
        known: set[str] = set()
        for steps in self._checked_steps():
            used, defined = self._needed(steps, avail)
            needed |= used
            known |= defined
        ids = [i for i in self.identifiers if i not in avail]
        missing = sorted(n for n in needed if n not in avail and n not in ids)
        problems = [self._missing_identifiers(ids, avail)] if ids else []
        if missing:
            pool = avail | known
            hints = "; ".join(f"{m!r} ({closest(m, pool)})" for m in missing)
            problems.append(
                f"features name columns that are neither branches nor defines: "
                f"{hints}. Fix preprocess.features or add a define"
            )
        if problems:
            raise SpecError("\n".join(problems))
        return sorted(needed)

    @property
    def own_cuts(self) -> dict[str, Sequence[tuple[str, Expr]]]:
        """The cuts of each dataset that has its own (``data.datasets[].cuts``), in order."""
        return {name: s.cuts for name, s in self.steps.items() if s.cuts}

    def _checked_steps(self) -> list[DatasetSteps]:
        """The distinct steps to check: the applied ones, or the global ones and each
        dataset's own (training)."""
        if self.purpose == "apply":
            return [self.applied]
        return [global_steps(self.defines), *(s for s in self.steps.values() if s.own)]

    def _needed(self, steps: DatasetSteps, avail: set[str]) -> tuple[set[str], set[str]]:
        """The input columns *steps* read (features included), and the names it defines."""
        needed: set[str] = set()
        known: set[str] = set()
        for name, e in steps.defines.items():
            needed |= self._resolve(e, self._where[id(e)], avail, known)
            known.add(name)
        for where, e in self._late_exprs(steps):
            needed |= self._resolve(e, where, avail, known)
        return needed | {c for c in self.feature_cols if c not in known}, known

    def _missing_identifiers(self, missing: list[str], avail: set[str]) -> str:
        """Why identifier branches are missing (the default is the usual cause) and the fix."""
        looks_like = sorted(n for n in avail if _EVENT_NUMBER.search(n))[:5]
        example = f"[{', '.join(looks_like)}]" if looks_like else "[run, event]"
        fix = (
            f"set data.identifiers to the branches that together identify each event of this "
            f"tree, e.g. 'identifiers: {example}' (the train/validation/test split hashes them)"
        )
        if looks_like:
            fix += "; branches that look like event numbers: " + ", ".join(map(repr, looks_like))
        if self.spec.data.identifiers == self.identifiers and (
            "identifiers" not in self.spec.data.model_fields_set
        ):
            default = ", ".join(self.identifiers)
            return (
                f"data.identifiers is not set, so the NanoAOD default [{default}] is used, but "
                f"this tree has no branch {', '.join(map(repr, missing))}: {fix}"
            )
        hints = "; ".join(f"{m!r} ({closest(m, avail)})" for m in missing)
        return f"data.identifiers names branches this tree does not have: {hints}; {fix}"

    def _resolve(self, e: Expr, where: str, avail: set[str], known: set[str]) -> set[str]:
        for name in sorted(e.names()):
            if name in avail or name in known:
                continue
            later = name in self.defines
            what = f"in {where}: unknown name {name!r}"
            hint = (
                f"{name!r} is defined later in preprocess.define; move it up"
                if later
                else closest(name, avail | known)
            )
            pos = next(n.pos for n in walk(e.root) if isinstance(n, Name) and n.id == name)
            raise error(e.text, pos, what, hint)
        return {n for n in e.names() if n not in known}

    # -- types ---------------------------------------------------------------------------

    def bind(self, columns: Mapping[str, Any]) -> None:
        """Type-check every expression against the column types of a first chunk."""
        types = {name: type_of_column(name, col) for name, col in columns.items()}
        self._layouts = {name: _layout_of(col) for name, col in columns.items()}
        for coll, e in self.selects.items():
            t = _checked(e, types, f"preprocess.select.{coll}")
            if t.kind != "object" or t.dtype != "bool":
                raise ExpressionError(
                    f"preprocess.select.{coll} must be a per-object condition on {coll}_* "
                    f"columns (e.g. {coll}_pt > 30), got {t}: {e.text!r}"
                )
        bound = [self._bind_steps(steps, dict(types)) for steps in self._checked_steps()]
        self.types = bound[0]

    def _bind_steps(self, steps: DatasetSteps, types: dict[str, Type]) -> dict[str, Type]:
        """Type-check *steps* on input column *types*; returns them with the defines'."""
        for name, e in steps.defines.items():
            types[name] = _checked(e, types, self._where[id(e)])
        cuts = {id(e) for _, e in (*self.cuts, *steps.cuts)}
        for where, e in self._late_exprs(steps):
            t = _checked(e, types, where)
            if t.kind == "object":
                hint = "reduce it with any(), all(), count(), sum(), first(), ..."
                raise ExpressionError(f"{where} must be one value per event, got {t}; {hint}")
            if id(e) in cuts and t.dtype != "bool":
                raise ExpressionError(f"{where} must be a condition, got {t}: {e.text!r}")
            if e is self.label or e is steps.label:
                check_label_type(e, t, self.labels, where)
        self._check_features(types)
        return types

    def learn_types(self, types: Mapping[str, str]) -> None:
        """Take the input types another copy of this program bound (a Dask worker's), when
        this one has bound none: the driver of a distributed pass never sees a chunk."""
        if not self._layouts:
            self._layouts = dict(types)

    def input_types(self) -> dict[str, str]:
        """Branch -> type (``"uint64"``, ``"var * float32"``) of every input column once
        bound (empty before)."""
        return dict(sorted(self._layouts.items()))

    def _check_features(self, types: Mapping[str, Type]) -> None:
        for name in self.spec.preprocess.features.scalars:
            if types[name].kind == "object":
                msg = (
                    f"preprocess.features.scalars: {name!r} is a per-object list; list it "
                    "under features.objects, or define a per-event value (sum(), first(), ...)"
                )
                raise SpecError(msg)
        for coll, obj in self.spec.preprocess.features.objects.items():
            for col in object_columns(coll, obj):
                if types[col].kind != "object":
                    msg = (
                        f"preprocess.features.objects.{coll}: {col!r} is {types[col]}, not a "
                        "per-object list; move it to features.scalars"
                    )
                    raise SpecError(msg)

    # -- running -------------------------------------------------------------------------

    def run(self, columns: Mapping[str, Any], dataset: DatasetSpec) -> ChunkResult:
        """Process one chunk of *dataset* (call ``bind`` once before)."""
        if self.types is None:
            self.bind(columns)
        n = len(next(iter(columns.values()))) if columns else 0
        env = {k: _event_or_object(v) for k, v in columns.items()}
        self._select(env)
        steps = self.steps.get(dataset.name) or global_steps(self.defines)
        nonfinite: dict[str, int] = {}
        for name, e in steps.defines.items():
            env[name] = _broadcast(self._eval(e, env), n)
            nonfinite[DEFINE_PREFIX + name] = _count_nonfinite(env[name])
        keep = np.ones(n, dtype=bool)
        passed = []
        for _, e in (*self.cuts, *steps.cuts):
            keep &= _broadcast(self._eval(e, env), n).astype(bool)
            passed.append(int(keep.sum()))
        # per-event columns are filtered here; object columns go whole to build_matrix,
        # which maps kept events itself (cheaper than slicing every jagged array)
        index = np.flatnonzero(keep)  # take() beats boolean indexing per column
        kept = {
            k: env[k] if isinstance(env[k], ak.Array) else np.asarray(env[k]).take(index)
            for k in self._after_cut_columns(steps)
        }
        m = int(keep.sum())
        X = build_matrix(kept, self.spec.preprocess.features, keep)
        y = self._targets(kept, dataset, m, steps.label or self.label)
        w = self._weights(kept, dataset, m)
        ids = [np.asarray(kept[i]) for i in self.spec.data.identifiers]
        split_spec = self.spec.preprocess.split
        split = (
            assign_split(
                ids, validation=split_spec.validation, test=split_spec.test, seed=split_spec.seed
            )
            if ids  # no identifiers (the spec then asks for no validation/test): all train
            else np.zeros(m, dtype=np.uint8)
        )
        # on every event, then the kept ones: kept object columns are not filtered yet
        extra = {e.text: np.asarray(_broadcast(self._eval(e, env), n), dtype=np.float64)[index]
                 for _, e in self.extras}  # fmt: skip
        result = self._finite(X, y, w, split, n, tuple(passed), nonfinite, extra)
        return dataclasses.replace(result, dataset=dataset.name)

    def apply(self, columns: Mapping[str, Any]) -> AppliedChunk:
        """Process one chunk for scoring: every event kept, with a pass mask (see module doc).

        Events with a NaN/inf feature fail too when ``preprocess.nonfinite`` is ``drop``
        (training dropped them); with ``error`` they raise ``DataQualityError``, as in
        training.
        """
        if self.types is None:
            self.bind(columns)
        n = len(next(iter(columns.values()))) if columns else 0
        ids = {i: np.asarray(_event_or_object(columns[i])) for i in self.identifiers}
        env = {k: _event_or_object(v) for k, v in columns.items()}
        self._select(env)
        for name, e in self.applied.defines.items():
            env[name] = _broadcast(self._eval(e, env), n)
        keep = np.ones(n, dtype=bool)
        for _, e in (*self.cuts, *self.applied.cuts):
            keep &= _broadcast(self._eval(e, env), n).astype(bool)
        index = np.flatnonzero(keep)
        kept = {
            k: env[k] if isinstance(env[k], ak.Array) else np.asarray(env[k]).take(index)
            for k in self.feature_cols
        }
        X = build_matrix(kept, self.spec.preprocess.features, keep)
        counts: dict[str, int] = {}
        bad = _nonfinite_rows(X, self.names, counts)
        if bad is not None:
            if self.spec.preprocess.nonfinite != "drop":
                msg = (
                    f"features {sorted(counts)} are NaN/inf for {int(bad.sum())} passing "
                    "event(s) and the model's spec says preprocess.nonfinite: error"
                )
                raise DataQualityError(msg)
            keep[index[bad]] = False
            X = X[~bad]
        return AppliedChunk(X, keep, ids)

    def _select(self, env: dict[str, Any]) -> None:
        for coll, e in self.selects.items():
            mask = self._eval(e, env)
            found = jagged.parts(mask)
            selection = jagged.Selection.from_mask(found) if found is not None else None
            prefix = coll + "_"
            for name in [k for k in env if k.startswith(prefix)]:
                if isinstance(env[name], ak.Array):
                    env[name] = jagged.apply_mask(env[name], mask, selection)
            if "n" + coll in env:  # keep the counter consistent with the selected objects
                counts = selection.counts() if selection else ak.to_numpy(ak.sum(mask, axis=1))
                env["n" + coll] = np.asarray(counts).astype(env["n" + coll].dtype)

    def _after_cut_columns(self, steps: DatasetSteps) -> set[str]:
        cols = set(self.feature_cols) | set(self.identifiers)
        for _, e in self._late_exprs(steps)[len(self.cuts) + len(steps.cuts) :]:
            cols |= e.names()
        return cols

    def _targets(
        self, env: Mapping[str, Any], dataset: DatasetSpec, n: int, label: Expr | None
    ) -> np.ndarray[Any, Any]:
        dtype = np.int64 if self.labels.task == "multiclass" else np.float32
        if label is None:
            return np.full(n, self.labels.targets[dataset.name], dtype=dtype)
        y = np.asarray(_broadcast(self._eval(label, env), n), dtype=np.float64)
        task, k = self.labels.task, self.labels.n_classes
        allowed = (0.0, 1.0) if task == "binary" else range(k) if task == "multiclass" else None
        if allowed is not None and len(y):
            bad = ~np.isin(y, np.asarray(allowed, dtype=np.float64))
            if bad.any():
                msg = (
                    f"{self._where[id(label)]} {label.text!r} gave {float(y[bad][0])!r} for "
                    f"a {task} task; it must give {list(allowed)!r} (fix the expression, or "
                    "set task / preprocess.classes)"
                )
                raise DataQualityError(msg)
        return y.astype(dtype)

    def _weights(
        self, env: Mapping[str, Any], dataset: DatasetSpec, n: int
    ) -> np.ndarray[Any, Any]:
        w = np.ones(n, dtype=np.float64)
        for e in (self.dataset_weights.get(dataset.name), self.weight):
            if e is not None:
                w = w * _broadcast(self._eval(e, env), n)
        return w.astype(np.float32)

    def _finite(
        self,
        X: np.ndarray[Any, Any],
        y: np.ndarray[Any, Any],
        w: np.ndarray[Any, Any],
        split: np.ndarray[Any, Any],
        n_in: int,
        passed: tuple[int, ...],
        nonfinite: dict[str, int],
        extra: dict[str, np.ndarray[Any, Any]],
    ) -> ChunkResult:
        bad_rows = _nonfinite_rows(X, self.names, nonfinite)
        nonfinite[LABEL] = int((~np.isfinite(y)).sum()) if y.dtype.kind == "f" else 0
        nonfinite[WEIGHT] = int((~np.isfinite(w)).sum())
        dropped = 0
        if self.spec.preprocess.nonfinite == "drop":
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


def _layout_of(column: Any) -> str:
    """The type of a column as awkward writes it, without the length (``var * float32``)."""
    if isinstance(column, np.ndarray):
        return str(column.dtype)
    return str(ak.type(column).content)


def _checked(e: Expr, types: Mapping[str, Type], where: str) -> Type:
    try:
        return check(e, types)
    except ExpressionError as exc:
        raise ExpressionError(f"in {where}: {exc}") from exc


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
