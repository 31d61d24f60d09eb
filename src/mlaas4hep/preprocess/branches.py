"""The branches a compiled ``Program`` reads, resolved before any data is read.

Every name of every expression must be a branch of the tree or an earlier define; a
missing one is reported with a caret under it and the closest names, and missing
identifier branches with the fix (``data.identifiers``) and the branches that look like
event numbers.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import TYPE_CHECKING

from mlaas4hep.errors import SpecError, closest
from mlaas4hep.preprocess.expr import Expr, Name, error, walk
from mlaas4hep.preprocess.steps import DatasetSteps

if TYPE_CHECKING:
    from mlaas4hep.preprocess.program import Program

# Branch names that usually number events (eventNumber, EventNumber, evt, runNumber, lumi...).
_EVENT_NUMBER = re.compile(r"event|evt|run|lumi", re.IGNORECASE)


def needed_branches(program: Program, available: Collection[str]) -> list[str]:
    """The branches *program* reads, given the branch names of the tree.

    Raises ``ExpressionError`` (with a caret) for a name that is neither a branch nor
    an earlier define, and ``SpecError`` for a feature or identifier that is missing.
    """
    avail = set(available)
    needed: set[str] = set(program.identifiers)
    for coll, e in program.selects.items():
        needed |= _resolve(program, e, f"preprocess.select.{coll}", avail, set())
    known: set[str] = set()
    for steps in program.checked_steps():
        used, defined = _needed(program, steps, avail)
        needed |= used
        known |= defined
    ids = [i for i in program.identifiers if i not in avail]
    missing = sorted(n for n in needed if n not in avail and n not in ids)
    problems = [_missing_identifiers(program, ids, avail)] if ids else []
    if missing:
        pool = avail | known
        hints = "; ".join(f"{m!r} ({closest(m, pool)})" for m in missing)
        problems.append(
            f"features name columns that are neither branches nor defines: "
            f"{hints}. Fix preprocess.features or add a define"
        )
    if problems:
        raise SpecError("\n".join(problems))
    return sorted(needed)


def _needed(program: Program, steps: DatasetSteps, avail: set[str]) -> tuple[set[str], set[str]]:
    """The input columns *steps* read (features included), and the names it defines."""
    needed: set[str] = set()
    known: set[str] = set()
    for name, e in steps.defines.items():
        needed |= _resolve(program, e, program.where(e), avail, known)
        known.add(name)
    for where, e in program.late_exprs(steps):
        needed |= _resolve(program, e, where, avail, known)
    return needed | {c for c in program.feature_cols if c not in known}, known


def _missing_identifiers(program: Program, missing: list[str], avail: set[str]) -> str:
    """Why identifier branches are missing (the default is the usual cause) and the fix."""
    looks_like = sorted(n for n in avail if _EVENT_NUMBER.search(n))[:5]
    example = f"[{', '.join(looks_like)}]" if looks_like else "[run, event]"
    fix = (
        f"set data.identifiers to the branches that together identify each event of this "
        f"tree, e.g. 'identifiers: {example}' (the train/validation/test split hashes them)"
    )
    if looks_like:
        fix += "; branches that look like event numbers: " + ", ".join(map(repr, looks_like))
    data = program.spec.data
    if data.identifiers == program.identifiers and "identifiers" not in data.model_fields_set:
        default = ", ".join(program.identifiers)
        return (
            f"data.identifiers is not set, so the NanoAOD default [{default}] is used, but "
            f"this tree has no branch {', '.join(map(repr, missing))}: {fix}"
        )
    hints = "; ".join(f"{m!r} ({closest(m, avail)})" for m in missing)
    return f"data.identifiers names branches this tree does not have: {hints}; {fix}"


def _resolve(program: Program, e: Expr, where: str, avail: set[str], known: set[str]) -> set[str]:
    """The input names *e* reads; ``ExpressionError`` with a caret for an unknown one."""
    for name in sorted(e.names()):
        if name in avail or name in known:
            continue
        later = name in program.defines
        what = f"in {where}: unknown name {name!r}"
        hint = (
            f"{name!r} is defined later in preprocess.define; move it up"
            if later
            else closest(name, avail | known)
        )
        pos = next(n.pos for n in walk(e.root) if isinstance(n, Name) and n.id == name)
        raise error(e.text, pos, what, hint)
    return {n for n in e.names() if n not in known}
