"""Benchmark of ``mlaas4hep apply`` against the bare work it cannot avoid.

A model of ``examples/tth-vs-qcd.yaml`` (one epoch: the graph is the same whatever the
training length) is trained with ``mlaas4hep run`` on a small sample; then, on two
generated files (``--events`` each) and with the same ``step_size``:

- ``apply``: ``mlaas4hep apply BUNDLE signal.root background.root --out DIR``, in this
  process: read + preprocess + ONNX + friend-tree writing + bookkeeping, every event;
- ``bare``: ``Preprocessor(spec).chunks()`` of the bundle's spec on the same files, each
  chunk's feature matrix fed to ONNX Runtime ``session.run``; nothing written;
- ``preprocess``: ``Preprocessor(spec).chunks()`` alone.

``ratio`` = apply events/s / bare events/s (target >= 0.85). Each side runs ``--repeat``
times alternately (files warm in the page cache); the best time counts. ``cpu_ratio``
compares CPU seconds (all threads) instead: the ratio to expect on a machine with no core
to spare. Then peak RSS (``VmHWM``): ``apply`` of a ~200 MB and a ~2 GB file
(``--small-mb`` / ``--large-mb``), each in a fresh process; ``rss_ratio`` = large / small
(target <= 1.1).
``--json`` prints one JSON object as the last line; ``--smoke`` uses tiny sizes.
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

import uproot
import yaml

from mlaas4hep.data.samples import write_sample, write_sample_set
from mlaas4hep.preprocess.pipeline import Preprocessor
from mlaas4hep.spec import PipelineSpec, load_spec, validate_spec

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "tth-vs-qcd.yaml"
# Bytes per signal event on disk (see bench/memory.py); used to size the RSS files.
BYTES_PER_EVENT = 140
MODEL_PREFIX = "tth_classifier_"  # the example's deploy name: its output columns


def cli(*argv: str) -> None:
    """Run ``mlaas4hep ARGV`` in this process (the timings then share one warm cache)."""
    from mlaas4hep.cli import main

    rc = main(list(argv))
    if rc != 0:
        raise SystemExit(f"mlaas4hep {' '.join(argv)} exited {rc}")


def train_bundle(workdir: Path, events: int) -> Path:
    """The example's model, trained one epoch on ``events`` events per class."""
    files = write_sample_set(workdir / "train", events, seed=3)
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["data"]["datasets"][0]["files"] = [str(files["signal"])]
    raw["data"]["datasets"][1]["files"] = [str(files["background"])]
    raw["train"]["epochs"] = 1
    spec = workdir / "spec.json"
    spec.write_text(json.dumps(raw))
    bundle = workdir / "bundle"
    cmd = [sys.executable, "-m", "mlaas4hep.cli", "run", str(spec), "--out", str(bundle)]
    subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800)
    return bundle


def bare_spec(bundle: Path, files: dict[str, Path], step: int) -> PipelineSpec:
    """The bundle's spec (its preprocessing) on the benchmark files."""
    raw = load_spec(bundle / "spec.yaml").model_dump(mode="json", exclude_none=True)
    raw["data"]["datasets"][0]["files"] = [str(files["signal"])]
    raw["data"]["datasets"][1]["files"] = [str(files["background"])]
    raw["data"]["step_size"] = step
    return validate_spec(raw)


def session(bundle: Path) -> Any:
    """An ONNX Runtime CPU session with the options ``mlaas4hep.apply`` uses."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(
        str(bundle / "model.onnx"), opts, providers=["CPUExecutionProvider"]
    )


def bare(spec: PipelineSpec, sess: Any) -> int:
    n = 0
    for r in Preprocessor(spec).chunks():
        if len(r.X):
            sess.run(["scores"], {"features": r.X})
        n += r.n_in
    return n


def preprocess_only(spec: PipelineSpec) -> int:
    return sum(r.n_in for r in Preprocessor(spec).chunks())


def apply(bundle: Path, files: dict[str, Path], out: Path, step: int) -> int:
    sources = [str(files["signal"]), str(files["background"])]
    cli("apply", str(bundle), *sources, "--out", str(out), "--step-size", str(step))
    written = 0
    for src in sources:
        with uproot.open(next(out.glob(Path(src).stem + ".*.friend.root"))) as f:
            written += f["Events"].num_entries
    return written


def write_only(friends: list[dict[str, Any]], out: Path, step: int) -> int:
    """The friend-tree writing of ``apply`` alone: the same entries, chunks and layout."""
    from mlaas4hep.data.friend import open_output

    n = 0
    for i, arrays in enumerate(friends):
        ids = {k: v for k, v in arrays.items() if not k.startswith(MODEL_PREFIX)}
        cols = {k: v for k, v in arrays.items() if k.startswith(MODEL_PREFIX)}
        dtypes = {k: v.dtype for k, v in ids.items()}
        with open_output(
            out / f"{i}.root", "root", tree="Events", ids=dtypes, columns=list(cols)
        ) as w:
            for start in range(0, len(ids["event"]), step):
                w.write({k: v[start : start + step] for k, v in ids.items()},
                        {k: v[start : start + step] for k, v in cols.items()})  # fmt: skip
                n += min(step, len(ids["event"]) - start)
    return n


def timed(fn: Any, *args: Any) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of the whole process, fn's result)."""
    t0, c0 = time.perf_counter(), time.process_time()
    n = fn(*args)
    return time.perf_counter() - t0, time.process_time() - c0, n


