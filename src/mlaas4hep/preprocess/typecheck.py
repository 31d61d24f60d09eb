"""Static types of expressions: what a value is, checked before any data is touched.

Values have a *kind* and a *dtype*:

- kind ``const`` (a literal), ``event`` (one value per event: a 1-D numpy array) or
  ``object`` (a list per event: an awkward ``var`` array, e.g. ``Jet_pt``);
- dtype ``bool``, ``int`` or ``float``.

``check`` infers the type of every node from the column types and rejects type errors
(a per-object value where a per-event one is needed, arithmetic on conditions, ``&`` on
numbers, a non-constant default) with a caret under the offending node.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import awkward as ak
import numpy as np

from mlaas4hep.errors import ExpressionError, closest
from mlaas4hep.preprocess.expr import Binary, Call, Compare, Expr, Mask, Node, Num, Unary, error

Kind = Literal["const", "event", "object"]
DType = Literal["bool", "int", "float"]

_RANK = {"const": 0, "event": 1, "object": 2}


@dataclass(frozen=True)
class Type:
    """The static type of a value: how many values per event, and of which dtype."""

    kind: Kind
    dtype: DType

    def __str__(self) -> str:
        where = {"const": "constant", "event": "per-event", "object": "per-object"}[self.kind]
        return f"{where} {self.dtype}"


def type_of_column(name: str, column: Any) -> Type:
    """The ``Type`` of a data column (numpy 1-D or awkward flat/jagged array)."""
    if isinstance(column, np.ndarray) and column.ndim == 1:
        return Type("event", _dtype_kind(name, column.dtype))
    layout = ak.to_layout(column)
    kind: Kind = "event"
    is_text = layout.parameter("__array__") in ("string", "bytestring")
    if layout.is_list and not is_text:
        kind = "object"
        layout = layout.content
    if layout.is_option or layout.is_indexed:
        layout = layout.content
    if is_text or not layout.is_numpy or len(layout.inner_shape) != 0:
        msg = (
            f"column {name!r} has type {ak.type(column)!s}, which expressions cannot use: "
            "only per-event numbers and lists of numbers (one level) are supported"
        )
        raise ExpressionError(msg)
    return Type(kind, _dtype_kind(name, layout.dtype))


def _dtype_kind(name: str, dtype: np.dtype[Any]) -> DType:
    if dtype == np.bool_:
        return "bool"
    if np.issubdtype(dtype, np.integer):
        return "int"
    if np.issubdtype(dtype, np.floating):
        return "float"
    raise ExpressionError(f"column {name!r} has dtype {dtype}, which expressions cannot use")


# ---------------------------------------------------------------------------------------
# type checking


def check(expr: Expr, types: Mapping[str, Type]) -> Type:
    """Infer the result type of *expr* given the column *types*; raise on type errors."""
    return _Checker(expr.text, types).visit(expr.root)


class _Checker:
    def __init__(self, text: str, types: Mapping[str, Type]) -> None:
        self.text = text
        self.types = types

    def fail(self, node: Node, what: str, hint: str = "") -> ExpressionError:
        return error(self.text, node.pos, what, hint)

    def visit(self, node: Node) -> Type:
        if isinstance(node, Num):
            dtype: DType = "bool" if isinstance(node.value, bool) else "int"
            return Type("const", "float" if isinstance(node.value, float) else dtype)
        if isinstance(node, Unary):
            return self.unary(node)
        if isinstance(node, Binary):
            return self.binary(node)
        if isinstance(node, Compare):
            types = [self.numeric(o, "comparison") for o in node.operands]
            return Type(_widest(*types), "bool")
        if isinstance(node, Mask):
            return self.mask(node)
        if isinstance(node, Call):
            return self.call(node)
        name = getattr(node, "id", "")
        if name not in self.types:
            raise self.fail(node, f"unknown name {name!r}", closest(name, self.types))
        return self.types[name]

    def numeric(self, node: Node, context: str) -> Type:
        t = self.visit(node)
        if t.dtype == "bool" and context != "comparison":
            hint = "use where(cond, 1, 0) or count()/sum() to turn a condition into numbers"
            raise self.fail(node, f"{context} needs numbers, got a condition ({t})", hint)
        return t

    def boolean(self, node: Node, context: str) -> Type:
        t = self.visit(node)
        if t.dtype != "bool":
            hint = "'&', '|', '~' combine conditions such as (x > 1); compare numbers first"
            raise self.fail(node, f"{context} needs a condition, got {t}", hint)
        return t

    def unary(self, node: Unary) -> Type:
        if node.op == "~":
            return self.boolean(node.operand, "'not'")
        return self.numeric(node.operand, f"unary {node.op!r}")

    def binary(self, node: Binary) -> Type:
        if node.op in ("&", "|"):
            a, b = self.boolean(node.left, repr(node.op)), self.boolean(node.right, repr(node.op))
            return Type(_widest(a, b), "bool")
        a, b = self.numeric(node.left, repr(node.op)), self.numeric(node.right, repr(node.op))
        dtype: DType = "int" if a.dtype == b.dtype == "int" and node.op in "+-*" else "float"
        return Type(_widest(a, b), dtype)

    def mask(self, node: Mask) -> Type:
        base, mask = self.visit(node.base), self.visit(node.mask)
        if base.kind != "object":
            raise self.fail(node, f"only per-object lists can be masked with [...], got {base}")
        if mask.kind != "object" or mask.dtype != "bool":
            hint = "e.g. Jet_pt[Jet_pt > 30]; use first()/nth() to pick one object"
            raise self.fail(node.mask, f"a mask must be a per-object condition, got {mask}", hint)
        return base

    def call(self, node: Call) -> Type:
        spec = _FUNCTION_TYPES.get(node.func)
        if spec is None:  # the parser already rejects unknown names; keep the check here too
            raise self.fail(node, f"unknown function {node.func!r}")
        return spec(self, node)


def _widest(*types: Type) -> Kind:
    kinds = [t.kind for t in types]
    return max(kinds, key=lambda k: _RANK[k])


def _math(result: DType | None) -> Callable[[_Checker, Call], Type]:
    """Element-wise function: numeric args, result kind is the widest of the args."""

    def rule(c: _Checker, node: Call) -> Type:
        types = [c.numeric(a, f"{node.func}()") for a in node.args]
        dtype: DType = result or ("int" if all(t.dtype == "int" for t in types) else "float")
        return Type(_widest(*types), dtype)

    return rule


def _where(c: _Checker, node: Call) -> Type:
    cond = c.boolean(node.args[0], "where()'s first argument")
    a, b = (c.visit(x) for x in node.args[1:])
    dtype: DType = a.dtype if a.dtype == b.dtype else "float"
    if "bool" in (a.dtype, b.dtype) and a.dtype != b.dtype:
        raise c.fail(node, "where(cond, a, b) needs a and b both conditions or both numbers")
    return Type(_widest(cond, a, b), dtype)


def _reduce(result: DType | None, *, boolean: bool = False) -> Callable[[_Checker, Call], Type]:
    """Per-object -> per-event reduction (sum, min, count, any, ...)."""

    def rule(c: _Checker, node: Call) -> Type:
        t = c.visit(node.args[0])
        if t.kind != "object":
            hint = f"{node.func}() reduces a per-object list (e.g. Jet_pt) to one value per event"
            raise c.fail(node.args[0], f"{node.func}() needs a per-object list, got {t}", hint)
        if boolean and t.dtype != "bool":
            raise c.fail(node.args[0], f"{node.func}() needs per-object conditions, got {t}")
        if not boolean and node.func not in ("count", "sum") and t.dtype == "bool":
            raise c.fail(node.args[0], f"{node.func}() needs numbers, got {t}")
        for extra in node.args[1:]:
            _constant(c, extra, node.func)
        dtype: DType = result or ("int" if t.dtype in ("int", "bool") else "float")
        return Type("event", dtype)

    return rule


def _constant(c: _Checker, node: Node, func: str) -> float:
    value = _literal(node)
    if value is None:
        hint = "defaults and positions must be literal numbers, e.g. first(Jet_pt, -1)"
        raise c.fail(node, f"{func}() needs a constant number here", hint)
    return value


def _literal(node: Node) -> float | None:
    if isinstance(node, Num) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, Unary) and node.op in "+-" and isinstance(node.operand, Num):
        inner = _literal(node.operand)
        return None if inner is None else (-inner if node.op == "-" else inner)
    return None


def _nth(c: _Checker, node: Call) -> Type:
    n = _constant(c, node.args[1], "nth")
    if n != int(n) or not 0 <= n <= 10_000:
        raise c.fail(node.args[1], f"nth() position must be an integer 0..10000, got {n!r}")
    _reduce("float")(c, Call(node.pos, "nth", (node.args[0], node.args[2])))
    return Type("event", "float")


def _sort_by(c: _Checker, node: Call) -> Type:
    values, key = c.visit(node.args[0]), c.numeric(node.args[1], "sort_by() key")
    if values.kind != "object" or key.kind != "object":
        raise c.fail(node, "sort_by(values, key) needs two per-object lists")
    if len(node.args) == 3 and not (
        isinstance(node.args[2], Num) and isinstance(node.args[2].value, bool)
    ):
        raise c.fail(node.args[2], "sort_by()'s third argument is True (ascending) or False")
    return values


_FUNCTION_TYPES: dict[str, Callable[[_Checker, Call], Type]] = {
    **{f: _math("float") for f in ("sqrt", "log", "exp", "sin", "cos", "tan")},
    **{f: _math("float") for f in ("sinh", "cosh", "tanh", "arctan2")},
    **{f: _math(None) for f in ("abs", "minimum", "maximum", "clip")},
    "isfinite": _math("bool"),
    "where": _where,
    "count": _reduce("int"),
    "sum": _reduce(None),
    "min": _reduce("float"),
    "max": _reduce("float"),
    "mean": _reduce("float"),
    "any": _reduce("bool", boolean=True),
    "all": _reduce("bool", boolean=True),
    "first": _reduce("float"),
    "nth": _nth,
    "sort_by": _sort_by,
}
