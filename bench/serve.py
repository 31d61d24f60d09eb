"""Benchmark of the inference service with a real load generator (wrk) on loopback.

(a) TFaaS JSON, one row per request, 64 connections, auth enabled (real token
    validation), against a bare FastAPI + ONNX Runtime endpoint serving the same model,
    started by this script in the same run: ``json_ratio`` = ours / bare req/s (target
    >= 0.75).
(b) V2 binary requests of 4096 rows: rows/s against ONNX Runtime called in-process on the
    same batches with the same session options: ``binary_ratio`` (target >= 0.5).

Both servers run as one uvicorn process each (uvloop, httptools), one at a time; wrk
uses one thread. Model: the MLP 42x128x128x128x64x64x1. ``--json`` prints one JSON object
as the last line; ``--smoke`` runs a few seconds only (CI checks that it still works).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi import Request  # module level: FastAPI resolves route annotations here
from fastapi.responses import JSONResponse

from mlaas4hep.auth.principal import Principal
from mlaas4hep.loopback import free_port
from mlaas4hep.serve.runtime import session_options
from mlaas4hep.serve.samples import BENCH_LAYERS, write_sample_model

ROWS = 4096
N_FEATURES = BENCH_LAYERS[0]


# ---- the servers (run as subprocesses of this script) ---------------------------------


def _auth(data_dir: Path) -> tuple[Callable[..., Principal], Callable[..., bool], str, str]:
    """The service's real authenticator (local issuer, ES256) and a scope policy."""
    from mlaas4hep.auth.factory import create_authenticator
    from mlaas4hep.auth.policy import INFERENCE_SCOPE, has_scope, model_scope

    setup = create_authenticator({"local_issuer": True}, data_dir=data_dir, listen_host="127.0.0.1")
    assert setup.local_issuer is not None
    token = setup.local_issuer.mint("bench", ["storage.read:/models/mlp"])

    def authorize(principal: Principal, action: str, model: str) -> bool:
        if action == "infer" and has_scope(principal, INFERENCE_SCOPE):
            return True
        scope_action = "read" if action in ("infer", "read") else action
        return has_scope(principal, model_scope(scope_action, model))

    return (
        setup.authenticator.authenticate,
        authorize,
        token,
        "mlaas4hep.auth (local issuer, ES256)",
    )


def serve_ours(port: int, repo: Path, data_dir: Path) -> None:
    import uvicorn

    from mlaas4hep.serve.app import create_inference_app
    from mlaas4hep.serve.settings import InferenceSettings

    authenticate, authorize, _token, _kind = _auth(data_dir)
    settings = InferenceSettings(repository=repo, poll_interval_s=0)
    app = create_inference_app(settings, authenticate=authenticate, authorize=authorize)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


def serve_bare(port: int, model: Path, threads: int) -> None:
    """What one would write without this project: FastAPI + ORT, no auth, no batching."""
    import onnxruntime as ort
    import uvicorn
    from fastapi import FastAPI

    session = ort.InferenceSession(str(model), session_options(threads))
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/json")
    async def predict(request: Request) -> JSONResponse:
        body = await request.json()
        x = np.asarray(body["values"], dtype=np.float32).reshape(1, -1)
        return JSONResponse(session.run(None, {"features": x})[0][0].tolist())

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


# ---- driving them ------------------------------------------------------------------------


@contextmanager
def _server(args: list[str], health: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, *args, "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + health, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server {args[0]} did not start")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


_LUA = """
local f = io.open("{body}", "rb")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
{headers}
"""


def _wrk(
    url: str, body: bytes, headers: dict[str, str], conns: int, seconds: float, work: Path
) -> dict[str, float]:
    body_file = work / f"body-{len(body)}.bin"
    body_file.write_bytes(body)
    lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    script = work / "post.lua"
    script.write_text(_LUA.format(body=body_file, headers=lines))
    cmd = [
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(
        cmd, capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    if bad or errors:
        raise RuntimeError(f"wrk saw failed requests:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "p50_ms": _percentile(out, "50%"), "p99_ms": _percentile(out, "99%")}


def _percentile(out: str, which: str) -> float:
    match = re.search(rf"^\s+{which}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no {which} latency in wrk output:\n{out}")
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[match.group(2)]
    return round(float(match.group(1)) * scale, 3)


def _in_process_rows_per_s(model: Path, threads: int, seconds: float) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), session_options(threads))
    x = np.random.default_rng(0).normal(size=(ROWS, N_FEATURES)).astype(np.float32)
    session.run(None, {"features": x})
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, {"features": x})
        count += 1
    return count * ROWS / (time.perf_counter() - start)


