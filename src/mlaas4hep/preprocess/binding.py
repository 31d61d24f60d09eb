"""The static checks of a compiled ``Program`` against the column types of the data.

Run once on a first chunk (``Program.bind``): every expression type-checks, selections
are per-object conditions, cuts are per-event conditions, the label suits the task, and
each feature is the kind (per event or per object) the spec lists it as.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import awkward as ak
import numpy as np

from mlaas4hep.errors import ExpressionError, SpecError
from mlaas4hep.preprocess.expr import Expr
from mlaas4hep.preprocess.features import object_columns
from mlaas4hep.preprocess.labels import check_label_type
from mlaas4hep.preprocess.steps import DatasetSteps
from mlaas4hep.preprocess.typecheck import Type, check
from mlaas4hep.spec import FeaturesSpec

if TYPE_CHECKING:
    from mlaas4hep.preprocess.program import Program


def check_types(program: Program, types: Mapping[str, Type]) -> dict[str, Type]:
    """Type-check *program* on input column *types*; returns them with the defines' of
    the first steps checked (the applied ones, or the global ones in training).

    Raises ``ExpressionError`` (with the spec field) or ``SpecError`` for features.
    """
    for coll, e in program.selects.items():
        t = _checked(e, types, f"preprocess.select.{coll}")
        if t.kind != "object" or t.dtype != "bool":
            raise ExpressionError(
                f"preprocess.select.{coll} must be a per-object condition on {coll}_* "
                f"columns (e.g. {coll}_pt > 30), got {t}: {e.text!r}"
            )
    bound = [_check_steps(program, steps, dict(types)) for steps in program.checked_steps()]
    return bound[0]


def layout_of(column: Any) -> str:
    """The type of a column as awkward writes it, without the length (``var * float32``)."""
    if isinstance(column, np.ndarray):
        return str(column.dtype)
    return str(ak.type(column).content)


def _check_steps(program: Program, steps: DatasetSteps, types: dict[str, Type]) -> dict[str, Type]:
    """Type-check *steps* on input column *types*; returns them with the defines'."""
    for name, e in steps.defines.items():
        types[name] = _checked(e, types, program.where(e))
    cuts = {id(e) for _, e in (*program.cuts, *steps.cuts)}
    for where, e in program.late_exprs(steps):
        t = _checked(e, types, where)
        if t.kind == "object":
            hint = "reduce it with any(), all(), count(), sum(), first(), ..."
            raise ExpressionError(f"{where} must be one value per event, got {t}; {hint}")
        if id(e) in cuts and t.dtype != "bool":
            raise ExpressionError(f"{where} must be a condition, got {t}: {e.text!r}")
        if e is program.label or e is steps.label:
            check_label_type(e, t, program.labels, where)
    _check_features(program.spec.preprocess.features, types)
    return types


def _check_features(features: FeaturesSpec, types: Mapping[str, Type]) -> None:
    """Scalars are per-event columns and object fields per-object ones."""
    for name in features.scalars:
        if types[name].kind == "object":
            msg = (
                f"preprocess.features.scalars: {name!r} is a per-object list; list it "
                "under features.objects, or define a per-event value (sum(), first(), ...)"
            )
            raise SpecError(msg)
    for coll, obj in features.objects.items():
        for col in object_columns(coll, obj):
            if types[col].kind != "object":
                msg = (
                    f"preprocess.features.objects.{coll}: {col!r} is {types[col]}, not a "
                    "per-object list; move it to features.scalars"
                )
                raise SpecError(msg)


def _checked(e: Expr, types: Mapping[str, Type], where: str) -> Type:
    try:
        return check(e, types)
    except ExpressionError as exc:
        raise ExpressionError(f"in {where}: {exc}") from exc
