"""Which learning task a spec describes, and the target of each dataset's events.

An event's label comes from, in this order: ``preprocess.label`` (one expression for every
event; numeric dataset labels are then ignored), else its dataset's ``label`` (a number, or
an expression evaluated on its events) or ``class`` (a name from ``preprocess.classes``).

* With ``preprocess.classes`` (or any ``datasets[].class``) the task is classification over
  those classes, in that order: a class name gives its index, a numeric label is the class
  index itself, an expression must give 0..n-1. ``task: auto`` is ``binary`` for two
  classes, ``multiclass`` for more.
* Without: numeric dataset labels 0/1 mean ``binary``, other integers ``multiclass`` (class
  index = rank of the label value), non-integers ``regression``; with a label expression,
  ``task: auto`` means ``regression`` (``task: binary`` for an expression giving 0/1).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from mlaas4hep.errors import SpecError
from mlaas4hep.preprocess.expr import Expr, error
from mlaas4hep.preprocess.typecheck import Type
from mlaas4hep.spec import PipelineSpec

Task = Literal["binary", "multiclass", "regression"]


@dataclass(frozen=True)
class LabelPlan:
    """The resolved task; ``targets``: dataset name -> constant target (the datasets
    labelled by a number or a class; those labelled by an expression are absent)."""

    task: Task
    n_classes: int
    class_names: tuple[str, ...]
    targets: dict[str, float] = field(default_factory=dict)

    @property
    def classification(self) -> bool:
        return self.task != "regression"


def plan_labels(spec: PipelineSpec) -> LabelPlan:
    """Resolve task, classes and per-dataset targets; raises ``SpecError`` when ambiguous."""
    pre = spec.preprocess
    if pre.label is not None:
        return _from_expression(spec)
    datasets = spec.data.datasets
    if pre.classes or any(d.class_ is not None for d in datasets):
        return _named_classes(spec)
    missing = [d.name for d in datasets if d.label is None]
    if missing and pre.task == "multiclass" and len(missing) == len(datasets):
        names = tuple(d.name for d in datasets)  # one class per dataset, in order
        return LabelPlan(
            "multiclass", len(names), names, {n: float(i) for i, n in enumerate(names)}
        )
    if missing:
        msg = (
            f"data.datasets {missing!r} have no label: give every dataset a label (a number, "
            "e.g. 1 signal, 0 background, or a label expression such as 'nMuon >= 1'), or "
            "set preprocess.label, or set preprocess.task: multiclass (one class per dataset)"
        )
        raise SpecError(msg)
    if any(isinstance(d.label, str) for d in datasets):
        return _with_expressions(spec)
    labels = {d.name: float(d.label) for d in datasets if isinstance(d.label, int | float)}
    values = sorted(set(labels.values()))
    integral = all(v == int(v) for v in values)
    task = pre.task
    if task == "auto":
        task = "binary" if set(values) <= {0.0, 1.0} else "multiclass" if integral else "regression"
    if task == "regression":
        return LabelPlan("regression", 1, (), labels)
    return _classes(task, labels, values, integral)


def _classes(
    task: Task, labels: dict[str, float], values: list[float], integral: bool
) -> LabelPlan:
    if not integral or (task == "binary" and not set(values) <= {0.0, 1.0}):
        msg = (
            f"{task} classification needs integer dataset labels"
            f"{' 0 and 1' if task == 'binary' else ''}; got {sorted(labels.items())!r}"
        )
        raise SpecError(msg)
    if task == "binary":
        values = [0.0, 1.0]
    names = tuple("+".join(n for n, v in labels.items() if v == value) for value in values)
    if len(values) < 2 or not all(names):
        msg = (
            f"{task} classification needs datasets of at least two classes; labels are "
            f"{sorted(labels.items())!r}: add a dataset with another label, or give a label "
            "expression (e.g. label: 'nMuon >= 1' with task: binary)"
        )
        raise SpecError(msg)
    if task == "binary":
        return LabelPlan("binary", 1, names, labels)
    index = {v: float(i) for i, v in enumerate(values)}
    return LabelPlan("multiclass", len(values), names, {n: index[v] for n, v in labels.items()})


def _from_expression(spec: PipelineSpec) -> LabelPlan:
    pre = spec.preprocess
    if pre.classes and pre.task in ("auto", "binary", "multiclass"):
        return _classification(pre.task, pre.classes, {}, "preprocess.label")
    if pre.task == "multiclass":
        msg = (
            "preprocess.label with task multiclass needs preprocess.classes: the class "
            "names, in the order of the integer values 0, 1, ... the label expression gives"
        )
        raise SpecError(msg)
    if pre.task == "binary":
        return LabelPlan("binary", 1, ("0", "1"))
    return LabelPlan("regression", 1, ())


def _named_classes(spec: PipelineSpec) -> LabelPlan:
    """Classification over ``preprocess.classes``: classes, class indices or expressions."""
    classes = spec.preprocess.classes or []  # the spec rejects a class without classes
    missing = [d.name for d in spec.data.datasets if d.label is None and d.class_ is None]
    if missing:
        msg = (
            f"data.datasets {missing!r} have no label: give each a class (one of "
            f"{classes!r}), a class index, or a label expression giving 0..{len(classes) - 1}"
        )
        raise SpecError(msg)
    targets: dict[str, float] = {}
    index = {c: i for i, c in reversed(list(enumerate(classes)))}  # the first of each name
    for i, d in enumerate(spec.data.datasets):
        if d.class_ is not None:
            targets[d.name] = float(index[d.class_])
        elif isinstance(d.label, int | float):
            if d.label != int(d.label) or not 0 <= d.label < len(classes):
                msg = (
                    f"data.datasets[{i}] ({d.name!r}).label {d.label!r} is not a class index "
                    f"0..{len(classes) - 1} of preprocess.classes {classes!r}; use "
                    "'class: NAME' instead"
                )
                raise SpecError(msg)
            targets[d.name] = float(d.label)
    expressions = any(isinstance(d.label, str) for d in spec.data.datasets)
    used = set(targets.values())
    unused = [c for i, c in enumerate(classes) if float(i) not in used]
    if unused and not expressions:
        msg = (
            f"preprocess.classes {_few(unused)} have no dataset: name them in a dataset's "
            "'class', or remove them from preprocess.classes"
        )
        raise SpecError(msg)
    return _classification(spec.preprocess.task, classes, targets, "preprocess.classes")


def _classification(
    task: str, classes: list[str], targets: dict[str, float], where: str
) -> LabelPlan:
    k = len(classes)
    dup = sorted(c for c, n in Counter(classes).items() if n > 1)  # linear: k may be large
    if k < 2 or dup:
        problem = f"repeats {_few(dup)}" if dup else "has fewer than two classes"
        msg = f"preprocess.classes {_few(classes)} {problem}: list each class once, at least two"
        raise SpecError(msg)
    if task == "regression":
        msg = (
            f"task regression with classes ({where}): a regression has no classes; remove "
            "preprocess.classes and datasets[].class, or set task: auto"
        )
        raise SpecError(msg)
    if task == "binary" and k != 2:
        msg = f"task binary needs exactly two preprocess.classes, got {_few(classes)}"
        raise SpecError(msg)
    if task == "binary" or (task == "auto" and k == 2):
        return LabelPlan("binary", 1, tuple(classes), targets)
    return LabelPlan("multiclass", k, tuple(classes), targets)


def _with_expressions(spec: PipelineSpec) -> LabelPlan:
    """Datasets labelled by numbers and by expressions, without class names."""
    pre = spec.preprocess
    numbers = {
        d.name: float(d.label) for d in spec.data.datasets if isinstance(d.label, int | float)
    }
    if pre.task == "multiclass":
        msg = (
            "a multiclass task with label expressions in data.datasets needs "
            "preprocess.classes: the class names, in the order of the values 0, 1, ... the "
            "expressions give"
        )
        raise SpecError(msg)
    if pre.task == "binary":
        bad = {n: v for n, v in numbers.items() if v not in (0.0, 1.0)}
        if bad:
            msg = f"a binary task needs dataset labels 0 or 1, got {sorted(bad.items())!r}"
            raise SpecError(msg)
        return LabelPlan("binary", 1, ("0", "1"), numbers)
    return LabelPlan("regression", 1, (), numbers)


def _few(names: list[str], shown: int = 10) -> str:
    """*names* for a message: the first *shown* of them, and how many more."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{names[:shown]!r}{more}"


#: What ``apply`` plans: no labels at all (scoring needs none).
UNLABELLED = LabelPlan("regression", 1, ())


def check_label_type(expr: Expr, t: Type, plan: LabelPlan, where: str) -> None:
    """A classification label expression must be integer-valued: a condition (0/1) or an
    integer expression (a class index); ``ExpressionError`` with a caret otherwise."""
    if not plan.classification or t.dtype in ("bool", "int"):
        return
    want = "a condition (0/1)" if plan.task == "binary" else "a class index 0..n-1"
    example = "nMuon >= 1" if plan.task == "binary" else "where(nMuon >= 2, 2, nMuon)"
    what = (
        f"in {where}: a {plan.task} label must be integer-valued ({want}), but this "
        f"expression gives {t}"
    )
    hint = f"compare or use integer values, e.g. {example!r}; or set task: regression"
    raise error(expr.text, expr.root.pos, what, hint)