def _v2_body(rows: int) -> tuple[bytes, int]:
    x = np.random.default_rng(1).normal(size=(rows, N_FEATURES)).astype(np.float32)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "shape": [rows, N_FEATURES],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "score", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return header + x.tobytes(), len(header)


def run(smoke: bool) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("bench/serve.py needs wrk: apt-get install -y wrk")
    # The machine is shared: measure in alternating rounds and keep each side's best, so a
    # burst of foreign load does not land on one side only.
    rounds, seconds = (1, 2.0) if smoke else (3, 8.0)
    threads = max(1, min(4, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        work = Path(tmp)
        model = write_sample_model(work / "repo" / "mlp" / "1") / "model.onnx"
        _authenticate, _authorize, token, auth_kind = _auth(work / "data")
        auth = {"Authorization": f"Bearer {token}"}
        row = np.random.default_rng(2).normal(size=N_FEATURES).astype(np.float32).tolist()
        keys = [f"f{i}" for i in range(N_FEATURES)]
        json_body = json.dumps({"keys": keys, "values": row, "model": "mlp"}).encode()
        body, header_len = _v2_body(ROWS)
        v2_headers = {**auth, "Inference-Header-Content-Length": str(header_len)}
        ours_args = ["--serve-ours", "--repo", str(work / "repo"), "--data", str(work / "data")]
        bare_args = ["--serve-bare", "--model", str(model), "--threads", str(threads)]
        with (
            _server(bare_args, "/health") as bare_url,
            _server(ours_args, "/v2/health/ready") as url,
        ):
            bare_json, ours_json, ours_bin, in_process = [], [], [], []
            _wrk(bare_url + "/json", json_body, {}, 64, 1, work)  # warm-ups
            _wrk(url + "/json", json_body, auth, 64, 1, work)
            _wrk(url + "/v2/models/mlp/infer", body, v2_headers, 4, 1, work)
            for _ in range(rounds):
                bare_json.append(_wrk(bare_url + "/json", json_body, {}, 64, seconds, work))
                ours_json.append(_wrk(url + "/json", json_body, auth, 64, seconds, work))
                ours_bin.append(
                    _wrk(url + "/v2/models/mlp/infer", body, v2_headers, 4, seconds, work)
                )
                in_process.append(_in_process_rows_per_s(model, threads, seconds / 2))
    bare, ours, binary = (max(r, key=lambda m: m["rps"]) for r in (bare_json, ours_json, ours_bin))
    binary_rows = binary["rps"] * ROWS
    best_in_process = max(in_process)
    return {
        "benchmark": "serve",
        "smoke": smoke,
        "model": "x".join(map(str, BENCH_LAYERS)),
        "cores": os.cpu_count(),
        "rounds": rounds,
        "seconds_per_run": seconds,
        "auth": auth_kind,
        "json_ratio": round(ours["rps"] / bare["rps"], 3),
        "json_rps": round(ours["rps"], 1),
        "json_p50_ms": ours["p50_ms"],
        "json_p99_ms": ours["p99_ms"],
        "bare_rps": round(bare["rps"], 1),
        "bare_p50_ms": bare["p50_ms"],
        "bare_p99_ms": bare["p99_ms"],
        "binary_ratio": round(binary_rows / best_in_process, 3),
        "binary_rows_per_s": round(binary_rows),
        "binary_p50_ms": binary["p50_ms"],
        "binary_p99_ms": binary["p99_ms"],
        "in_process_rows_per_s": round(best_in_process),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument("--smoke", action="store_true", help="a few seconds only (CI)")
    parser.add_argument("--serve-ours", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--repo", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_ours:
        serve_ours(args.port, args.repo, args.data)
        return 0
    if args.serve_bare:
        serve_bare(args.port, args.model, args.threads)
        return 0
    result = run(args.smoke)
    if not args.json:
        for key, value in result.items():
            print(f"{key:>24}: {value}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
