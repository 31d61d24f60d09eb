"""The safe expression language: a tokenizer and a Pratt parser that build a small AST.

User text never reaches Python's ``eval``/``exec``/``compile``: it is scanned here into
tokens, parsed into the node classes below, and evaluated by ``preprocess.evaluate``
over numpy/awkward columns. Anything outside the grammar (attribute access, strings,
dunder names, unknown functions, calls of non-names) is an ``ExpressionError`` with a
caret under the offending token.

Grammar, loosest binding first (``&``/``|`` bind looser than comparisons, as ROOT's
``&&``/``||`` do, so ``a > 1 & b < 2`` means ``(a > 1) & (b < 2)``)::

    or:  a or b, a | b, a || b
    and: a and b, a & b, a && b
    not: not a, ~a, !a
    compare: a < b <= c (chained), ==, !=, >, >=
    sum: a + b, a - b
    product: a * b, a / b, a // b, a % b
    unary: -a, +a
    power: a ** b (right associative)
    postfix: f(a, b), x[mask]
    atom: 1, 2.5, 1e-3, True, False, name, (expr)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mlaas4hep.errors import ExpressionError, closest

MAX_LENGTH = 2000
MAX_DEPTH = 40

# Function name -> (min args, max args). What each does is in ``preprocess.evaluate``.
FUNCTIONS: dict[str, tuple[int, int]] = {
    "abs": (1, 1),
    "sqrt": (1, 1),
    "log": (1, 1),
    "exp": (1, 1),
    "sin": (1, 1),
    "cos": (1, 1),
    "tan": (1, 1),
    "sinh": (1, 1),
    "cosh": (1, 1),
    "tanh": (1, 1),
    "arctan2": (2, 2),
    "minimum": (2, 2),
    "maximum": (2, 2),
    "clip": (3, 3),
    "where": (3, 3),
    "isfinite": (1, 1),
    "count": (1, 1),
    "sum": (1, 1),
    "min": (1, 2),
    "max": (1, 2),
    "mean": (1, 2),
    "any": (1, 1),
    "all": (1, 1),
    "first": (2, 2),
    "nth": (3, 3),
    "sort_by": (2, 3),
}
KEYWORDS = {"and": "&", "or": "|", "not": "~"}
BOOLEANS = {"True": True, "False": False, "true": True, "false": False}

# ---------------------------------------------------------------------------------------
# AST


@dataclass(frozen=True)
class Node:
    """Base of the AST; ``pos`` is the column (0-based) the caret points at."""

    pos: int


@dataclass(frozen=True)
class Num(Node):
    value: int | float | bool


@dataclass(frozen=True)
class Name(Node):
    id: str


@dataclass(frozen=True)
class Unary(Node):
    op: str  # "-", "+", "~"
    operand: Node


@dataclass(frozen=True)
class Binary(Node):
    op: str  # + - * / // % ** & |
    left: Node
    right: Node


@dataclass(frozen=True)
class Compare(Node):
    """``a < b <= c``: ``ops[i]`` compares ``operands[i]`` with ``operands[i + 1]``."""

    ops: tuple[str, ...]
    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Call(Node):
    func: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Mask(Node):
    """``base[mask]``: keep the objects of ``base`` where ``mask`` is true."""

    base: Node
    mask: Node


@dataclass(frozen=True)
class Expr:
    """A parsed expression: its text (for error carets) and its root node."""

    text: str
    root: Node

    def names(self) -> set[str]:
        """Every column name the expression reads."""
        return {n.id for n in walk(self.root) if isinstance(n, Name)}


def walk(node: Node) -> list[Node]:
    """All nodes of the tree under *node* (itself included), parents first."""
    out = [node]
    stack = list(_children(node))
    while stack:
        child = stack.pop()
        out.append(child)
        stack.extend(_children(child))
    return out


def _children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, Unary):
        return (node.operand,)
    if isinstance(node, Binary):
        return (node.left, node.right)
    if isinstance(node, Compare):
        return node.operands
    if isinstance(node, Call):
        return node.args
    if isinstance(node, Mask):
        return (node.base, node.mask)
    return ()


def error(text: str, pos: int, what: str, hint: str = "") -> ExpressionError:
    """An ``ExpressionError`` showing *text* with a caret under column *pos*."""
    shown, col = text, pos
    if len(text) > 120:  # keep the caret on screen for long expressions
        start = max(0, pos - 60)
        shown, col = (
            ("..." if start else "") + text[start : start + 120],
            pos - start + (3 if start else 0),
        )
    msg = f"{what}\n    {shown}\n    {' ' * col}^"
    if hint:
        msg += f"\n{hint}"
    return ExpressionError(msg)


# ---------------------------------------------------------------------------------------
# tokenizer

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<num>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>\*\*|//|<=|>=|==|!=|&&|\|\||[-+*/%<>&|~!()\[\],])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str  # "num", "name", "op", "end"
    text: str
    pos: int


def tokenize(text: str) -> list[Token]:
    """Split *text* into tokens; raises ``ExpressionError`` at the first bad character."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise _bad_char(text, pos)
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, m.group(), pos))
        pos = m.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


def _bad_char(text: str, pos: int) -> ExpressionError:
    ch = text[pos]
    if ch == ".":
        return error(text, pos, "attribute access ('.') is not part of the expression language")
    if ch in "'\"":
        return error(text, pos, "strings are not part of the expression language")
    if ch == "=":
        return error(text, pos, "assignment is not allowed", "use '==' to compare")
    return error(text, pos, f"unexpected character {ch!r}")


# ---------------------------------------------------------------------------------------
# parser

