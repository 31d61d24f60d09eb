"""Histogram reweighting (``preprocess.reweight``): the plan, and the factors applied.

A reweighting multiplies the weight of each event of some classes by a factor that
depends on the bin of one or two variables, so that each class's weighted distribution
becomes the target: ``flat`` (constant density in the variables) or the distribution of a
reference class or dataset. The order of the weights an event gets::

    w  = data.datasets[].weight x preprocess.weight     (Program: the weight expressions)
    w *= reweighting factor, clipped to max_weight      (this module, from the first pass)
    w *= balance factor of the event's class            (class totals after reweighting)

The first pass fills the histograms with exactly the weights of the first line, on the
training split (``preprocess.reweight_hist``), merged exactly across chunks and Dask
partitions; its result is a JSON document (``FeatureInfo.reweight``, ``reweight.json`` in
the run) holding the histograms and the factor map of each reweighted class.
``Reweighter`` reads that document and gives each event its factor (every split).

A factor is ``(t_b / T) / (h_b / H)``: ``h`` the class's histogram, ``t`` the target's
(for ``flat``, the bin width, or area in 2D), ``H`` and ``T`` their sums over the bins, so
an unclipped reweighting keeps each class's total weight inside the binning. Events
outside the binning (under/overflow, NaN) and bins the class leaves empty (or negative)
keep factor 1; a factor above ``max_weight`` becomes ``max_weight``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlaas4hep.errors import SpecError, closest
from mlaas4hep.preprocess.expr import parse
from mlaas4hep.preprocess.labels import LabelPlan
from mlaas4hep.spec import PipelineSpec, ReweightSpec

REWEIGHT_FILE = "reweight.json"  # the run's artifact: histograms and factor maps
ORDER = (
    "weight expressions (data.datasets[].weight x preprocess.weight), then the reweighting "
    "factors (clipped to max_weight), then the balance class factors"
)
FLAT = "flat"
#: The most histogram bins all reweightings fill together (one histogram per reweighted
#: class and per non-flat target): 16 MB of ``hist`` Weight storage, and a bounded
#: ``reweight.json``; ``ReweightSpec`` alone bounds one histogram (100000 bins).
MAX_TOTAL_BINS = 1_000_000
_REGRESSION_GROUP = "events"  # a regression's only group: every event


@dataclass(frozen=True)
class Rule:
    """One reweighting, resolved against the spec's classes and datasets."""

    index: int
    variables: tuple[str, ...]  # expression texts (ChunkResult.columns keys)
    edges: tuple[tuple[float, ...], ...]
    target: str  # "flat", "class:NAME" or "dataset:NAME"
    target_class: int | None  # the target's class index (target class:NAME)
    classes: tuple[tuple[int, str], ...]  # (class index, name) of the reweighted classes
    max_weight: float

    @property
    def target_dataset(self) -> str | None:
        return self.target.removeprefix("dataset:") if self.target.startswith("dataset:") else None


