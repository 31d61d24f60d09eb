"""The strict base model and what the spec's sections share: names, cuts, hashes.

``CutSpec`` and the name checks serve both ``preprocess`` (the global steps) and
``data.datasets[]`` (a dataset's own steps).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SPEC_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_NAME = r"^[A-Za-z][A-Za-z0-9_]*$"
# Words of the expression language that cannot be used as names of defined columns.
RESERVED_NAMES = frozenset(
    {"and", "or", "not", "True", "False", "true", "false"}
    | {"abs", "sqrt", "log", "exp", "sin", "cos", "tan", "arctan2", "sinh", "cosh", "tanh"}
    | {"minimum", "maximum", "clip", "where", "isfinite"}
    | {"count", "sum", "min", "max", "mean", "any", "all", "first", "nth", "sort_by"}
)


class CutSpec(_Strict):
    """An event-level cut with a display name (a plain string is a cut named after itself)."""

    name: str = Field(min_length=1, max_length=200)
    expr: str = Field(min_length=1, max_length=2000)


def _cut_specs(cuts: list[str | CutSpec]) -> list[CutSpec]:
    return [CutSpec(name=c, expr=c) if isinstance(c, str) else c for c in cuts]


def _check_name(name: str, section: str) -> None:
    if not re.match(_NAME, name):
        msg = (
            f"{section} name {name!r} is not a valid name: use letters, digits and '_', "
            "starting with a letter"
        )
        raise ValueError(msg)
    if name in RESERVED_NAMES:
        msg = f"{section} name {name!r} is a word of the expression language; rename it"
        raise ValueError(msg)


def _check_names(mapping: dict[str, str], section: str) -> dict[str, str]:
    """*mapping* unchanged when every key is a valid *section* name (``_check_name``)."""
    for name in mapping:
        _check_name(name, section)
    return mapping


def canonical_hash(obj: Any) -> str:
    """SHA-256 hex digest of *obj* as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()
