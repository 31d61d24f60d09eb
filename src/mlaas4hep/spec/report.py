"""Validation errors as text: one line per problem, with the field path and allowed names.

``format_validation_error`` (spec/loading.py) is the entry point; ``format_problems``
is its body for an explicit *root* model, usable below ``PipelineSpec``.
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from mlaas4hep.errors import closest


def format_problems(exc: ValidationError, origin: str, *, root: type[BaseModel], what: str) -> str:
    """One line per problem: ``field.path: message (got value)`` plus allowed names.

    *root*: the model validated, whose fields name the allowed keys of an unknown one;
    *what*: the document's kind, for the first line.
    """
    errors = [e for e in exc.errors() if not _other_union_member(e, exc)]
    lines = [f"{origin} is not a valid {what} ({len(errors)} problem(s)):"]
    for err in errors:
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in _clean(loc)) or "(top level)"
        text = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            allowed = _allowed_fields(loc[:-1], root)
            hint = closest(str(loc[-1]), allowed) if allowed else ""
            text = f"unknown field{'; ' + hint if hint else ''}"
            lines.append(f"  {path}: {text}")
            continue
        if err["type"] == "missing":
            lines.append(f"  {path}: required field is missing")
            continue
        got = err.get("input")
        shown = "" if isinstance(got, dict | list) else f" (got {repr(got)[:200]})"
        lines.append(f"  {path}: {text}{shown}")
    return "\n".join(lines)


# pydantic puts the member of a union it tried into the error path (cuts.0.CutSpec.expr)
_UNION_TAGS = frozenset({"str", "int", "float", "bool", "CutSpec"})


def _clean(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(p for p in loc if not (isinstance(p, str) and p in _UNION_TAGS))


def _other_union_member(err: Any, exc: ValidationError) -> bool:
    """True for the plain-type half of a ``str | Model`` union when the model half failed.

    ``cuts: [{name: x, exprr: y}]`` is meant as a ``CutSpec``: "should be a valid string"
    about the same item would only confuse.
    """
    loc = tuple(err["loc"])
    if not any(p in ("str", "int", "float", "bool") for p in loc if isinstance(p, str)):
        return False
    here = _clean(loc)
    return any(
        tuple(o["loc"]) != loc and _clean(tuple(o["loc"]))[: len(here)] == here
        for o in exc.errors()
    )


def _allowed_fields(loc: tuple[Any, ...], root: type[BaseModel]) -> list[str]:
    """Field names of the model found by walking *loc* down from *root*."""
    model: Any = root
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is not None:
            model = _inner_model(field.annotation)
        elif not isinstance(part, int | str) or model is None:
            return []
        # else: a list index or a dict key (objects: {Jet: ...}); stay on the model of the
        # container's values, which _inner_model already chose.
        if model is None:
            return []
    return [f.alias or name for name, f in model.model_fields.items()]  # "class", not "class_"


def _inner_model(tp: Any) -> Any:
    """The first pydantic model class inside a type annotation (list/dict/Optional)."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    for arg in get_args(tp):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
