"""``mlaas4hep stats FILES...``: first-pass statistics of ROOT files.

Per scalar branch: count, min, max, mean, std (and NaN/inf counts); per jagged
collection: the multiplicity distribution and maximum, and each field over all objects.
All files form one sample. ``--cache-dir`` keeps per-file results keyed by file identity,
so a second run on unchanged files reads nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mlaas4hep.data.accumulators import SampleStats
from mlaas4hep.data.schema import inspect_tree
from mlaas4hep.data.sources import resolve_files
from mlaas4hep.data.stats import OVERALL, first_pass
from mlaas4hep.spec import DatasetSpec, DataSpec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", help="paths, globs, @list.txt or URLs")
    parser.add_argument("--tree", default=None, help="tree name (default: the only one)")
    parser.add_argument(
        "--branches", nargs="+", default=None, help="branches (default: every numeric one)"
    )
    parser.add_argument("--step-size", type=int, default=100_000, help="entries per chunk")
    parser.add_argument("--max-events", type=int, default=None, help="read at most N events")
    parser.add_argument("--cache-dir", type=Path, default=None, help="per-file stats cache")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    files = resolve_files(args.files)
    spec = DataSpec(
        tree=args.tree,
        datasets=[DatasetSpec(name="files", files=files)],
        step_size=args.step_size,
        max_events=args.max_events,
    )
    branches = args.branches or _numeric_branches(files[0], args.tree)
    stats = first_pass(spec, branches, cache_dir=args.cache_dir)[OVERALL]
    print(json.dumps(_summary(stats)) if args.json else render(stats))
    return 0


def _numeric_branches(path: str, tree: str | None) -> list[str]:
    schema = inspect_tree(path, tree)
    return [b.name for b in schema.branches if b.kind != "other"]


def _summary(stats: SampleStats) -> dict[str, Any]:
    return {
        "entries": stats.entries,
        "scalars": {k: v.summary() for k, v in stats.scalars.items()},
        "collections": {
            k: {
                "multiplicity": {str(n): e for n, e in sorted(c.multiplicity.items())},
                "max_multiplicity": c.max_multiplicity,
                "fields": {f: s.summary() for f, s in c.fields.items()},
            }
            for k, c in stats.collections.items()
        },
    }


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.6g}"


def render(stats: SampleStats) -> str:
    """Scalars and collection fields as one aligned table, multiplicities below."""
    rows: list[tuple[str, ...]] = [("branch", "count", "min", "max", "mean", "std", "nan", "inf")]
    named = list(stats.scalars.items())
    for coll in stats.collections.values():
        named.extend(coll.fields.items())
    for name, s in named:
        d = s.summary()
        rows.append(
            (
                name,
                str(d["count"]),
                *(_fmt(d[k]) for k in ("min", "max", "mean", "std")),
                str(d["nan"]),
                str(d["inf"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"{stats.entries} entries"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    for name, coll in stats.collections.items():
        events = coll.events or 1
        mean = sum(n * e for n, e in coll.multiplicity.items()) / events
        hist = " ".join(f"{n}:{e}" for n, e in sorted(coll.multiplicity.items()))
        lines.append(f"{name}: max {coll.max_multiplicity}, mean {mean:.3g} per event; {hist}")
    return "\n".join(lines)
