"""The cut flow table: global cuts, then each dataset's own cuts, per dataset and in total.

The first pass counts, per dataset, the events read and those passing each of its cuts in
turn: the global cuts, then its own (``data.datasets[].cuts``). The table has one row per
global cut, then one row per dataset cut, named ``[dataset] cut``. It stays rectangular:
a dataset's cut leaves the other datasets' events alone, so in its row they pass
unchanged (before = after = what they had at that point), and every row's total is the
sum over the datasets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mlaas4hep.preprocess.expr import Expr

Counts = np.ndarray[Any, Any]  # int64 [read, passing cut 1, passing cuts 1-2, ...]


def cutflow_rows(
    global_cuts: Sequence[tuple[str, Expr]],
    own_cuts: Mapping[str, Sequence[tuple[str, Expr]]],
    flow: Mapping[str, Counts],
) -> list[dict[str, Any]]:
    """Rows ``{cut, expr, before, after, efficiency, cumulative, datasets: {...}}`` (and
    ``dataset`` on a dataset's own cut) from the counts *flow* of each dataset read.

    *own_cuts*: each dataset's own cuts, in spec order (the order of their rows).
    """
    g = len(global_cuts)
    rows = [_row(name, e, {ds: (c[i], c[i + 1], c[0]) for ds, c in flow.items()})
            for i, (name, e) in enumerate(global_cuts)]  # fmt: skip
    done: set[str] = set()  # datasets whose own rows are already in the table
    for owner, cuts in own_cuts.items():
        for j, (name, e) in enumerate(cuts):
            per = {}
            for ds, c in flow.items():
                if ds == owner:
                    per[ds] = (c[g + j], c[g + j + 1], c[0])
                else:  # untouched: where it stands before (or after) its own cuts
                    at = c[-1] if ds in done else c[g]
                    per[ds] = (at, at, c[0])
            rows.append({**_row(f"[{owner}] {name}", e, per), "dataset": owner})
        done.add(owner)
    return rows


def _row(name: str, e: Expr, per: Mapping[str, tuple[Any, Any, Any]]) -> dict[str, Any]:
    before, after, read = (sum(int(v[k]) for v in per.values()) for k in range(3))
    return {
        "cut": name,
        "expr": e.text,
        **_eff(before, after, read),
        "datasets": {ds: _eff(int(b), int(a), int(r)) for ds, (b, a, r) in per.items()},
    }


def _eff(before: int, after: int, read: int) -> dict[str, Any]:
    return {
        "before": before,
        "after": after,
        "efficiency": after / before if before else None,
        "cumulative": after / read if read else None,
    }