_INFIX = {  # operator -> (binding power, canonical op)
    "|": (10, "|"),
    "||": (10, "|"),
    "or": (10, "|"),
    "&": (20, "&"),
    "&&": (20, "&"),
    "and": (20, "&"),
    "<": (40, "<"),
    "<=": (40, "<="),
    ">": (40, ">"),
    ">=": (40, ">="),
    "==": (40, "=="),
    "!=": (40, "!="),
    "+": (50, "+"),
    "-": (50, "-"),
    "*": (60, "*"),
    "/": (60, "/"),
    "//": (60, "//"),
    "%": (60, "%"),
    "**": (80, "**"),
}
_NOT_BP = 30
_UNARY_BP = 70
_POSTFIX_BP = 90


def parse(text: str) -> Expr:
    """Parse *text* into an ``Expr``; raises ``ExpressionError`` with a caret."""
    if not isinstance(text, str):
        raise ExpressionError(f"an expression is a string, got {text!r}")
    if len(text) > MAX_LENGTH:
        msg = f"expression is {len(text)} characters long; the limit is {MAX_LENGTH}"
        raise ExpressionError(msg + ": split it into several 'define' entries")
    if not text.strip():
        raise ExpressionError("empty expression: write e.g. 'MET_pt > 20'")
    parser = _Parser(text, tokenize(text))
    root = parser.expression(0)
    tok = parser.peek()
    if tok.kind != "end":
        raise error(text, tok.pos, f"unexpected {tok.text!r} after a complete expression")
    return Expr(text, root)


class _Parser:
    def __init__(self, text: str, tokens: list[Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.i = 0
        self.depth = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect(self, text: str, opened: Token) -> Token:
        tok = self.next()
        if tok.text != text:
            found = "the end" if tok.kind == "end" else repr(tok.text)
            what = (
                f"expected {text!r} to close {opened.text!r} (column {opened.pos}), found {found}"
            )
            raise error(self.text, tok.pos, what)
        return tok

    def expression(self, min_bp: int) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            tok = self.peek()
            msg = f"expression nests deeper than {MAX_DEPTH} levels"
            raise error(self.text, tok.pos, msg, "split it into several 'define' entries")
        left = self.prefix()
        while True:
            tok = self.peek()
            if tok.text in ("(", "[") and min_bp < _POSTFIX_BP:
                left = self.postfix(left)
                continue
            infix = _INFIX.get(tok.text) if tok.kind in ("op", "name") else None
            if infix is None or infix[0] <= min_bp:
                break
            bp, op = infix
            self.next()
            if bp == 40:
                left = self.compare(left, tok)
            elif op == "**":  # right associative
                left = Binary(tok.pos, op, left, self.expression(bp - 1))
            else:
                left = Binary(tok.pos, op, left, self.expression(bp))
        self.depth -= 1
        return left

    def compare(self, first: Node, tok: Token) -> Node:
        ops, operands = [_INFIX[tok.text][1]], [first, self.expression(40)]
        while (nxt := self.peek()).kind == "op" and _INFIX.get(nxt.text, (0, ""))[0] == 40:
            self.next()
            ops.append(_INFIX[nxt.text][1])
            operands.append(self.expression(40))
        return Compare(tok.pos, tuple(ops), tuple(operands))

    def prefix(self) -> Node:
        tok = self.next()
        if tok.kind == "num":
            return Num(tok.pos, _number(tok.text))
        if tok.kind == "name":
            return self.name(tok)
        if tok.text in ("-", "+"):
            return Unary(tok.pos, tok.text, self.expression(_UNARY_BP))
        if tok.text in ("~", "!"):
            return Unary(tok.pos, "~", self.expression(_NOT_BP))
        if tok.text == "(":
            if self.peek().text == ")":
                raise error(self.text, tok.pos, "empty parentheses '()' are not an expression")
            inner = self.expression(0)
            self.expect(")", tok)
            return inner
        found = "the end of the expression" if tok.kind == "end" else repr(tok.text)
        raise error(self.text, tok.pos, f"expected a number, a name or '(' but found {found}")

    def name(self, tok: Token) -> Node:
        word = tok.text
        if word in BOOLEANS:
            return Num(tok.pos, BOOLEANS[word])
        if word == "not":
            return Unary(tok.pos, "~", self.expression(_NOT_BP))
        if word in KEYWORDS:
            raise error(self.text, tok.pos, f"{word!r} needs a value on its left")
        if "__" in word:
            raise error(self.text, tok.pos, f"names with '__' such as {word!r} are not allowed")
        if self.peek().text == "(":
            return self.call(tok)
        return Name(tok.pos, word)

    def call(self, tok: Token) -> Node:
        if tok.text not in FUNCTIONS:
            hint = closest(tok.text, FUNCTIONS)
            raise error(self.text, tok.pos, f"unknown function {tok.text!r}", hint)
        opened = self.next()
        args: list[Node] = []
        if self.peek().text != ")":
            args.append(self.expression(0))
            while self.peek().text == ",":
                self.next()
                args.append(self.expression(0))
        self.expect(")", opened)
        lo, hi = FUNCTIONS[tok.text]
        if not lo <= len(args) <= hi:
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            msg = f"{tok.text}() takes {want} argument(s), got {len(args)}"
            raise error(self.text, tok.pos, msg, "see the list of functions in docs/pipeline.md")
        return Call(tok.pos, tok.text, tuple(args))

    def postfix(self, left: Node) -> Node:
        tok = self.next()
        if tok.text == "(":
            raise error(self.text, tok.pos, "only the listed functions can be called")
        mask = self.expression(0)
        self.expect("]", tok)
        return Mask(tok.pos, left, mask)


def _number(text: str) -> int | float:
    if re.fullmatch(r"\d+", text) and len(text) <= 18:
        return int(text)
    return float(text)
