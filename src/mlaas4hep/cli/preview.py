"""``mlaas4hep preview pipeline.yaml``: what the preprocessing makes of the data.

Prints the feature table of the first chunk (a few events, one row per feature), the cut
flow (per cut and per dataset) and the per-feature statistics used for normalisation
(``--json`` prints the same as one JSON object). Expressions are checked on the way, so
this is the quickest way to debug a spec before training.

Exit status: 0 when the data can train a model; 2 for an error (bad spec, missing file or
branch, bad expression); 3 (``EXIT_DATA_PROBLEM``) when the spec is valid but the data it
selects cannot train a model, which ``mlaas4hep run`` would find only after reading it all:
NaN/inf in a feature, the label or the weight (with ``preprocess.nonfinite: error``), no
event passing the cuts (or none of one dataset), or no training event. The tables are
printed first; each problem follows on stderr, naming the features (NaN/inf count, first
dataset) or the cut that removed the last events.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mlaas4hep.preprocess.pipeline import FeatureInfo, Preprocessor
from mlaas4hep.preprocess.program import DEFINE_PREFIX, LABEL, WEIGHT, ChunkResult
from mlaas4hep.spec import PipelineSpec, load_spec

#: The spec is valid, but the data it selects cannot train a model (see the module doc).
EXIT_DATA_PROBLEM = 3


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
    chunks = prep.chunks()
    first = next(chunks, None)
    _close(chunks)  # only the first chunk is shown; stop its reader
    info = prep.fit(strict=False)
    rows = first.X[: args.events] if first is not None else np.zeros((0, len(info.names)))
    nan = nonfinite_columns(spec, info)
    where = _first_dataset(prep, first, set(nan)) if nan else None
    problems = data_problems(spec, info, nan_dataset=where)
    if args.json:
        print(json.dumps({**_as_json(info, rows), "problems": problems}, allow_nan=True))
    else:
        print(render(info, rows))
    sys.stdout.flush()  # the tables first, then the problems (stderr is unbuffered)
    for problem in problems:
        print(f"mlaas4hep preview: error: {problem}", file=sys.stderr)
    return EXIT_DATA_PROBLEM if problems else 0


def nonfinite_columns(spec: PipelineSpec, info: FeatureInfo) -> dict[str, int]:
    """Features, label and weight with NaN/inf values that make training fail (name -> count)."""
    if spec.preprocess.nonfinite != "error":
        return {}  # those events are dropped, as the spec asks
    watched = (*info.names, LABEL, WEIGHT)
    return {k: info.nonfinite[k] for k in watched if info.nonfinite.get(k)}


def data_problems(
    spec: PipelineSpec, info: FeatureInfo, *, nan_dataset: str | None = None
) -> list[str]:
    """Why the data *info* summarises cannot train a model; [] when it can."""
    problems = []
    nan = nonfinite_columns(spec, info)
    if nan:
        problems.append(_nan_problem(info, nan, nan_dataset))
    events = {d.name: info.events.get(d.name, {}) for d in spec.data.datasets}
    if not any(e.get("passed", 0) for e in events.values()):
        total = sum(e.get("read", 0) for e in events.values())
        cut = _emptying_cut(info.cutflow, None)
        if total == 0:
            problems.append("no event was read: the files of every dataset are empty")
        else:
            problems.append(f"no event passes the cuts: {cut or 'check preprocess.cuts'}")
        return problems
    for name, e in events.items():
        if not e.get("read", 0):
            problems.append(f"dataset {name!r} has no events: its files are empty")
        elif not e.get("passed", 0):
            cut = _emptying_cut(info.cutflow, name) or "check preprocess.cuts"
            problems.append(f"dataset {name!r} keeps no event: {cut} (or remove the dataset)")
    if not sum(e.get("train", 0) for e in events.values()) and not nan:
        problems.append(
            "no training event: the events that pass the cuts all go to validation/test; "
            "lower preprocess.split.validation/test or read more events"
        )
    return problems


def _nan_problem(info: FeatureInfo, nan: dict[str, int], dataset: str | None) -> str:
    shown = {LABEL: "the label", WEIGHT: "the weight"}
    named = ", ".join(f"{shown.get(k, repr(k))} ({n:,} events)" for k, n in nan.items())
    defines = [
        k.removeprefix(DEFINE_PREFIX)
        for k, n in info.nonfinite.items()
        if n and k.startswith(DEFINE_PREFIX)
    ]
    return (
        f"NaN/inf in {len(nan)} column(s): {named}"
        + (f", first in dataset {dataset!r}" if dataset else "")
        + (f" (defines with NaN/inf: {', '.join(map(repr, defines))})" if defines else "")
        + "; training would stop here: guard the expressions (e.g. where(x > 0, log(x), 0)), "
        "cut those events, or set preprocess.nonfinite: drop"
    )


def _emptying_cut(cutflow: list[dict[str, Any]], dataset: str | None) -> str:
    """``cut 'NAME' (EXPR) keeps 0 of N events; loosen it``, for the cut that removed the last
    events of *dataset* (None: of all datasets), or "" when no cut did."""
    for row in cutflow:
        counts = row if dataset is None else row["datasets"].get(dataset, {})
        if counts.get("before") and not counts.get("after"):
            expr = "" if row["expr"] == row["cut"] else f" ({row['expr']})"
            n = counts["before"]
            return f"cut {row['cut']!r}{expr} keeps 0 of {n:,} events; loosen it (see the cut flow)"
    return ""


def _first_dataset(prep: Preprocessor, first: ChunkResult | None, bad: set[str]) -> str | None:
    """The first dataset (spec order) with a NaN/inf in *bad*: reads until it finds one."""
    if first is not None and any(first.nonfinite.get(k) for k in bad):
        return first.dataset
    for dataset in prep.spec.data.datasets:
        chunks = prep.chunks([dataset.name])
        try:
            if any(any(r.nonfinite.get(k) for k in bad) for r in chunks):
                return dataset.name
        finally:
            _close(chunks)
    return None


def _close(chunks: Iterator[ChunkResult]) -> None:
    close = getattr(chunks, "close", None)  # a generator: stops its background reader
    if close is not None:
        close()


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