@dataclass(frozen=True)
class ReweightPlan:
    """Every reweighting of a spec, and how an event's class (group) is found."""

    rules: tuple[Rule, ...]
    regression: bool

    def groups(self, y: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """The class index of each event (0 for every event of a regression)."""
        if self.regression:
            return np.zeros(len(y), dtype=np.int64)
        return np.asarray(y).astype(np.int64)


def plan_reweighting(spec: PipelineSpec, labels: LabelPlan) -> ReweightPlan:
    """Resolve ``preprocess.reweight`` against the classes and datasets of *spec*.

    Raises:
        SpecError: an unknown target or class (with the choices), a class reweighted to
            itself or by two reweightings, or classes named for a regression.
    """
    regression = labels.task == "regression"
    names = (_REGRESSION_GROUP,) if regression else labels.class_names
    datasets = [d.name for d in spec.data.datasets]
    rules = tuple(
        _rule(i, r, names, datasets, regression) for i, r in enumerate(spec.preprocess.reweight)
    )
    seen: dict[str, int] = {}
    for rule in rules:
        for _, name in rule.classes:
            if name in seen:
                msg = (
                    f"preprocess.reweight[{rule.index}]: class {name!r} is already reweighted "
                    f"by preprocess.reweight[{seen[name]}]; reweight a class once (use one "
                    "2D reweighting for two variables)"
                )
                raise SpecError(msg)
            seen[name] = rule.index
    _check_size(rules)
    return ReweightPlan(rules, regression)


def _check_size(rules: Sequence[Rule]) -> None:
    """Refuse reweightings whose histograms hold more than ``MAX_TOTAL_BINS`` bins."""
    total = 0
    for rule in rules:
        bins = int(np.prod([len(e) - 1 for e in rule.edges]))
        total += bins * (len(rule.classes) + (rule.target != FLAT))
    if total > MAX_TOTAL_BINS:
        msg = (
            f"preprocess.reweight fills {total} histogram bins in all (bins x (reweighted "
            f"classes + a class or dataset target)); the limit is {MAX_TOTAL_BINS}: use "
            "fewer bins, or reweight fewer classes"
        )
        raise SpecError(msg)


def _rule(
    i: int, r: ReweightSpec, names: Sequence[str], datasets: Sequence[str], regression: bool
) -> Rule:
    where = f"preprocess.reweight[{i}]"
    target, target_class = FLAT, None
    if r.target != FLAT:
        if r.target in names and not regression:
            target, target_class = f"class:{r.target}", names.index(r.target)
        elif r.target in datasets:
            target = f"dataset:{r.target}"
        else:
            choices = list(dict.fromkeys([FLAT, *([] if regression else names), *datasets]))
            msg = (
                f"{where}.target {r.target!r} is neither 'flat' nor a class or dataset; "
                f"choices: {choices!r} ({closest(r.target, choices)})"
            )
            raise SpecError(msg)
    if regression and r.classes is not None:
        msg = f"{where}.classes: a regression has no classes; remove it (every event is reweighted)"
        raise SpecError(msg)
    chosen = r.classes if r.classes is not None else [n for n in names if n != r.target]
    for name in chosen:
        if name not in names:
            msg = (
                f"{where}.classes: {name!r} is not a class; classes: {list(names)!r} "
                f"({closest(name, names)})"
            )
            raise SpecError(msg)
        if name == r.target:
            msg = f"{where}: class {name!r} is the target itself; remove it from classes"
            raise SpecError(msg)
    return Rule(
        index=i,
        variables=tuple(a.expr for a in r.variables),
        edges=tuple(tuple(a.bin_edges()) for a in r.variables),
        target=target,
        target_class=target_class,
        classes=tuple((names.index(n), n) for n in dict.fromkeys(chosen)),
        max_weight=r.max_weight,
    )


def check_variable_names(spec: PipelineSpec, branches: Sequence[str] | set[str]) -> None:
    """Every name in a reweighting variable is a branch or a define (global or of a
    dataset: the program checks that each dataset has it).

    Raises:
        SpecError: naming the reweighting, the variable and the closest names.
    """
    known = set(branches) | set(spec.preprocess.define)
    known.update(*(d.define for d in spec.data.datasets))
    for i, r in enumerate(spec.preprocess.reweight):
        for j, axis in enumerate(r.variables):
            unknown = sorted(parse(axis.expr).names() - known)
            if unknown:
                hints = "; ".join(f"{n!r} ({closest(n, known)})" for n in unknown)
                msg = (
                    f"preprocess.reweight[{i}].variables[{j}] {axis.expr!r} uses names that "
                    f"are neither branches nor defines: {hints}. Fix the variable or add a define"
                )
                raise SpecError(msg)


class Reweighter:
    """The factors of a finished first pass (its ``FeatureInfo.reweight`` document)."""

    def __init__(self, plan: ReweightPlan, document: Mapping[str, Any]) -> None:
        self.plan = plan
        self._maps: list[list[tuple[int, np.ndarray[Any, Any]]]] = []
        self._edges: list[list[np.ndarray[Any, Any]]] = []
        for rule, doc in zip(plan.rules, document.get("rules", ()), strict=True):
            self._edges.append([np.asarray(e, dtype=np.float64) for e in rule.edges])
            maps = [(k, np.asarray(doc["classes"][n]["factors"])) for k, n in rule.classes]
            self._maps.append(maps)

    def factors(
        self, columns: Mapping[str, np.ndarray[Any, Any]], y: np.ndarray[Any, Any]
    ) -> np.ndarray[Any, Any]:
        """The factor of each event (1 for classes no reweighting names), float64."""
        out = np.ones(len(y), dtype=np.float64)
        groups = self.plan.groups(y)
        for rule, edges, maps in zip(self.plan.rules, self._edges, self._maps, strict=True):
            index, inside = bin_index([columns[v] for v in rule.variables], edges)
            for k, factors in maps:
                sel = inside & (groups == k)
                out[sel] *= factors[tuple(i[sel] for i in index)]
        return out


def bin_index(
    values: Sequence[np.ndarray[Any, Any]], edges: Sequence[np.ndarray[Any, Any]]
) -> tuple[list[np.ndarray[Any, Any]], np.ndarray[Any, Any]]:
    """Bin of each event on each axis (bins ``[lo, hi)``, as ``hist`` fills), and whether
    it is inside every axis (NaN and values beyond the last edge are outside)."""
    index, inside = [], np.ones(len(values[0]) if values else 0, dtype=bool)
    for x, e in zip(values, edges, strict=True):
        i = np.searchsorted(e, np.asarray(x, dtype=np.float64), side="right") - 1
        inside &= (i >= 0) & (i < len(e) - 1)
        index.append(np.clip(i, 0, len(e) - 2))
    return index, inside


def class_totals(
    class_w: np.ndarray[Any, Any], document: Mapping[str, Any]
) -> np.ndarray[Any, Any]:
    """The training weight of each class after reweighting (what ``balance`` equalises)."""
    out = np.array(class_w, dtype=np.float64)
    for doc in document.get("rules", ()):
        for entry in doc["classes"].values():
            k = int(entry["index"])
            if k < len(out):
                out[k] = float(entry["total_after"])
    return out