def throughput(bundle: Path, files: dict[str, Path], step: int, repeat: int) -> dict[str, Any]:
    spec = bare_spec(bundle, files, step)
    sess = session(bundle)
    out = files["signal"].parent / "friends"
    best: dict[str, list[float]] = {k: [float("inf"), float("inf")] for k in ("a", "b", "p")}
    counts: dict[str, int] = {}
    for _ in range(repeat):  # alternate so all see the same cache state
        for key, fn, fargs in (
            ("b", bare, (spec, sess)),
            ("a", apply, (bundle, files, out, step)),
            ("p", preprocess_only, (spec,)),
        ):
            wall, cpu, counts[key] = timed(fn, *fargs)
            best[key] = [min(best[key][0], wall), min(best[key][1], cpu)]
    assert counts["a"] == counts["b"] == counts["p"], counts
    n = counts["a"]
    friends = []
    for path in sorted(out.glob("*.friend.root")):
        with uproot.open(path) as f:
            friends.append(f["Events"].arrays(library="np"))
    (out / "again").mkdir()
    write_s = min(timed(write_only, friends, out / "again", step)[0] for _ in range(repeat))
    return {
        "events": n,
        "step_size": step,
        "apply_events_per_s": round(n / best["a"][0]),
        "bare_events_per_s": round(n / best["b"][0]),
        "preprocess_events_per_s": round(n / best["p"][0]),
        # the friend-tree writing alone (same entries and chunks), and its share of apply
        "write_events_per_s": round(n / write_s),
        "write_share": round(write_s / best["a"][0], 3),
        "ratio": round(best["b"][0] / best["a"][0], 3),
        "target": 0.85,
        "apply_cpu_s": round(best["a"][1], 3),
        "bare_cpu_s": round(best["b"][1], 3),
        "cpu_ratio": round(best["b"][1] / best["a"][1], 3),
    }


def child(bundle: str, source: str, out: str, step: int) -> None:
    """Apply the bundle to one file; print events, peak RSS and seconds as JSON."""
    start = time.perf_counter()
    cli("apply", bundle, source, "--out", out, "--step-size", str(step))
    seconds = time.perf_counter() - start
    with uproot.open(next(Path(out).glob("*.friend.root"))) as f:
        events = f["Events"].num_entries
    print(json.dumps({"events": events, "peak_rss_mb": peak_rss_kb() / 1024, "seconds": seconds}))


def peak_rss_kb() -> int:
    """This process's peak RSS in kB: ``VmHWM`` of its own memory map. Not ``ru_maxrss``:
    Linux carries that over ``fork`` + ``exec``, so a child of this (large) benchmark
    process would report at least the parent's size at the fork."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux


def peak_rss(
    bundle: Path, small_mb: float, large_mb: float, step: int, work: Path
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for size, mb in (("small", small_mb), ("large", large_mb)):
        events = max(1000, int(mb * 1e6 / BYTES_PER_EVENT))
        path = write_sample(work / f"{size}.root", "signal", events, seed=5)
        out = work / f"{size}-out"
        cmd = [sys.executable, __file__, "--child", str(bundle), str(path), str(out), str(step)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=3600)
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        result[size] = {
            "file_mb": round(path.stat().st_size / 1e6, 1),
            "events": got["events"],
            "peak_rss_mb": round(got["peak_rss_mb"], 1),
            "events_per_s": round(got["events"] / got["seconds"]),
        }
        path.unlink()
    result["rss_ratio"] = round(result["large"]["peak_rss_mb"] / result["small"]["peak_rss_mb"], 3)
    result["rss_target"] = 1.1
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=500_000, help="events per sample file")
    ap.add_argument("--train-events", type=int, default=20_000, help="per class, for the model")
    ap.add_argument("--step-size", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--small-mb", type=float, default=200.0)
    ap.add_argument("--large-mb", type=float, default=2000.0)
    ap.add_argument("--no-rss", action="store_true", help="skip the peak-RSS comparison")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    ap.add_argument("--child", nargs=4, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        bundle, source, out, step = args.child
        child(bundle, source, out, int(step))
        return 0
    if args.smoke:
        args.events, args.train_events, args.step_size, args.repeat = 20_000, 5_000, 8_000, 1
        args.small_mb, args.large_mb = 2.0, 20.0
    with tempfile.TemporaryDirectory(prefix="mlaas4hep-bench-apply-") as tmp:
        work = Path(tmp)
        bundle = train_bundle(work, args.train_events)
        files = write_sample_set(work / "data", args.events, seed=1)
        result: dict[str, Any] = {"benchmark": "apply"}
        result.update(throughput(bundle, files, args.step_size, args.repeat))
        if not args.no_rss:
            result["rss"] = peak_rss(bundle, args.small_mb, args.large_mb, args.step_size, work)
    if not args.json:
        for key, value in result.items():
            print(f"{key:>24}: {value}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
