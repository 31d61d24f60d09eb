"""``mlaas4hep preview pipeline.yaml``: what the preprocessing makes of the data.

Prints the feature table of the first chunk (a few events, one row per feature), the cut
flow (per cut and per dataset) and the per-feature statistics used for normalisation
(``--json`` prints the same as one JSON object). Expressions are checked on the way, so
this is the quickest way to debug a spec before training.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from mlaas4hep.preprocess.pipeline import FeatureInfo, Preprocessor
from mlaas4hep.spec import load_spec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", type=Path, help="the pipeline spec (YAML or JSON)")
    parser.add_argument("--events", type=int, default=5, help="events shown (default 5)")
    parser.add_argument(
        "--max-events", type=int, default=None, help="read at most this many events per dataset"
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="first-pass cache folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    if args.max_events is not None:
        data = spec.data.model_copy(update={"max_events": args.max_events})
        spec = spec.model_copy(update={"data": data})
    prep = Preprocessor(spec, cache_dir=args.cache_dir)
    first = next(prep.chunks(), None)
    info = prep.fit(strict=False)
    rows = first.X[: args.events] if first is not None else np.zeros((0, len(info.names)))
    if args.json:
        print(json.dumps(_as_json(info, rows), allow_nan=True))
        return 0
    print(render(info, rows))
    return 0


def _as_json(info: FeatureInfo, rows: np.ndarray[Any, Any]) -> dict[str, Any]:
    return {
        "features": list(info.names),
        "first_events": rows.tolist(),
        "cutflow": info.cutflow,
        "events": info.events,
        "stats": info.stats,
        "nonfinite": {k: v for k, v in info.nonfinite.items() if v},
        "task": info.task,
        "class_names": list(info.class_names),
    }


def render(info: FeatureInfo, rows: np.ndarray[Any, Any]) -> str:
    """The three tables as text."""
    out = [f"task: {info.task}  classes: {', '.join(info.class_names) or '-'}", ""]
    out.append(f"features of the first chunk ({len(rows)} events shown)")
    head = ["feature", *(f"event {i}" for i in range(len(rows)))]
    body = [[name, *(_num(v) for v in rows[:, j])] for j, name in enumerate(info.names)]
    out += [_table(head, body), "", "cut flow"]
    datasets = sorted({d for row in info.cutflow for d in row["datasets"]})
    head = ["cut", "before", "after", "eff", "cumul.", *datasets]
    body = [
        [r["cut"], str(r["before"]), str(r["after"]), _pct(r["efficiency"]),
         _pct(r["cumulative"]), *(_pct(r["datasets"][d]["efficiency"]) for d in datasets)]
        for r in info.cutflow
    ]  # fmt: skip
    out += [_table(head, body) if body else "(no cuts)", "", "events"]
    head = ["dataset", "read", "passed", "train", "validation", "test", "dropped NaN/inf"]
    body = [
        [d, *(str(e.get(k, 0)) for k in (*head[1:6], "dropped_nonfinite")[:6])]
        for d, e in info.events.items()
    ]
    out += [_table(head, body), "", "feature statistics (training split, after cuts)"]
    head = ["feature", "count", "mean", "std", "min", "max", "NaN/inf", "offset", "scale"]
    body = []
    for j, name in enumerate(info.names):
        s = info.stats[name]
        vals = [s["mean"], s["std"], s["min"], s["max"]]
        body.append([name, str(s["count"]), *(_num(v) for v in vals), str(s["nonfinite"]),
                     _num(info.offset[j]), _num(info.scale[j])])  # fmt: skip
    out.append(_table(head, body))
    bad = {k: v for k, v in info.nonfinite.items() if v}
    if bad:
        out += ["", f"NaN/inf counts: {bad}"]
    return "\n".join(out)


def _num(v: Any) -> str:
    return "-" if v is None else f"{float(v):.5g}"


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * float(v):.1f}%"


def _table(head: list[str], body: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

    def fmt(row: list[str]) -> str:
        cells = zip(row, widths, strict=True)
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(cells))

    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *(fmt(r) for r in body)])
