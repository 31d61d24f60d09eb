"""Benchmark of the inference service with a real load generator (wrk) on loopback.

(a) TFaaS JSON, one row per request, 64 connections, auth enabled (real token
    validation), against a bare FastAPI + ONNX Runtime endpoint serving the same model,
    started by this script in the same run: ``json_ratio`` = ours / bare req/s (target
    >= 0.75).
(b) V2 binary requests of 4096 rows: rows/s against ONNX Runtime called in-process on the
    same batches with the same session options: ``binary_ratio`` (target >= 0.5).
(c) V2 JSON, one row per request (what V2 HTTP clients send), against the same bare
    server: ``v2_json_ratio`` (target >= 0.75, p99 <= 20 ms).
(d) V2 over gRPC (``inference.GRPCInferenceService/ModelInfer``), driven by ``h2load``
    (nghttp2) with a pre-framed request body: one row per request against the bare server
    (``grpc_ratio``, target >= 0.75) and 4096 rows per request against in-process ONNX
    Runtime (``grpc_binary_ratio``, target >= 0.7). h2load counts HTTP/2 answers, and a
    gRPC error is an HTTP 200 with a ``grpc-status`` trailer, so the server's own metrics
    (``outcome="ok"`` of protocol ``grpc``) must account for every request counted.
    The floor of grpcio itself is measured in the same run: a ``grpc.aio`` server that
    answers every ``ModelInfer`` with a prebuilt response (no auth, no model):
    ``grpc_floor_ratio`` = that server's req/s / the bare server's, and ``grpc_of_floor`` =
    ours / that floor (what our auth, decoding, model run and encoding cost on top).
(e) V2 binary requests of 256 rows from 16 connections, which the dynamic batcher
    coalesces, against in-process ONNX Runtime on 256-row batches:
    ``medium_batch_ratio`` (rows/s; batching should bring it where large batches are).

Both servers run as one uvicorn process each (uvloop, httptools), serving at the same
time, measured one after the other; wrk and h2load use one thread each. Model: the MLP
42x128x128x128x64x64x1. ``--json`` prints one JSON object as the last line; ``--smoke``
runs a few seconds only (CI checks that it still works). ``--setting KEY=VALUE`` overrides
one of our server's ``InferenceSettings`` (e.g. ``inline_budget_us=50``) to compare
tunings; the overrides are part of the output.
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
MEDIUM_ROWS, MEDIUM_CONNECTIONS = 256, 16
N_FEATURES = BENCH_LAYERS[0]


# ---- the servers (run as subprocesses of this script) ---------------------------------


def _auth(data_dir: Path) -> tuple[Callable[..., Principal], Callable[..., bool], str, str]:
    """The service's real authenticator (local issuer, ES256) and a scope policy."""
    from mlaas4hep.auth.factory import create_authenticator
    from mlaas4hep.auth.policy import INFERENCE_SCOPE, METRICS_SCOPE, has_scope, model_scope

    setup = create_authenticator({"local_issuer": True}, data_dir=data_dir, listen_host="127.0.0.1")
    assert setup.local_issuer is not None
    token = setup.local_issuer.mint("bench", ["storage.read:/models/mlp", METRICS_SCOPE])

    def authorize(principal: Principal, action: str, model: str) -> bool:
        if action == "metrics":
            return has_scope(principal, METRICS_SCOPE)
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


def serve_ours(
    port: int, repo: Path, data_dir: Path, grpc_port: int | None, tuning: dict[str, Any]
) -> None:
    import uvicorn

    from mlaas4hep.serve.app import create_inference_app
    from mlaas4hep.serve.settings import BatchPolicy, InferenceSettings

    if isinstance(tuning.get("batching"), dict):
        tuning = {**tuning, "batching": BatchPolicy(**tuning["batching"])}
    authenticate, authorize, _token, _kind = _auth(data_dir)
    settings = InferenceSettings(repository=repo, poll_interval_s=0, grpc_port=grpc_port, **tuning)
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


def serve_grpc_floor(port: int, grpc_port: int) -> None:
    """grpcio's own floor: a ``grpc.aio`` server (uvloop, as ours) whose ``ModelInfer``
    returns a prebuilt one-row answer, no auth, no model; plus a health route for _server."""
    import asyncio

    import grpc
    import uvicorn
    import uvloop
    from fastapi import FastAPI
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc

    answer = pb.ModelInferResponse(model_name="mlp", model_version="1")
    answer.outputs.add(name="score", datatype="FP32", shape=[1, 1])
    answer.raw_output_contents.append(np.zeros(1, np.float32).tobytes())

    class Floor(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
        async def ModelInfer(self, request: Any, context: Any) -> Any:
            return answer

    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    async def main() -> None:
        server = grpc.aio.server()
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Floor(), server)
        server.add_insecure_port(f"127.0.0.1:{grpc_port}")
        await server.start()
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        await uvicorn.Server(config).serve()

    uvloop.install()
    asyncio.run(main())


