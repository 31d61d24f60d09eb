"""Property tests: random expressions evaluate like numpy, or fail with ExpressionError."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import awkward as ak
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mlaas4hep.errors import ExpressionError
from mlaas4hep.preprocess.evaluate import evaluate
from mlaas4hep.preprocess.expr import parse
from mlaas4hep.preprocess.typecheck import check, type_of_column

N = 8
_rng = np.random.default_rng(7)
COLS: dict[str, Any] = {
    "a": np.array([0.0, 1.0, -1.0, 2.5, -3.0, 0.5, 10.0, 1e-3]),
    "b": np.array([1.0, 0.0, 2.0, -2.0, 4.0, 0.0, -0.5, 3.0]),
    "k": np.array([0, 1, 2, 3, -1, 5, 6, 0], dtype=np.int64),
    "J": ak.Array([[1.0, 5.0], [], [3.0], [0.0, -2.0, 7.0], [2.0], [], [9.0, 9.0], [4.0]]),
}
TYPES = {k: type_of_column(k, v) for k, v in COLS.items()}
JLIST = COLS["J"].to_list()

Gen = tuple[str, Callable[[], Any]]  # (text, reference thunk)


LEAVES: list[Gen] = [
    ("a", lambda: COLS["a"]),
    ("b", lambda: COLS["b"]),
    ("k", lambda: COLS["k"]),
    *((repr(v), lambda v=v: v) for v in (0, 1, 2, 0.5, 3.25, 100)),
    ("sum(J)", lambda: np.array([sum(x) for x in JLIST])),
    ("count(J)", lambda: np.array([len(x) for x in JLIST])),
    ("count(J > 2)", lambda: np.array([sum(v > 2 for v in x) for x in JLIST])),
    ("max(J, -1)", lambda: np.array([max(x) if x else -1.0 for x in JLIST])),
    ("first(J, 0)", lambda: np.array([x[0] if x else 0.0 for x in JLIST])),
    ("sum(J[J > 1])", lambda: np.array([sum(v for v in x if v > 1) for x in JLIST])),
]


def _f64(x: Any) -> Any:
    return np.asarray(x, dtype=np.float64)


BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": lambda x, y: _f64(x) / _f64(y),
    "**": lambda x, y: _f64(x) ** _f64(y),
    "%": lambda x, y: np.mod(_f64(x), _f64(y)),
}
UNARY: dict[str, Callable[[Any], Any]] = {
    "abs": np.abs,
    "sqrt": lambda x: np.sqrt(_f64(x)),
    "exp": lambda x: np.exp(_f64(x)),
    "tanh": lambda x: np.tanh(_f64(x)),
    "-": lambda x: -np.asarray(x),
}
COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    "==": np.equal,
    "!=": np.not_equal,
}


@st.composite
def numeric(draw: st.DrawFn, depth: int = 0) -> Gen:
    """A numeric expression and the numpy computation it must equal."""
    choice = draw(st.integers(0, 4)) if depth < 4 else 0
    if choice == 0:
        return draw(st.sampled_from(LEAVES))
    if choice == 1:
        op = draw(st.sampled_from(sorted(BINARY)))
        (lt, lf), (rt, rf) = draw(numeric(depth + 1)), draw(numeric(depth + 1))
        return f"({lt} {op} {rt})", lambda: BINARY[op](lf(), rf())
    if choice == 2:
        name = draw(st.sampled_from(sorted(UNARY)))
        t, f = draw(numeric(depth + 1))
        text = f"(-{t})" if name == "-" else f"{name}({t})"
        return text, lambda: UNARY[name](f())
    if choice == 3:
        (lt, lf), (rt, rf) = draw(numeric(depth + 1)), draw(numeric(depth + 1))
        return f"maximum({lt}, {rt})", lambda: np.maximum(lf(), rf())
    (ct, cf), (lt, lf), (rt, rf) = (
        draw(condition(depth + 1)),
        draw(numeric(depth + 1)),
        draw(numeric(depth + 1)),
    )
    return f"where({ct}, {lt}, {rt})", lambda: np.where(cf(), lf(), rf())


@st.composite
def condition(draw: st.DrawFn, depth: int = 0) -> Gen:
    """A boolean expression and its numpy reference."""
    choice = draw(st.integers(0, 3)) if depth < 4 else 0
    if choice == 0:
        op = draw(st.sampled_from(sorted(COMPARE)))
        (lt, lf), (rt, rf) = draw(numeric(depth + 1)), draw(numeric(depth + 1))
        return f"({lt} {op} {rt})", lambda: COMPARE[op](lf(), rf())
    if choice == 3:
        t, f = draw(condition(depth + 1))
        return f"(not {t})", lambda: ~np.asarray(f())
    op = "&" if choice == 1 else "or"
    (lt, lf), (rt, rf) = draw(condition(depth + 1)), draw(condition(depth + 1))
    fn = np.logical_and if op == "&" else np.logical_or
    return f"({lt} {op} {rt})", lambda: fn(lf(), rf())


EXPRESSIONS = st.one_of(numeric(), condition())


@settings(max_examples=300, deadline=None)
@given(EXPRESSIONS)
def test_random_expressions_match_numpy(gen: Gen) -> None:
    text, reference = gen
    e = parse(text)
    check(e, TYPES)
    got = evaluate(e, COLS)
    with np.errstate(all="ignore"):
        want = reference()
    got_a = np.broadcast_to(np.asarray(got, dtype=np.float64), (N,))
    want_a = np.broadcast_to(np.asarray(want, dtype=np.float64), (N,))
    np.testing.assert_allclose(got_a, want_a, rtol=1e-9, atol=0, equal_nan=True, err_msg=text)


TOKENS = st.sampled_from(
    [
        "a",
        "b",
        "k",
        "J",
        "1",
        "2.5",
        "(",
        ")",
        "[",
        "]",
        ",",
        "+",
        "-",
        "*",
        "/",
        "**",
        "<",
        "==",
        "&",
        "|",
        "~",
        "not",
        "and",
        "sum",
        "count",
        "max",
        "first",
        "sort_by",
        ".",
        "__class__",
        "'x'",
        "=",
        ";",
        "eval",
        "__import__",
        "lambda",
        "{",
        "@",
        " ",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(TOKENS, min_size=1, max_size=14))
def test_token_soup_evaluates_or_raises_expression_error(tokens: list[str]) -> None:
    text = " ".join(tokens)
    try:
        e = parse(text)
        check(e, TYPES)
        evaluate(e, COLS)
    except ExpressionError:
        return


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_arbitrary_text_never_escapes(text: str) -> None:
    try:
        check(parse(text), TYPES)
    except ExpressionError:
        return
