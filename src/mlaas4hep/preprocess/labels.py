"""Which learning task a spec describes, and the target value of each dataset.

Labels come from the datasets (``data.datasets[].label``) or from an expression
(``preprocess.label``). With ``task: auto``: dataset labels 0/1 mean ``binary``, other
integer labels ``multiclass`` (class index = rank of the label value), non-integer labels
and label expressions ``regression``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mlaas4hep.errors import SpecError
from mlaas4hep.spec import PipelineSpec

Task = Literal["binary", "multiclass", "regression"]


@dataclass(frozen=True)
class LabelPlan:
    """The resolved task; ``targets`` maps dataset name -> target (absent with an expression)."""

    task: Task
    n_classes: int
    class_names: tuple[str, ...]
    targets: dict[str, float] = field(default_factory=dict)


def plan_labels(spec: PipelineSpec) -> LabelPlan:
    """Resolve task, classes and per-dataset targets; raises ``SpecError`` when ambiguous."""
    pre = spec.preprocess
    if pre.label is not None:
        return _from_expression(spec)
    datasets = spec.data.datasets
    missing = [d.name for d in datasets if d.label is None]
    if missing and pre.task == "multiclass" and len(missing) == len(datasets):
        names = tuple(d.name for d in datasets)  # one class per dataset, in order
        return LabelPlan(
            "multiclass", len(names), names, {n: float(i) for i, n in enumerate(names)}
        )
    if missing:
        msg = (
            f"data.datasets {missing!r} have no label: give every dataset a label "
            "(e.g. 1 signal, 0 background), or set preprocess.label to an expression, or "
            "set preprocess.task: multiclass (one class per dataset)"
        )
        raise SpecError(msg)
    labels = {d.name: float(d.label) for d in datasets if d.label is not None}
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
            f"{sorted(labels.items())!r}: add a dataset with another label"
        )
        raise SpecError(msg)
    if task == "binary":
        return LabelPlan("binary", 1, names, labels)
    index = {v: float(i) for i, v in enumerate(values)}
    return LabelPlan("multiclass", len(values), names, {n: index[v] for n, v in labels.items()})


def _from_expression(spec: PipelineSpec) -> LabelPlan:
    pre = spec.preprocess
    if pre.task == "multiclass":
        if not pre.classes or len(pre.classes) < 2:
            msg = (
                "preprocess.label with task multiclass needs preprocess.classes: the class "
                "names, in the order of the integer values 0, 1, ... the label expression gives"
            )
            raise SpecError(msg)
        return LabelPlan("multiclass", len(pre.classes), tuple(pre.classes))
    if pre.task == "binary":
        return LabelPlan("binary", 1, tuple(pre.classes or ("0", "1")))
    return LabelPlan("regression", 1, ())
