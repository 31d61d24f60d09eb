"""Benchmark: peak memory of streaming a ~200 MB file vs a ~2 GB file.

Generates two NanoAOD-like files (``--small-mb``/``--large-mb``, default 200 and 2000 MB;
``--smoke``: 4 and 40 MB) in a temporary directory, then streams every event of each, with
the same branches and the same integer ``step_size``, in a separate fresh process, which
reports its peak resident set size (``VmHWM`` of its own memory map). Bounded memory
means the ratio stays near 1 whatever the file size: ``rss_ratio`` = peak RSS (large) /
peak RSS (small), target <= 1.1. ``--json`` prints one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BRANCHES = ["event", "MET_pt", "nJet", "Jet_pt", "Jet_eta", "Jet_phi", "Jet_btagDeepB",
            "Muon_pt", "Electron_pt"]  # fmt: skip
# Bytes per signal event on disk with the default ZSTD level (measured; used to size files).
BYTES_PER_EVENT = 140


def child(path: str, step: int) -> None:
    """Stream the whole file and print events read and peak RSS as JSON."""
    from mlaas4hep.data.stream import stream
    from mlaas4hep.spec import DataSpec

    spec = DataSpec(tree="Events", datasets=[{"name": "m", "files": [path]}], step_size=step)
    start = time.perf_counter()
    events = 0
    for chunk in stream(spec, BRANCHES):
        events += len(chunk)
    # VmHWM, this memory map's own peak: ru_maxrss carries the forking parent's (larger)
    # peak over fork + exec, which made both files read the same.
    hwm = [
        ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM")
    ]
    peak_kb = int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds = time.perf_counter() - start
    print(json.dumps({"events": events, "peak_rss_mb": peak_kb / 1024, "seconds": seconds}))


def measure(path: Path, step: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", str(path), "--step-size", str(step)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def make_file(path: Path, megabytes: float) -> tuple[Path, int]:
    from mlaas4hep.data.samples import write_sample

    events = max(1000, int(megabytes * 1e6 / BYTES_PER_EVENT))
    return write_sample(path, "signal", events, seed=5), events


def run(small_mb: float, large_mb: float, step: int, workdir: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    small, _ = make_file(workdir / "small.root", small_mb)
    large, _ = make_file(workdir / "large.root", large_mb)
    generate_s = time.perf_counter() - t0
    rs, rl = measure(small, step), measure(large, step)
    return {
        "rss_ratio": round(rl["peak_rss_mb"] / rs["peak_rss_mb"], 3),
        "small": {"file_mb": round(small.stat().st_size / 1e6, 1), **_round(rs)},
        "large": {"file_mb": round(large.stat().st_size / 1e6, 1), **_round(rl)},
        "step_size": step,
        "branches": BRANCHES,
        "generate_s": round(generate_s, 1),
    }


def _round(d: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in d.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("--small-mb", type=float, default=None)
    parser.add_argument("--large-mb", type=float, default=None)
    parser.add_argument("--step-size", type=int, default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    step = args.step_size or (10_000 if args.smoke else 200_000)
    if args.child:
        child(args.child, step)
        return 0
    small_mb = args.small_mb or (4.0 if args.smoke else 200.0)
    large_mb = args.large_mb or (40.0 if args.smoke else 2000.0)
    with tempfile.TemporaryDirectory(prefix="mlaas4hep-bench-memory-") as tmp:
        result = run(small_mb, large_mb, step, Path(tmp))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>12}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
