"""Benchmark: start-up overhead of the job sandbox per job (bwrap + privilege drop + seccomp).

Runs the same command ``--runs`` times (default 30; ``--smoke``: 3) each way, interleaved so
that drift on the machine hits all ways alike:

* ``plain``: a bare subprocess (the baseline, measured in this same run);
* ``sandbox``: through :func:`mlaas4hep.jobs.sandbox.wrap` (bwrap namespaces and mounts,
  ``setpriv`` to the slot uid when root, the seccomp filter);
* ``full``: ``sandbox`` plus what the executor adds per attempt: the input grant, a per-job
  cgroup created, joined (rlimits in the same ``preexec_fn``) and removed.

for two commands: ``python -c pass`` (the fixed cost) and ``mlaas4hep run --help`` (the job
entry point's imports). Prints median and p95 wall seconds and ratios against ``plain``
(``--json``: one JSON object as the last line).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlaas4hep.config import MLAAS4HEP_ARGV, ExecutorSettings, JobLimits
from mlaas4hep.jobs import cgroups
from mlaas4hep.jobs.limits import preexec
from mlaas4hep.jobs.sandbox import SandboxPlan, grant, probe, resolve, seccomp_pipe, wrap

COMMANDS = {
    "python_pass": [sys.executable, "-c", "pass"],
    "run_help": [*MLAAS4HEP_ARGV, "run", "--help"],
}


def plain(argv: list[str], out: Path) -> None:
    subprocess.run(argv, cwd=out, capture_output=True, check=True)


def sandboxed(argv: list[str], out: Path, *, full: bool = False) -> None:
    sandbox = resolve(ExecutorSettings(sandbox="bwrap"))
    limits = JobLimits()
    group = cgroups.create(f"bench-{time.monotonic_ns()}", limits) if full else None
    if full:
        grant(sandbox, 0, out, ())
    with seccomp_pipe() as fd:
        cmd = wrap(sandbox, argv, SandboxPlan(out), slot=0, seccomp_fd=fd)
        subprocess.run(
            cmd, cwd=out, capture_output=True, check=True, pass_fds=(fd,),
            preexec_fn=preexec(limits, own_uid=sandbox.drop,
                               cgroup=group.procs_files if group else ()),
        )  # fmt: skip
    if group is not None:
        group.remove()


def _stats(samples: list[float], base: list[float]) -> dict[str, float]:
    def p95(xs: list[float]) -> float:
        return sorted(xs)[max(0, round(0.95 * len(xs)) - 1)]

    med, tail = statistics.median(samples), p95(samples)
    return {
        "median_s": round(med, 4),
        "p95_s": round(tail, 4),
        "median_ratio": round(med / statistics.median(base), 2),
        "p95_ratio": round(tail / p95(base), 2),
        "overhead_median_ms": round(1000 * (med - statistics.median(base)), 1),
    }


def run(runs: int) -> dict[str, Any]:
    sandbox = probe(resolve(ExecutorSettings(sandbox="bwrap")))
    if not sandbox.ready:
        return {"skipped": sandbox.error}
    ways: dict[str, Callable[[list[str], Path], None]] = {
        "plain": plain,
        "sandbox": sandboxed,
        "full": lambda argv, out: sandboxed(argv, out, full=True),
    }
    result: dict[str, Any] = {"runs": runs, "sandbox": sandbox.describe()}
    with tempfile.TemporaryDirectory(prefix="mlaas4hep-bench-") as tmp:
        out = Path(tmp)
        grant(sandbox, 0, out, ())
        for name, argv in COMMANDS.items():
            times: dict[str, list[float]] = {way: [] for way in ways}
            for call in ways.values():  # warm the page cache
                call(argv, out)
            for _ in range(runs):
                for way, call in ways.items():
                    t0 = time.perf_counter()
                    call(argv, out)
                    times[way].append(time.perf_counter() - t0)
            result[name] = {
                "plain": {"median_s": round(statistics.median(times["plain"]), 4)},
                **{way: _stats(times[way], times["plain"]) for way in ("sandbox", "full")},
            }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--smoke", action="store_true", help="3 runs: a quick check")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args(argv)
    result = run(3 if args.smoke else args.runs)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
