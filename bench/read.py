"""Benchmark: the project's stream against bare ``uproot.iterate`` on the same file.

Both sides read the same flat and jagged branches of one generated NanoAOD-like file
(``--events``, default 2,000,000) into awkward arrays with the same integer ``step_size``:

- baseline: ``uproot.iterate("FILE:Events", filter_name=BRANCHES, step_size=N)``;
- ours: ``mlaas4hep.data.stream.stream(spec, BRANCHES)`` (spec resolution, tree choice,
  branch checks, labelled ``Chunk`` objects).

Each side runs ``--repeat`` times, alternately, after one warm-up read (file in the page
cache), and the best time counts. ``ratio`` = our events/s / baseline events/s (target
>= 0.9). ``--json`` prints one JSON object as the last line; ``--smoke`` uses a tiny file.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uproot

from mlaas4hep.data.samples import write_sample
from mlaas4hep.data.stream import stream
from mlaas4hep.spec import DataSpec

BRANCHES = ["event", "MET_pt", "nJet", "Jet_pt", "Jet_eta", "Jet_btagDeepB", "Muon_pt"]


def read_baseline(path: Path, step: int) -> int:
    n = 0
    for arrays in uproot.iterate(f"{path}:Events", filter_name=BRANCHES, step_size=step):
        n += len(arrays)
    return n


def read_ours(path: Path, step: int) -> int:
    spec = DataSpec(
        tree="Events",
        datasets=[{"name": "bench", "files": [str(path)], "label": 1}],
        step_size=step,
    )
    return sum(len(chunk.arrays) for chunk in stream(spec, BRANCHES))


def best_time(fn: Callable[[Path, int], int], path: Path, step: int, expect: int) -> float:
    start = time.perf_counter()
    n = fn(path, step)
    elapsed = time.perf_counter() - start
    if n != expect:
        raise SystemExit(f"{fn.__name__} read {n} events, expected {expect}")
    return elapsed


def run(events: int, step: int, repeat: int, workdir: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    path = write_sample(workdir / "bench_read.root", "signal", events, seed=11)
    generate_s = time.perf_counter() - t0
    read_baseline(path, step)  # warm-up: page cache, imports, numba-free code paths
    base, ours = [], []
    for _ in range(repeat):
        base.append(best_time(read_baseline, path, step, events))
        ours.append(best_time(read_ours, path, step, events))
    eps, base_eps = events / min(ours), events / min(base)
    return {
        "ratio": round(eps / base_eps, 3),
        "events_per_s": round(eps),
        "baseline_events_per_s": round(base_eps),
        "events": events,
        "step_size": step,
        "branches": BRANCHES,
        "file_mb": round(path.stat().st_size / 1e6, 1),
        "repeat": repeat,
        "generate_s": round(generate_s, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--step-size", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=None)
    args = parser.parse_args(argv)
    events = args.events or (20_000 if args.smoke else 2_000_000)
    step = args.step_size or (5_000 if args.smoke else 200_000)
    repeat = args.repeat or (1 if args.smoke else 5)
    with tempfile.TemporaryDirectory(prefix="mlaas4hep-bench-read-") as tmp:
        result = run(events, step, repeat, Path(tmp))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>22}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
