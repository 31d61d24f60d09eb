"""Benchmark: first pass + preprocessing on a Dask cluster, 2 workers against 1 worker.

The generated NanoAOD-like sample (``mlaas4hep.data.samples``, ``--events`` per class) is
run through the example spec ``examples/tth-vs-qcd.yaml`` (defines, cuts, object
features, splits) with ``Preprocessor(spec, distributor=DaskDistributor(client))``: the
first pass (statistics, cut flow, counts) and then one full preprocessing pass whose
feature batches stream back to this process, as they do to a training job. Both clusters
are ``distributed.LocalCluster`` with worker *processes* of one thread each, started once;
runs alternate between them after a warm-up, and the best of ``--repeat`` counts.

Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which fixes glibc's
mmap threshold at 128 KiB: every multi-megabyte array of a chunk is then a fresh mmap
with its page faults, and the same per-partition code ran 2.5-4x slower in a worker than
in a plain process here. The benchmark unsets it (as deploy/dask/dask-worker.yaml does
for real workers); ``--keep-malloc-trim`` measures with Dask's default.

``speedup`` = events/s with 2 workers / events/s with 1 worker (target >= 1.6).
``local_events_per_s`` is the same work in this process without Dask (``threads=1``), for
the cost of distribution. ``--json`` prints one JSON object as the last line; ``--smoke``
uses a tiny sample.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dask
import yaml
from distributed import Client, LocalCluster

from mlaas4hep.data.samples import write_sample_set
from mlaas4hep.jobs.dask_map import DaskDistributor
from mlaas4hep.preprocess.partitioned import Distributor, plan
from mlaas4hep.preprocess.pipeline import Preprocessor
from mlaas4hep.spec import PipelineSpec

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tth-vs-qcd.yaml"


def make_spec(files: dict[str, Path], step: int) -> PipelineSpec:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["data"]["datasets"][0]["files"] = [str(files["signal"])]
    doc["data"]["datasets"][1]["files"] = [str(files["background"])]
    doc["data"]["step_size"] = step
    return PipelineSpec.model_validate(doc)


def one_run(spec: PipelineSpec, distributor: Distributor | None) -> tuple[float, int]:
    """Seconds for fit() + one pass over every batch; returns (seconds, events read)."""
    start = time.perf_counter()
    prep = Preprocessor(spec, distributor=distributor, threads=1)
    info = prep.fit()
    rows = sum(len(batch.X) for batch in prep.batches())
    elapsed = time.perf_counter() - start
    passed = sum(e["passed"] for e in info.events.values())
    if rows != passed:
        raise SystemExit(f"streamed {rows} events, the first pass counted {passed}")
    return elapsed, sum(e["read"] for e in info.events.values())


@contextlib.contextmanager
def cluster(workers: int) -> Iterator[Client]:
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            scheduler_kwargs={"dashboard": False},
        ) as lc,
        Client(lc, set_as_default=False) as client,
    ):
        client.wait_for_workers(workers)
        yield client


def best(fn: Callable[[], tuple[float, int]], times: list[float]) -> int:
    elapsed, events = fn()
    times.append(elapsed)
    return events


def run(events: int, step: int, repeat: int, workdir: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    files = write_sample_set(workdir, events, seed=7)
    generate_s = time.perf_counter() - t0
    spec = make_spec(files, step)
    local_t: list[float] = []
    t1: list[float] = []
    t2: list[float] = []
    with cluster(1) as one, cluster(2) as two:
        d1, d2 = DaskDistributor(one), DaskDistributor(two)
        one_run(spec, d1)  # warm-up: imports on the workers, page cache
        one_run(spec, d2)
        for _ in range(repeat):
            read = best(lambda: one_run(spec, d1), t1)
            best(lambda: one_run(spec, d2), t2)
            best(lambda: one_run(spec, None), local_t)
    eps1, eps2, eps_local = read / min(t1), read / min(t2), read / min(local_t)
    return {
        "speedup": round(eps2 / eps1, 3),
        "events_per_s_1_worker": round(eps1),
        "events_per_s_2_workers": round(eps2),
        "local_events_per_s": round(eps_local),
        "events": read,
        "partitions": len(plan(spec)),
        "step_size": step,
        "repeat": repeat,
        "cpus": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "generate_s": round(generate_s, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("--events", type=int, default=None, help="events per class")
    parser.add_argument("--step-size", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument(
        "--keep-malloc-trim", action="store_true", help="keep Dask's MALLOC_TRIM_THRESHOLD_"
    )
    args = parser.parse_args(argv)
    if not args.keep_malloc_trim:  # None unsets a variable of the workers' environment
        dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})
    events = args.events or (10_000 if args.smoke else 1_600_000)
    step = args.step_size or (2_500 if args.smoke else 50_000)
    repeat = args.repeat or (1 if args.smoke else 3)
    with tempfile.TemporaryDirectory(prefix="mlaas4hep-bench-scale-") as tmp:
        result = run(events, step, repeat, Path(tmp))
    result["malloc_trim_threshold"] = "dask default" if args.keep_malloc_trim else "unset"
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>24}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
