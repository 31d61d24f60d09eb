"""Evaluate checked expressions, vectorised over numpy/awkward columns.

Whole columns go through numpy ufuncs: lists sharing one layout are computed on their
flat content (``preprocess.jagged``), other layouts through awkward's ufunc dispatch —
never a Python loop over events. Call ``typecheck.check`` first: types are trusted here.
Division by zero gives inf/nan (numpy semantics); callers count them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import awkward as ak
import numpy as np

from mlaas4hep.errors import ExpressionError
from mlaas4hep.preprocess import jagged
from mlaas4hep.preprocess.expr import (
    Binary,
    Call,
    Compare,
    Expr,
    Mask,
    Node,
    Num,
    Unary,
    error,
)
from mlaas4hep.preprocess.typecheck import type_of_column

Value = Any  # python scalar | np.ndarray (1-D) | ak.Array (n * var * dtype)


def evaluate(expr: Expr, columns: Mapping[str, Value]) -> Value:
    """Evaluate *expr* over *columns* (call ``check`` first: types are trusted here).

    Returns a python scalar, a 1-D numpy array or an awkward jagged array. Floating point
    errors (x/0, log(-1)) produce inf/nan silently; the caller counts non-finite values.
    """
    with np.errstate(all="ignore"):
        return _Evaluator(expr.text, columns).visit(expr.root)


_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.true_divide,
    "//": np.floor_divide,
    "%": np.mod,
    "**": np.power,
    "&": np.logical_and,
    "|": np.logical_or,
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
    "==": np.equal,
    "!=": np.not_equal,
}
_UFUNC1: dict[str, Callable[[Any], Any]] = {
    "abs": np.abs,
    "sqrt": np.sqrt,
    "log": np.log,
    "exp": np.exp,
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "sinh": np.sinh,
    "cosh": np.cosh,
    "tanh": np.tanh,
    "isfinite": np.isfinite,
}


class _Evaluator:
    def __init__(self, text: str, columns: Mapping[str, Value]) -> None:
        self.text = text
        self.columns = columns

    def visit(self, node: Node) -> Value:
        try:
            return self._visit(node)
        except ExpressionError:
            raise
        except (ValueError, TypeError) as exc:  # awkward broadcasting of unequal lists
            what = f"cannot evaluate this part: {str(exc).splitlines()[0]}"
            hint = "lists of different collections (e.g. Jet_pt + Muon_pt) cannot be combined"
            raise error(self.text, node.pos, what, hint) from exc

    def _visit(self, node: Node) -> Value:
        if isinstance(node, Num):
            return node.value
        if isinstance(node, Unary):
            value = self.visit(node.operand)
            if node.op == "~":
                return _ufunc(np.logical_not, value)
            return _ufunc(np.negative, _as_number(value)) if node.op == "-" else value
        if isinstance(node, Binary):
            return self.binary(node)
        if isinstance(node, Compare):
            return self.compare(node)
        if isinstance(node, Mask):
            return jagged.apply_mask(self.visit(node.base), self.visit(node.mask))
        if isinstance(node, Call):
            return self.call(node)
        return self.columns[getattr(node, "id", "")]

    def binary(self, node: Binary) -> Value:
        left, right = self.visit(node.left), self.visit(node.right)
        if node.op in ("/", "//", "%", "**"):
            # float64 so x/0 is inf/nan (not an integer error) and 2**-1 works
            left, right = _as_float(left), _as_float(right)
        return _ufunc(_BINARY[node.op], left, right)

    def compare(self, node: Compare) -> Value:
        values = [self.visit(o) for o in node.operands]
        result: Value = None
        for op, a, b in zip(node.ops, values, values[1:], strict=False):
            step = _ufunc(_BINARY[op], a, b)
            result = step if result is None else _ufunc(np.logical_and, result, step)
        return result

    def call(self, node: Call) -> Value:
        f = node.func
        args = [self.visit(a) for a in node.args]
        if f in _UFUNC1:
            return _ufunc(_UFUNC1[f], _as_number(args[0]))
        if f in ("arctan2", "minimum", "maximum"):
            fn = {"arctan2": np.arctan2, "minimum": np.minimum, "maximum": np.maximum}[f]
            return _ufunc(fn, args[0], args[1])
        if f == "clip":
            return _ufunc(np.minimum, _ufunc(np.maximum, args[0], args[1]), args[2])
        if f == "where":
            return _where_values(*args)
        if f == "sort_by":
            ascending = bool(args[2]) if len(args) == 3 else False
            order = ak.argsort(args[1], axis=1, ascending=ascending, stable=True)
            return args[0][order]
        return _reduction(f, args)


def _reduction(f: str, args: list[Value]) -> np.ndarray[Any, Any]:
    x = args[0]
    found = jagged.parts(x)
    if found is not None and f in ("count", "sum", "any", "all", "mean", "min", "max"):
        default = float(args[1]) if len(args) > 1 else np.nan
        return jagged.reduce(f, found, default)
    if f == "count":
        out = ak.sum(x, axis=1) if _is_bool(x) else ak.num(x, axis=1)
        return _to_numpy(out).astype(np.int64)
    if f == "sum":
        return _to_numpy(ak.sum(x, axis=1))
    if f in ("any", "all"):
        return _to_numpy((ak.any if f == "any" else ak.all)(x, axis=1)).astype(bool)
    if f == "mean":
        n = _to_numpy(ak.num(x, axis=1))
        total = _to_numpy(ak.sum(x, axis=1)).astype(np.float64)
        default = float(args[1]) if len(args) > 1 else np.nan
        return np.where(n > 0, total / np.maximum(n, 1), default)
    if f in ("min", "max"):
        out = (ak.min if f == "min" else ak.max)(x, axis=1, mask_identity=True)
        default = float(args[1]) if len(args) > 1 else np.nan
        return _to_numpy(ak.fill_none(out, default)).astype(np.float64)
    # first(x, default) / nth(x, n, default)
    pos, default = (0, args[1]) if f == "first" else (int(args[1]), args[2])
    found = jagged.parts(x)
    if found is not None:
        offsets, content = found
        has = np.diff(offsets) > pos
        idx = np.where(has, offsets[:-1] + pos, 0)
        picked_np = content.take(idx) if len(content) else np.zeros(len(has), content.dtype)
        return np.where(has, picked_np, float(default)).astype(np.float64)
    picked = ak.pad_none(x, pos + 1, axis=1, clip=True)[:, pos]
    return _to_numpy(ak.fill_none(picked, float(default))).astype(np.float64)


def _ufunc(fn: Callable[..., Any], *args: Value) -> Value:
    """``fn(*args)``; for lists sharing one layout, computed on their flat content.

    Per-event arrays are repeated per object and constants broadcast, exactly as awkward
    would; any other layout goes through awkward's own ufunc dispatch.
    """
    lists = [a for a in args if isinstance(a, ak.Array)]
    if not lists:
        return fn(*args)
    found = [jagged.parts(a) for a in lists]
    offsets = found[0][0] if found[0] is not None else None
    if offsets is None or any(p is None or not jagged.same_lists(p[0], offsets) for p in found):
        return fn(*args)
    counts: np.ndarray[Any, Any] | None = None
    flat_args: list[Any] = []
    it = iter(found)
    for a in args:
        if isinstance(a, ak.Array):
            flat_args.append(next(it)[1])  # type: ignore[index]
        elif isinstance(a, np.ndarray):
            counts = np.diff(offsets) if counts is None else counts
            flat_args.append(np.repeat(a, counts))
        else:
            flat_args.append(a)
    return jagged.make(offsets, np.asarray(fn(*flat_args)))


def _where_values(cond: Value, a: Value, b: Value) -> Value:
    if any(isinstance(v, ak.Array) for v in (cond, a, b)):
        return ak.where(cond, a, b)
    return np.where(cond, a, b)


def _is_bool(x: Value) -> bool:
    return type_of_column("value", x).dtype == "bool"


def _as_number(value: Value) -> Value:
    # booleans take part in arithmetic only through count()/sum(); this keeps numpy from
    # treating bool '-' as an error if a checked expression still gets here
    if isinstance(value, np.ndarray) and value.dtype == np.bool_:
        return value.astype(np.int64)
    return value


def _as_float(value: Value) -> Value:
    if isinstance(value, bool | int | float | np.generic):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.astype(np.float64, copy=False)
    return ak.values_astype(value, np.float64)


def _to_numpy(array: Value) -> np.ndarray[Any, Any]:
    if isinstance(array, np.ndarray):
        return array
    return np.asarray(ak.to_numpy(array, allow_missing=False))
