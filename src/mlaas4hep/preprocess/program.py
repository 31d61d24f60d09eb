"""A pipeline spec compiled into what runs on one chunk: select, define, cut, features.

``Program`` is pure: it parses every expression of the spec once and knows where each
comes from in the spec; it says which branches it needs (``preprocess.branches``),
type-checks against the column types of the data (``bind``; ``preprocess.binding``), and
turns one chunk of columns into a ``ChunkResult`` (features, targets, weights, split, cut
counts; ``preprocess.chunk``). It does no I/O; ``preprocess.pipeline`` streams the data
through it.

Order on a chunk: object selections (``select``, which also update the ``nC`` counter),
then ``define`` in order, then the ``cuts`` (an event is kept when it passes all), then
features, label, weight and split on the kept events. A dataset's own ``define``,
``cuts`` and ``label`` (``data.datasets[]``; ``preprocess.steps``) join these for its
chunks: its defines replace or follow the global ones, its cuts follow the global cuts.

Apply mode (``Program(spec, purpose="apply")``, for scoring any tree with a trained
model's preprocessing): the global steps only (or one dataset's, ``dataset=``); labels,
weights and the split are not evaluated nor read, and ``apply`` keeps entry alignment
(an ``AppliedChunk``: a pass mask over every event, see ``preprocess.chunk``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

from mlaas4hep.errors import ExpressionError
from mlaas4hep.preprocess.binding import check_types, layout_of
from mlaas4hep.preprocess.branches import needed_branches
from mlaas4hep.preprocess.chunk import (
    DEFINE_PREFIX,
    LABEL,
    WEIGHT,
    AppliedChunk,
    ChunkResult,
    apply_chunk,
    run_chunk,
)
from mlaas4hep.preprocess.evaluate import evaluate
from mlaas4hep.preprocess.expr import Expr, parse
from mlaas4hep.preprocess.features import feature_names, object_columns
from mlaas4hep.preprocess.labels import UNLABELLED, LabelPlan, plan_labels
from mlaas4hep.preprocess.reweight import plan_reweighting
from mlaas4hep.preprocess.steps import DatasetSteps, dataset_steps, global_steps, steps_for
from mlaas4hep.preprocess.typecheck import Type, type_of_column
from mlaas4hep.spec import DatasetSpec, PipelineSpec

# the chunk results and their non-finite count keys are imported from here too
__all__ = ["DEFINE_PREFIX", "LABEL", "WEIGHT", "AppliedChunk", "ChunkResult", "Program"]


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
        the global steps only). Raises ``ExpressionError`` for an expression that does
        not parse, ``SpecError`` for an unknown *dataset*."""
        self.spec = spec
        self.purpose = purpose
        self.identifiers = list(spec.data.identifiers if identifiers is None else identifiers)
        pre = spec.preprocess
        training = purpose == "train"  # applying needs no label, weight or split
        self.labels: LabelPlan = plan_labels(spec) if training else UNLABELLED
        self.names = feature_names(pre.features)
        self.selects = {c: _parse(t, f"preprocess.select.{c}") for c, t in pre.select.items()}
        self.defines = {n: _parse(t, f"preprocess.define.{n}") for n, t in pre.define.items()}
        self.cuts = [
            (c.name, _parse(c.expr, f"preprocess.cuts[{i}]")) for i, c in enumerate(pre.cut_list())
        ]
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

    # -- the expressions and where they come from -----------------------------------------

    def _all_exprs(self) -> list[tuple[str, Expr]]:
        out = [(f"preprocess.select.{c}", e) for c, e in self.selects.items()]
        out += [(f"preprocess.define.{n}", e) for n, e in self.defines.items()]
        return out + self.late_exprs()

    def where(self, e: Expr) -> str:
        """The spec field expression *e* comes from (``preprocess.cuts[0]``, ...)."""
        return self._where.get(id(e), "an expression")

    def evaluate(self, e: Expr, env: Mapping[str, Any]) -> Any:
        """Evaluate *e*; a failure names the spec field the expression comes from."""
        try:
            return evaluate(e, env)
        except ExpressionError as exc:
            raise ExpressionError(f"in {self.where(e)}: {exc}") from exc

    def late_exprs(self, steps: DatasetSteps | None = None) -> list[tuple[str, Expr]]:
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

    @property
    def own_cuts(self) -> dict[str, Sequence[tuple[str, Expr]]]:
        """The cuts of each dataset that has its own (``data.datasets[].cuts``), in order."""
        return {name: s.cuts for name, s in self.steps.items() if s.cuts}

    def steps_of(self, dataset: str) -> DatasetSteps:
        """The steps a training chunk of *dataset* goes through."""
        return self.steps.get(dataset) or global_steps(self.defines)

    def checked_steps(self) -> list[DatasetSteps]:
        """The distinct steps to check: the applied ones, or the global ones and each
        dataset's own (training)."""
        if self.purpose == "apply":
            return [self.applied]
        return [global_steps(self.defines), *(s for s in self.steps.values() if s.own)]

    # -- before reading: branches and types -----------------------------------------------

    def branches(self, available: Collection[str]) -> list[str]:
        """The branches to read, given the branch names of the tree
        (``preprocess.branches.needed_branches``)."""
        return needed_branches(self, available)

    def bind(self, columns: Mapping[str, Any]) -> None:
        """Type-check every expression against the column types of a first chunk."""
        types = {name: type_of_column(name, col) for name, col in columns.items()}
        self._layouts = {name: layout_of(col) for name, col in columns.items()}
        self.types = check_types(self, types)

    def learn_types(self, types: Mapping[str, str]) -> None:
        """Take the input types another copy of this program bound (a Dask worker's), when
        this one has bound none: the driver of a distributed pass never sees a chunk."""
        if not self._layouts:
            self._layouts = dict(types)

    def input_types(self) -> dict[str, str]:
        """Branch -> type (``"uint64"``, ``"var * float32"``) of every input column once
        bound (empty before)."""
        return dict(sorted(self._layouts.items()))

    # -- running -------------------------------------------------------------------------

    def run(self, columns: Mapping[str, Any], dataset: DatasetSpec) -> ChunkResult:
        """Process one chunk of *dataset* (``preprocess.chunk.run_chunk``)."""
        return run_chunk(self, columns, dataset)

    def apply(self, columns: Mapping[str, Any]) -> AppliedChunk:
        """Process one chunk for scoring, every event kept with a pass mask
        (``preprocess.chunk.apply_chunk``)."""
        return apply_chunk(self, columns)
