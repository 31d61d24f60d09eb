"""Inference processes against ONNX Runtime threads: `serve --only inference` under wrk.

For each layout (``--inference-workers W`` x ``inference.intra_op_threads T``) the real
command is started and loaded with (small) V2 JSON requests of one row, 32 connections,
and (large) V2 binary requests of 4096 rows, 4 connections. Model: the MLP
42x128x128x128x64x64x1; the service's real token validation (local issuer). The
baseline is the default layout of one process with as many threads as cores (up to 4),
measured in the same run: ``*_ratio`` = layout / baseline. The layouts run side by side
and are measured in turns, ``--repeats`` times each (the median run is kept). Besides
throughput, each point records the service's CPU time per request and the cores it kept
busy (``cores``: its processes' CPU seconds / wall seconds), which a busy neighbour on a
shared machine disturbs far less than req/s. wrk runs one thread on the same machine.
``--json`` prints one JSON object as the last line; ``--smoke`` runs a second per point.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from mlaas4hep.config import MLAAS4HEP_ARGV
from mlaas4hep.loopback import free_port
from mlaas4hep.serve.samples import BENCH_LAYERS, write_sample_model

FEATURES = BENCH_LAYERS[0]
LOADS = {"small": (1, 32), "large": (4096, 4)}  # rows per request, connections


def _body(rows: int) -> tuple[bytes, dict[str, str]]:
    x = np.random.default_rng(1).normal(size=(rows, FEATURES)).astype(np.float32)
    if rows == 1:
        doc = {"inputs": [{"name": "features", "shape": [1, FEATURES], "datatype": "FP32",
                           "data": x.ravel().tolist()}]}  # fmt: skip
        return json.dumps(doc).encode(), {"Content-Type": "application/json"}
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "shape": [rows, FEATURES],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "score", "parameters": {"binary_data": True}}],
        }
    ).encode()
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }
    return header + x.tobytes(), headers


@contextmanager
def _service(work: Path, workers: int, threads: int) -> Iterator[tuple[str, psutil.Process]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLAAS4HEP_")}
    env |= {
        "MLAAS4HEP_DATA_DIR": str(work / "data"),
        "MLAAS4HEP_PORT": str(port),
        "MLAAS4HEP_INFERENCE__REPOSITORY": str(work / "models"),
        "MLAAS4HEP_INFERENCE__INTRA_OP_THREADS": str(threads),
    }
    argv = [*MLAAS4HEP_ARGV, "serve", "--only", "inference", "--inference-workers", str(workers)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve with {workers} workers did not start")
            time.sleep(0.1)
        time.sleep(1.0 if workers > 1 else 0.2)  # every worker up, not only the first
        yield url, psutil.Process(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


_LUA = """
local f = io.open("{body}", "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
{headers}
"""


def _cpu_s(proc: psutil.Process) -> float:
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        times = p.cpu_times()
        total += times.user + times.system
    return total


def _measure(
    server: tuple[str, psutil.Process], rows: int, conns: int, token: str, seconds: int, work: Path
) -> dict[str, float]:
    url, proc = server
    cpu, start = _cpu_s(proc), time.monotonic()
    point = _wrk(url, rows, conns, token, seconds, work)
    cpu, wall = _cpu_s(proc) - cpu, time.monotonic() - start
    point["cores"] = round(cpu / wall, 2)
    point["cpu_us_per_request"] = round(cpu / (point["rps"] * wall) * 1e6)
    return point


def _wrk(url: str, rows: int, conns: int, token: str, seconds: int, work: Path) -> dict[str, float]:
    body, headers = _body(rows)
    headers["Authorization"] = f"Bearer {token}"
    (work / "body.bin").write_bytes(body)
    lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    script = work / "post.lua"
    script.write_text(_LUA.format(body=work / "body.bin", headers=lines))
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    if re.search(r"Non-2xx or 3xx responses|Socket errors", out):
        raise RuntimeError(f"wrk saw failed requests:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    assert p99 is not None, out
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)]
    return {
        "rps": round(rps, 1),
        "rows_per_s": round(rps * rows),
        "p99_ms": float(p99.group(1)) * scale,
    }


def run(smoke: bool, repeats: int) -> dict[str, Any]:
    from mlaas4hep.auth.local_issuer import LocalIssuer

    cores = os.cpu_count() or 1
    layouts = [(1, min(4, cores)), (cores, 1), (1, 1)]
    seconds = 1 if smoke else 4
    result: dict[str, Any] = {"cores": cores, "seconds": seconds, "repeats": repeats}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        write_sample_model(work / "models" / "mlp" / "1", BENCH_LAYERS, seed=1)
        token = LocalIssuer(work / "data").mint("bench", ("mlaas.infer", "storage.read:/models"))
        # All layouts run at once (an idle one costs nothing) and are measured in turns,
        # so that a busy neighbour on a shared machine hits every layout alike.
        servers = {f"w{w}_t{t}": stack.enter_context(_service(work, w, t)) for w, t in layouts}
        urls = {name: (url + "/v2/models/mlp/infer", proc) for name, (url, proc) in servers.items()}
        runs: dict[str, list[dict[str, float]]] = {}
        for load, (rows, conns) in LOADS.items():
            for url, _proc in urls.values():
                _wrk(url, rows, conns, token, 1, work)  # warm up every worker
            for _ in range(repeats):
                for name, server in urls.items():
                    runs.setdefault(f"{load}_{name}", []).append(
                        _measure(server, rows, conns, token, seconds, work)
                    )
    for key, points in runs.items():  # the median run by throughput
        result[key] = sorted(points, key=lambda r: r["rps"])[len(points) // 2]
        result[key]["rps_all"] = [r["rps"] for r in points]
    base = f"w1_t{min(4, cores)}"
    for load in LOADS:
        for workers, threads in layouts:
            name = f"w{workers}_t{threads}"
            ratio = result[f"{load}_{name}"]["rps"] / result[f"{load}_{base}"]["rps"]
            result[f"{load}_{name}_ratio"] = round(ratio, 2)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="runs per point (median kept)")
    args = parser.parse_args()
    result = run(args.smoke, 1 if args.smoke else args.repeats)
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
