"""Parser of the expression language: grammar, precedence, rejection of unsafe input."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from mlaas4hep.errors import ExpressionError
from mlaas4hep.preprocess.evaluate import evaluate
from mlaas4hep.preprocess.expr import MAX_DEPTH, MAX_LENGTH, Binary, Compare, Num, Unary, parse
from mlaas4hep.preprocess.typecheck import check, type_of_column

COLS = {
    "MET_pt": np.array([10.0, 50.0, 0.0], dtype=np.float32),
    "nJet": np.array([2, 0, 3], dtype=np.int32),
    "Jet_pt": ak.Array([[40.0, 20.0], [], [35.0, 31.0, 10.0]]),
    "Jet_eta": ak.Array([[1.0, 3.0], [], [0.5, -2.5, 1.0]]),
    "Muon_pt": ak.Array([[5.0], [6.0, 7.0], []]),
}
TYPES = {k: type_of_column(k, v) for k, v in COLS.items()}


def run(text: str) -> object:
    e = parse(text)
    check(e, TYPES)
    out = evaluate(e, COLS)
    return out.tolist() if hasattr(out, "tolist") else out


def caret_column(message: str) -> int:
    """Column of the '^' relative to the echoed expression line above it."""
    lines = message.splitlines()
    i = next(i for i, line in enumerate(lines) if line.strip() == "^")
    return lines[i].index("^") - 4


EXPLOITS = [
    "().__class__.__base__.__subclasses__()",
    "().__class__.__base__.__subclasses__()[-1].__init__.__globals__['sys']",
    "__import__('os').system('echo pwned')",
    "MET_pt.__class__",
    "eval('1+1')",
    "exec('x=1')",
    "open('/etc/passwd')",
    "getattr(MET_pt, 'real')",
    "lambda: 1",
    "[x for x in MET_pt]",
    "MET_pt; import os",
    "__builtins__",
    "f'{MET_pt}'",
    "MET_pt if 1 else 2",
    "(MET_pt)(1)",
]


@pytest.mark.parametrize("text", EXPLOITS)
def test_unsafe_text_is_rejected_without_running_code(
    text: str, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ExpressionError):
        check(parse(text), TYPES)
    assert "pwned" not in capfd.readouterr().out


def test_uproot_exploit_string_is_rejected_at_the_attribute_access() -> None:
    text = "().__class__.__base__.__subclasses__()"
    with pytest.raises(ExpressionError) as info:
        parse(text)
    # '()' itself is already invalid; either way the caret points into the expression
    assert "^" in str(info.value)
    assert text in str(info.value)


@pytest.mark.parametrize(
    ("text", "column", "words"),
    [
        ("MET_pt > 20 &", 13, "expected a number"),
        ("Jet_ptt > 3", 0, "closest: 'Jet_pt'"),
        ("MET_pt + sqr(nJet)", 9, "unknown function 'sqr'"),
        ("MET_pt.real", 6, "attribute access"),
        ("(MET_pt > 1", 11, "expected ')'"),
        ("MET_pt = 1", 7, "use '=='"),
        ("sum(MET_pt)", 4, "needs a per-object list"),
        ("MET_pt & nJet", 0, "needs a condition"),
        ("Jet_pt[MET_pt > 1]", 14, "per-object condition"),
        ("MET_pt + (nJet > 1)", 15, "needs numbers"),
        ("first(Jet_pt, MET_pt)", 14, "constant number"),
        ("nth(Jet_pt, 1.5, 0)", 12, "integer"),
        ("x__y + 1", 0, "'__'"),
        ("1 2", 2, "after a complete expression"),
        ("min(Jet_pt, 1, 2)", 0, "takes 1 to 2 argument"),
    ],
)
def test_errors_point_at_the_bad_token(text: str, column: int, words: str) -> None:
    with pytest.raises(ExpressionError) as info:
        check(parse(text), TYPES)
    msg = str(info.value)
    assert words in msg
    assert caret_column(msg) == column, msg


def test_limits_on_length_and_depth() -> None:
    with pytest.raises(ExpressionError, match="limit"):
        parse("1+" * MAX_LENGTH + "1")
    with pytest.raises(ExpressionError, match="nests deeper"):
        parse("(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1))
    parse("(" * (MAX_DEPTH - 2) + "1" + ")" * (MAX_DEPTH - 2))


def test_precedence_follows_python_except_for_boolean_operators() -> None:
    assert run("-2**2") == -4.0
    assert run("2**-1") == 0.5
    assert run("2**3**2") == 512.0
    assert run("1 + 2 * 3 - 4 / 2") == 5.0
    assert run("7 // 2 % 3") == 0.0
    # '&' binds looser than comparisons, unlike Python
    assert run("MET_pt > 5 & nJet < 3") == [True, True, False]
    assert run("MET_pt > 5 and nJet < 3 or nJet == 3") == [True, True, True]
    assert run("not MET_pt > 20") == [True, False, True]
    assert run("!(MET_pt > 20) && nJet >= 2 || MET_pt == 50") == [True, True, True]


def test_parse_tree_shapes() -> None:
    e = parse("1 <= nJet < 3")
    assert isinstance(e.root, Compare)
    assert e.root.ops == ("<=", "<")
    e = parse("-x ** 2")
    assert isinstance(e.root, Unary)
    assert isinstance(e.root.operand, Binary)
    assert isinstance(parse("True").root, Num)
    assert parse("a + f_b * sum(Jet_pt[Jet_pt > c])").names() == {"a", "f_b", "Jet_pt", "c"}


def test_collection_operations() -> None:
    assert run("sum(Jet_pt[Jet_pt > 30])") == [40.0, 0.0, 66.0]
    assert run("count(Jet_pt[(Jet_pt > 30) & (abs(Jet_eta) < 2.4)])") == [1, 0, 1]
    assert run("count(Jet_pt > 30)") == [1, 0, 2]
    assert run("count(Jet_pt)") == [2, 0, 3]
    assert run("min(Jet_pt, -1)") == [20.0, -1.0, 10.0]
    assert run("max(Jet_pt, -1)") == [40.0, -1.0, 35.0]
    assert run("mean(Jet_pt, 0)") == pytest.approx([30.0, 0.0, 76 / 3])
    assert run("any(Jet_eta > 2)") == [True, False, False]
    assert run("all(Jet_eta > 0)") == [True, True, False]
    assert run("first(Jet_eta, -9)") == [1.0, -9.0, 0.5]
    assert run("nth(Jet_eta, 2, -9)") == [-9.0, -9.0, 1.0]
    assert run("sort_by(Jet_eta, Jet_pt, True)") == [[3.0, 1.0], [], [1.0, -2.5, 0.5]]
    assert run("first(sort_by(Jet_eta, Jet_eta), 0)") == [3.0, 0.0, 1.0]
    assert run("sum(Jet_pt * MET_pt)") == [600.0, 0.0, 0.0]
    assert run("max(Jet_pt, 0) > MET_pt") == [True, False, True]


def test_elementwise_functions_match_numpy() -> None:
    met = COLS["MET_pt"].astype(np.float64)
    with np.errstate(all="ignore"):
        assert run("sqrt(MET_pt)") == pytest.approx(np.sqrt(met).tolist())
        assert run("arctan2(MET_pt, nJet)") == pytest.approx(np.arctan2(met, [2, 0, 3]).tolist())
    assert run("clip(MET_pt, 5, 20)") == [10.0, 20.0, 5.0]
    assert run("where(MET_pt > 20, MET_pt, -1)") == [-1.0, 50.0, -1.0]
    assert run("minimum(nJet, 1)") == [1, 0, 1]
    assert run("isfinite(MET_pt / nJet)") == [True, False, True]
    assert run("abs(Jet_eta)") == [[1.0, 3.0], [], [0.5, 2.5, 1.0]]


def test_division_by_zero_gives_inf_and_nan_without_warnings() -> None:
    assert run("MET_pt / 0") == [np.inf, np.inf, pytest.approx(np.nan, nan_ok=True)]
    out = run("log(MET_pt)")
    assert out[2] == -np.inf
    assert run("nJet // 0")[1] != run("nJet // 0")[1]  # nan


def test_different_collections_cannot_be_combined() -> None:
    with pytest.raises(ExpressionError, match="different collections") as info:
        run("sum(Jet_pt + Muon_pt)")
    assert caret_column(str(info.value)) == 11


def test_unsupported_column_types() -> None:
    with pytest.raises(ExpressionError, match="cannot use"):
        type_of_column("Jet", ak.Array([[{"pt": 1.0}]]))
    with pytest.raises(ExpressionError, match="cannot use"):
        type_of_column("s", np.array(["a", "b"]))
    with pytest.raises(ExpressionError, match="cannot use"):
        type_of_column("s", ak.Array(["a", "bc"]))


def test_spec_reserves_every_word_of_the_language() -> None:
    from mlaas4hep.preprocess.expr import BOOLEANS, FUNCTIONS, KEYWORDS
    from mlaas4hep.spec import RESERVED_NAMES

    assert set(FUNCTIONS) | set(KEYWORDS) | set(BOOLEANS) == RESERVED_NAMES