# ---- driving them ------------------------------------------------------------------------


@contextmanager
def _server(args: list[str], health: str) -> Iterator[tuple[str, int]]:
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
        yield url, proc.pid
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
    done = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {
        "rps": rps,
        "done": done,
        "p50_ms": _percentile(out, "50%"),
        "p99_ms": _percentile(out, "99%"),
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process *pid* so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(out: str, which: str) -> float:
    match = re.search(rf"^\s+{which}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no {which} latency in wrk output:\n{out}")
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[match.group(2)]
    return round(float(match.group(1)) * scale, 3)


def _h2load(
    target: str, message: bytes, token: str, streams: int, seconds: float, work: Path
) -> dict[str, float]:
    """gRPC ``ModelInfer`` calls of one pre-framed *message* for *seconds*."""
    frame = work / f"grpc-{len(message)}.bin"
    frame.write_bytes(b"\x00" + len(message).to_bytes(4, "big") + message)
    cmd = [
        "h2load", "-t1", "-c1", f"-m{streams}", f"-D{max(1, round(seconds))}",
        "-d", str(frame),
        "-H", "content-type: application/grpc", "-H", "te: trailers",
        "-H", f"authorization: Bearer {token}",
        f"http://{target}/inference.GRPCInferenceService/ModelInfer",
    ]  # fmt: skip
    out = subprocess.run(
        cmd, capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    rps = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    if done is None or rps is None or done.group(1) != done.group(2) or done.group(1) == "0":
        raise RuntimeError(f"h2load saw failed requests:\n{out}")
    return {"rps": float(rps.group(1)), "done": float(done.group(1)), **_h2_latency(out)}


def _h2_latency(out: str) -> dict[str, float]:
    """Mean and max request time (h2load prints no percentiles)."""
    match = re.search(
        r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", out
    )
    if match is None:
        return {}
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    return {
        "mean_ms": round(float(match.group(5)) * scale[match.group(6)], 3),
        "max_ms": round(float(match.group(3)) * scale[match.group(4)], 3),
    }


def _grpc_message(rows: int) -> bytes:
    """A serialised ``ModelInferRequest`` with the rows as ``raw_input_contents``."""
    from tritonclient.grpc import service_pb2 as pb

    x = np.random.default_rng(1).normal(size=(rows, N_FEATURES)).astype(np.float32)
    request = pb.ModelInferRequest(model_name="mlp")
    request.inputs.add(name="features", datatype="FP32", shape=[rows, N_FEATURES])
    request.raw_input_contents.append(x.tobytes())
    return bytes(request.SerializeToString())


def _grpc_outcomes(url: str, token: str) -> dict[str, float]:
    """The server's own count of gRPC requests per outcome (``/metrics``)."""
    text = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {token}"}).text
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("mlaas4hep_inference_requests_total{") and 'protocol="grpc"' in line:
            outcome = re.search(r'outcome="([^"]+)"', line)
            if outcome:
                counts[outcome.group(1)] = counts.get(outcome.group(1), 0) + float(line.split()[-1])
    return counts


def _in_process_rows_per_s(
    model: Path, threads: int, seconds: float, rows: int = ROWS
) -> tuple[float, float]:
    """Rows/s of ``session.run`` on *rows*-row batches, and its CPU microseconds per row."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), session_options(threads))
    x = np.random.default_rng(0).normal(size=(rows, N_FEATURES)).astype(np.float32)
    session.run(None, {"features": x})
    count, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        session.run(None, {"features": x})
        count += 1
    cpu_us_per_row = (time.process_time() - cpu) / (count * rows) * 1e6
    return count * rows / (time.perf_counter() - start), cpu_us_per_row


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


def _v2_json_body() -> bytes:
    row = np.random.default_rng(2).normal(size=N_FEATURES).astype(np.float32).tolist()
    doc = {"inputs": [{"name": "features", "shape": [1, N_FEATURES], "datatype": "FP32",
                       "data": row}]}  # fmt: skip
    return json.dumps(doc).encode()


def _tuning(items: list[str]) -> dict[str, Any]:
    """``--setting KEY=VALUE`` pairs as InferenceSettings overrides (numbers parsed)."""
    tuning: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--setting wants KEY=VALUE, got {item!r}")
        tuning[key] = json.loads(value)
    return tuning


def run(smoke: bool, tuning: dict[str, Any]) -> dict[str, Any]:
    for tool, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench/serve.py needs {tool}: apt-get install -y {package}")
    # The machine is shared: measure in alternating rounds and keep each side's best, so a
    # burst of foreign load does not land on one side only.
    rounds, seconds = (1, 2.0) if smoke else (3, 8.0)
    threads = max(1, min(4, os.cpu_count() or 1))
    runs: dict[str, list[dict[str, float]]] = {}

    def measure(name: str, pid: int, load: Callable[[], dict[str, float]]) -> None:
        """One run of *load*, with the server's CPU seconds per request it answered."""
        before = _cpu_seconds(pid)
        result = load()
        spent = _cpu_seconds(pid) - before
        result["cpu_us"] = round(spent / max(result["done"], 1.0) * 1e6, 1)
        runs.setdefault(name, []).append(result)

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
        v2_json = _v2_json_body()
        medium, medium_len = _v2_body(MEDIUM_ROWS)
        medium_headers = {**auth, "Inference-Header-Content-Length": str(medium_len)}
        grpc_one, grpc_big = _grpc_message(1), _grpc_message(ROWS)
        grpc_port, floor_port = free_port(), free_port()
        grpc_target, floor_target = f"127.0.0.1:{grpc_port}", f"127.0.0.1:{floor_port}"
        ours_args = ["--serve-ours", "--repo", str(work / "repo"), "--data", str(work / "data"),
                     "--grpc-port", str(grpc_port)]  # fmt: skip
        ours_args += [f"--setting={k}={json.dumps(v)}" for k, v in tuning.items()]
        bare_args = ["--serve-bare", "--model", str(model), "--threads", str(threads)]
        infer = "/v2/models/mlp/infer"
        floor_args = ["--serve-grpc-floor", "--grpc-port", str(floor_port)]
        with (
            _server(bare_args, "/health") as (bare_url, bare_pid),
            _server(ours_args, "/v2/health/ready") as (url, ours_pid),
            _server(floor_args, "/health") as (_floor_url, floor_pid),
        ):
            in_process, in_process_medium = [], []
            _wrk(bare_url + "/json", json_body, {}, 64, 1, work)  # warm-ups
            _wrk(url + "/json", json_body, auth, 64, 1, work)
            _wrk(url + infer, v2_json, auth, 64, 1, work)
            _wrk(url + infer, body, v2_headers, 4, 1, work)
            _wrk(url + infer, medium, medium_headers, MEDIUM_CONNECTIONS, 1, work)
            _h2load(grpc_target, grpc_one, token, 64, 1, work)
            _h2load(floor_target, grpc_one, token, 64, 1, work)
            before = _grpc_outcomes(url, token)
            for _ in range(rounds):
                measure(
                    "bare",
                    bare_pid,
                    lambda: _wrk(bare_url + "/json", json_body, {}, 64, seconds, work),
                )
                measure(
                    "json",
                    ours_pid,
                    lambda: _wrk(url + "/json", json_body, auth, 64, seconds, work),
                )
                measure(
                    "v2_json", ours_pid, lambda: _wrk(url + infer, v2_json, auth, 64, seconds, work)
                )
                measure(
                    "binary",
                    ours_pid,
                    lambda: _wrk(url + infer, body, v2_headers, 4, seconds, work),
                )
                measure(
                    "medium",
                    ours_pid,
                    lambda: _wrk(
                        url + infer, medium, medium_headers, MEDIUM_CONNECTIONS, seconds, work
                    ),
                )
                measure(
                    "grpc",
                    ours_pid,
                    lambda: _h2load(grpc_target, grpc_one, token, 64, seconds, work),
                )
                measure(
                    "grpc_floor",
                    floor_pid,
                    lambda: _h2load(floor_target, grpc_one, token, 64, seconds, work),
                )
                measure(
                    "grpc_binary",
                    ours_pid,
                    lambda: _h2load(grpc_target, grpc_big, token, 4, seconds, work),
                )
                in_process.append(_in_process_rows_per_s(model, threads, seconds / 2))
                in_process_medium.append(
                    _in_process_rows_per_s(model, threads, seconds / 2, MEDIUM_ROWS)
                )
            after = _grpc_outcomes(url, token)
    counted = sum(r["done"] for name in ("grpc", "grpc_binary") for r in runs[name])
    served_ok = after.get("ok", 0) - before.get("ok", 0)
    # "cancelled": streams h2load cut at the end of its -D duration, not failures.
    failed = {k: v - before.get(k, 0) for k, v in after.items() if k not in ("ok", "cancelled")}
    if served_ok < counted or any(failed.values()):
        raise RuntimeError(f"gRPC: h2load counted {counted}, server ok {served_ok}, {failed}")
    best = {name: max(r, key=lambda m: m["rps"]) for name, r in runs.items()}
    bare, in_process_best = best["bare"], max(r for r, _ in in_process)
    row_cpu, medium_row_cpu = min(c for _, c in in_process), min(c for _, c in in_process_medium)
    binary_rows = best["binary"]["rps"] * ROWS
    grpc_rows = best["grpc_binary"]["rps"] * ROWS
    medium_rows, in_process_medium_best = (
        best["medium"]["rps"] * MEDIUM_ROWS,
        max(r for r, _ in in_process_medium),
    )
    return {
        "benchmark": "serve",
        "smoke": smoke,
        "model": "x".join(map(str, BENCH_LAYERS)),
        "cores": os.cpu_count(),
        "rounds": rounds,
        "seconds_per_run": seconds,
        "auth": auth_kind,
        "settings": tuning,
        "json_ratio": round(best["json"]["rps"] / bare["rps"], 3),
        "json_rps": round(best["json"]["rps"], 1),
        "json_p50_ms": best["json"]["p50_ms"],
        "json_p99_ms": best["json"]["p99_ms"],
        "v2_json_ratio": round(best["v2_json"]["rps"] / bare["rps"], 3),
        "v2_json_rps": round(best["v2_json"]["rps"], 1),
        "v2_json_p50_ms": best["v2_json"]["p50_ms"],
        "v2_json_p99_ms": best["v2_json"]["p99_ms"],
        "grpc_ratio": round(best["grpc"]["rps"] / bare["rps"], 3),
        "grpc_rps": round(best["grpc"]["rps"], 1),
        "grpc_floor_ratio": round(best["grpc_floor"]["rps"] / bare["rps"], 3),
        "cpu_us_per_request": {name: _least_cpu(r) for name, r in sorted(runs.items())},
        "v2_json_cpu_ratio": _cpu_ratio(runs, "v2_json"),
        "grpc_cpu_ratio": _cpu_ratio(runs, "grpc"),
        "grpc_floor_cpu_ratio": _cpu_ratio(runs, "grpc_floor"),
        "grpc_of_floor": round(best["grpc"]["rps"] / best["grpc_floor"]["rps"], 3),
        "grpc_mean_ms": best["grpc"].get("mean_ms"),
        "bare_rps": round(bare["rps"], 1),
        "bare_p50_ms": bare["p50_ms"],
        "bare_p99_ms": bare["p99_ms"],
        "binary_ratio": round(binary_rows / in_process_best, 3),
        "binary_rows_per_s": round(binary_rows),
        "binary_p50_ms": best["binary"]["p50_ms"],
        "binary_p99_ms": best["binary"]["p99_ms"],
        "grpc_binary_ratio": round(grpc_rows / in_process_best, 3),
        "grpc_binary_rows_per_s": round(grpc_rows),
        "in_process_rows_per_s": round(in_process_best),
        "medium_batch_ratio": round(medium_rows / in_process_medium_best, 3),
        "medium_rows_per_s": round(medium_rows),
        "medium_p50_ms": best["medium"]["p50_ms"],
        "medium_p99_ms": best["medium"]["p99_ms"],
        "in_process_medium_rows_per_s": round(in_process_medium_best),
        # in-process CPU per row / the server's (both all threads): what batching and the
        # protocol cost per row, whatever the load of a shared machine did to rows/s
        "binary_cpu_ratio": round(row_cpu * ROWS / _least_cpu(runs["binary"]), 3),
        "grpc_binary_cpu_ratio": round(row_cpu * ROWS / _least_cpu(runs["grpc_binary"]), 3),
        "medium_cpu_ratio": round(medium_row_cpu * MEDIUM_ROWS / _least_cpu(runs["medium"]), 3),
        "grpc_requests_checked": int(counted),
    }


def _least_cpu(results: list[dict[str, float]]) -> float:
    return min(r["cpu_us"] for r in results)


def _cpu_ratio(runs: dict[str, list[dict[str, float]]], name: str) -> float:
    """The bare server's CPU per 1-row request / *name*'s: the req/s ratio the two would
    reach if each had a core of its own (a shared machine moves req/s, not CPU per call)."""
    return round(_least_cpu(runs["bare"]) / _least_cpu(runs[name]), 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument("--smoke", action="store_true", help="a few seconds only (CI)")
    parser.add_argument("--serve-ours", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-grpc-floor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--repo", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--grpc-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an InferenceSettings override for our server (JSON value), e.g. "
        "inline_budget_us=50; reported in the output",
    )
    args = parser.parse_args()
    if args.serve_ours:
        serve_ours(args.port, args.repo, args.data, args.grpc_port, _tuning(args.setting))
        return 0
    if args.serve_bare:
        serve_bare(args.port, args.model, args.threads)
        return 0
    if args.serve_grpc_floor:
        serve_grpc_floor(args.port, args.grpc_port)
        return 0
    result = run(args.smoke, _tuning(args.setting))
    if not args.json:
        for key, value in result.items():
            print(f"{key:>24}: {value}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
