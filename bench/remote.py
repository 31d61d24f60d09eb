"""Benchmark: reading the generated sample via ``root://`` on loopback against the local file.

One generated NanoAOD-like file (``--events``, default 2,000,000) is served by a real XRootD
origin and a forwarding proxy (Debian ``xrootd`` with the configs of ``deploy/xrootd/``),
both on 127.0.0.1. The project's ``stream`` reads the same flat and jagged branches with
the same integer ``step_size`` three ways, in one run:

- local: the file on disk (the baseline);
- remote: ``root://127.0.0.1:PORT//bench.root`` (the origin);
- proxy: the same URL through the forwarding proxy (``data.xrootd_proxy``).

For scale, bare ``uproot.iterate`` reads the local file and the origin's URL too
(``bare_uproot_remote_ratio``): what a plain sequential reader gets from the same server.
Remote reads keep ``--readahead`` chunks in flight (``data.remote.readahead``, default 1)
while one is decompressed; ``--readahead 0`` shows the sequential read.

Each way runs ``--repeat`` times, in turn, after one warm-up read each (page cache,
connections), and the best time counts. ``remote_ratio`` and ``proxy_ratio`` are remote
(proxy) events/s over local events/s; target >= 0.7 for both. Loopback has no network
latency, so this measures our overhead and the servers', not a WAN. ``--json`` prints one
JSON object as the last line; ``--smoke`` uses a tiny file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uproot

from mlaas4hep.data.samples import write_sample
from mlaas4hep.data.stream import stream
from mlaas4hep.loopback import free_port, give_to_xrootd, listening, xrootd_command
from mlaas4hep.spec import DataSpec, RemoteSpec

BRANCHES = ["event", "MET_pt", "nJet", "Jet_pt", "Jet_eta", "Jet_btagDeepB", "Muon_pt"]
DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "xrootd"


@contextmanager
def xrootd(name: str, config: str, base: Path, env: dict[str, str]) -> Iterator[str]:
    """Run ``deploy/xrootd/<config>`` on a free loopback port; yields ``root://host:port``."""
    port, admin = free_port(), base / name
    admin.mkdir(mode=0o755)
    try:
        cmd = xrootd_command(DEPLOY / config, name, admin / "xrootd.log")
    except (FileNotFoundError, LookupError) as exc:
        raise SystemExit(str(exc)) from exc
    give_to_xrootd(admin)
    full_env = os.environ | env | {"XRD_PORT": str(port), "XRD_ADMIN": str(admin)}
    proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not listening(port, proc):
            raise SystemExit(f"{name} did not start; see {admin}")
        yield f"root://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def read(path: str, step: int, proxy: str | None, readahead: int) -> int:
    spec = DataSpec(
        tree="Events",
        datasets=[{"name": "bench", "files": [path], "label": 1}],
        step_size=step,
        xrootd_proxy=proxy,
        remote=RemoteSpec(readahead=readahead),
    )
    return sum(len(chunk.arrays) for chunk in stream(spec, BRANCHES))


def read_bare(path: str, step: int, proxy: str | None = None) -> int:
    """Bare ``uproot.iterate`` (no spec, retries or checks): what the server alone allows."""
    wanted = frozenset(BRANCHES)
    options = {"timeout": 60} if path.startswith("root://") else {}
    n = 0
    with uproot.open(path, **options) as file:
        for arrays in file["Events"].iterate(filter_name=wanted.__contains__, step_size=step):
            n += len(arrays)
    return n


def timed(path: str, step: int, expect: int, proxy: str | None, readahead: int | None) -> float:
    """Seconds to read *path*: ours with *readahead*, or bare uproot when that is None."""
    start = time.perf_counter()
    n = read_bare(path, step) if readahead is None else read(path, step, proxy, readahead)
    elapsed = time.perf_counter() - start
    if n != expect:
        raise SystemExit(f"read {n} events from {path}, expected {expect}")
    return elapsed


def run(events: int, step: int, repeat: int, readahead: int, base: Path) -> dict[str, Any]:
    data = base / "data"
    data.mkdir(mode=0o755)
    t0 = time.perf_counter()
    local = write_sample(data / "bench.root", "signal", events, seed=11)
    local.chmod(0o644)
    generate_s = time.perf_counter() - t0
    with (
        xrootd("origin", "origin.cfg", base, {"XRD_DATA": str(data)}) as origin,
        xrootd("proxy", "proxy.cfg", base, {"XRD_PERMIT": "127.0.0.1"}) as proxy,
    ):
        url = f"{origin}//bench.root"
        ways: dict[str, tuple[str, str | None, int | None]] = {
            "local": (str(local), None, readahead),
            "remote": (url, None, readahead),
            "proxy": (url, proxy, readahead),
            "bare_local": (str(local), None, None),
            "bare_remote": (url, None, None),
        }
        for path, via, ahead in ways.values():  # warm-up: page cache, connections, imports
            timed(path, step, events, via, ahead)
        best = {name: float("inf") for name in ways}
        for _ in range(repeat):
            for name, (path, via, ahead) in ways.items():
                best[name] = min(best[name], timed(path, step, events, via, ahead))
    eps = {name: events / seconds for name, seconds in best.items()}
    return {
        "remote_ratio": round(eps["remote"] / eps["local"], 3),
        "proxy_ratio": round(eps["proxy"] / eps["local"], 3),
        # The same ratio for bare uproot.iterate: how much of the gap is the server's.
        "bare_uproot_remote_ratio": round(eps["bare_remote"] / eps["bare_local"], 3),
        "local_events_per_s": round(eps["local"]),
        "remote_events_per_s": round(eps["remote"]),
        "proxy_events_per_s": round(eps["proxy"]),
        "events": events,
        "step_size": step,
        "readahead": readahead,
        "branches": BRANCHES,
        "file_mb": round(local.stat().st_size / 1e6, 1),
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
    parser.add_argument(
        "--readahead", type=int, default=RemoteSpec().readahead, help="data.remote.readahead"
    )
    args = parser.parse_args(argv)
    events = args.events or (20_000 if args.smoke else 2_000_000)
    step = args.step_size or (5_000 if args.smoke else 200_000)
    repeat = args.repeat or (1 if args.smoke else 5)
    # Not TemporaryDirectory's default 0700: the server user must read the file.
    base = Path(tempfile.mkdtemp(prefix="mlaas4hep-bench-remote-"))
    try:
        base.chmod(0o755)
        result = run(events, step, repeat, args.readahead, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>22}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
