"""``mlaas4hep serve``: run the service with embedded defaults: the job API, the local
executor and the model inference routes (V2, TFaaS) in one process.

Without options: SQLite and job files in the data directory, two local job workers, the
model repository in ``<data_dir>/models``, the local token issuer, on 127.0.0.1:8000.
``--config`` points at a production YAML file (see docs/service.md); ``MLAAS4HEP_*``
variables override it. ``--only api|executor|inference`` runs one role, as the container
image does in a scaled-out deployment (docs/deployment.md). With ``--only inference``,
``--inference-workers N`` runs N inference processes on the same ports under a supervisor
(``serve/workers.py``; the rule for N and the ONNX Runtime threads: docs/inference.md,
"Processes and threads"). ``--workers`` stays what it always was: jobs run at once by the
executor of this process.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mlaas4hep.config import Settings, load_settings
from mlaas4hep.errors import SpecError

_EXECUTOR_CHECK_S = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="settings file (YAML)")
    parser.add_argument("--host", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default 8000)")
    parser.add_argument("--data-dir", type=Path, help="where the database and job files live")
    parser.add_argument("--workers", type=int, help="jobs run at once by this process")
    parser.add_argument(
        "--grpc-port",
        type=int,
        help="also serve V2 over gRPC on this port (e.g. 8001, Triton's; default: off, or "
        "inference.grpc_port in the settings)",
    )
    parser.add_argument(
        "--inference-workers",
        type=int,
        metavar="N",
        help="with --only inference: N processes sharing the HTTP and gRPC ports (default 1, "
        "or inference.workers); see docs/inference.md, 'Processes and threads'",
    )
    # Internal: how the supervisor starts a worker: inherited socket FD, worker INDEX.
    parser.add_argument("--inference-worker-of", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--only",
        choices=["api", "executor", "inference"],
        help="run one role: the job API without executor, the executor alone, or inference",
    )


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings file and environment, overridden by the command-line options."""
    settings = load_settings(args.config)
    update: dict[str, object] = {}
    for name in ("host", "port", "data_dir"):
        if getattr(args, name, None) is not None:
            update[name] = getattr(args, name)
    if args.workers is not None:
        update["executor"] = settings.executor.model_copy(update={"workers": args.workers})
    inference = dict(settings.inference)
    if getattr(args, "grpc_port", None) is not None:
        inference["grpc_port"] = args.grpc_port
    workers = getattr(args, "inference_workers", None)
    if workers is not None:
        if args.only != "inference":
            msg = (
                "--inference-workers needs --only inference: the job API and the executor "
                "run once per process (scale them with replicas)"
            )
            raise SpecError(msg)
        inference["workers"] = workers
    elif args.only != "inference" and inference.get("workers", 1) != 1:
        # A settings file shared by every role may set it: only the inference role uses it.
        if args.only != "executor":
            print(
                f"mlaas4hep: inference.workers={inference['workers']} applies to "
                "`serve --only inference`; this process serves inference in one process"
            )
        inference["workers"] = 1
    # gRPC listens where HTTP does unless the settings say otherwise
    inference.setdefault("grpc_host", update.get("host", settings.host))
    update["inference"] = inference
    return Settings.model_validate({**settings.model_dump(), **update})


def run(args: argparse.Namespace) -> int:
    if getattr(args, "inference_worker_of", None) is not None:
        fd, index = args.inference_worker_of
        return _run_inference_worker(index, fd)
    settings = settings_from(args)
    if args.only == "executor":
        return _run_executor(settings)
    if args.only == "inference" and settings.inference.get("workers", 1) != 1:
        return _supervise_inference(settings)
    import uvicorn

    from mlaas4hep.api.app import create_app

    if args.only == "inference":
        app = _inference_app(settings)
    else:
        app = create_app(settings, run_executor=args.only != "api", with_inference=True)
    print(
        f"mlaas4hep: serving on http://{settings.host}:{settings.port} (data: {settings.data_dir})"
    )
    grpc_port = settings.inference.get("grpc_port")
    if grpc_port is not None and args.only in (None, "inference"):
        print(f"mlaas4hep: V2 gRPC on {settings.inference['grpc_host']}:{grpc_port}")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
    return 0


def _supervise_inference(settings: Settings) -> int:
    """Bind the ports once, then run ``inference.workers`` worker processes on them."""
    import contextlib
    import os
    import signal

    from prometheus_client import multiprocess

    from mlaas4hep.auth.factory import create_authenticator
    from mlaas4hep.config import MLAAS4HEP_ARGV
    from mlaas4hep.serve.settings import InferenceSettings
    from mlaas4hep.serve.workers import (
        MULTIPROC_ENV,
        Supervisor,
        listen_socket,
        metrics_dir,
        reserve_reuseport,
    )

    # What every worker would refuse, refused once here (not by N workers in a loop).
    inference = InferenceSettings.from_mapping(settings.inference, settings.data_dir)
    create_authenticator(settings.auth, data_dir=settings.data_dir, listen_host=settings.host)
    http = listen_socket(settings.host, settings.port)
    port = http.getsockname()[1]
    grpc = None
    update: dict[str, object] = {"port": port}
    if inference.grpc_port is not None:
        grpc = reserve_reuseport(inference.grpc_host, inference.grpc_port)
        update["inference"] = {**settings.inference, "grpc_port": grpc.getsockname()[1]}
    settings = settings.model_copy(update=update)
    payload = json.dumps(settings.model_dump(mode="json")).encode()
    print(
        f"mlaas4hep: serving inference on http://{settings.host}:{port} with "
        f"{inference.workers} worker processes, {inference.threads} ONNX Runtime threads each "
        f"(data: {settings.data_dir})",
        flush=True,
    )
    if grpc is not None:
        print(f"mlaas4hep: V2 gRPC on {inference.grpc_host}:{grpc.getsockname()[1]}", flush=True)
    with http, grpc or contextlib.nullcontext(), metrics_dir(os.environ) as metrics:
        supervisor = Supervisor(
            [*MLAAS4HEP_ARGV, "serve", "--inference-worker-of", str(http.fileno())],
            inference.workers,
            payload,
            pass_fds=[http.fileno()],
            env={**os.environ, MULTIPROC_ENV: str(metrics)},
            on_exit=lambda pid: multiprocess.mark_process_dead(pid, str(metrics)),  # type: ignore[no-untyped-call]
        )
        signal.signal(signal.SIGTERM, supervisor.request_stop)
        signal.signal(signal.SIGINT, supervisor.request_stop)
        return supervisor.run()


def _run_inference_worker(index: int, fd: int) -> int:
    """One worker of ``_supervise_inference``: settings from stdin, the inherited socket."""
    import os
    import socket

    import uvicorn

    from mlaas4hep.serve.workers import read_payload, uvicorn_log_config

    settings = Settings.model_validate(json.loads(read_payload(sys.stdin.buffer)))
    app = _inference_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=uvicorn_log_config(f"[inference worker {index} pid {os.getpid()}]"),
    )
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])
    return 0


def _inference_app(settings: Settings) -> Any:
    from mlaas4hep.api.app import model_policy, revoked_sessions_path
    from mlaas4hep.api.hosts import AllowedHosts, HostGuard
    from mlaas4hep.api.ui.revocations import RevokedSessions, RevokingAuthenticator
    from mlaas4hep.apply.serving import load_raw_preprocessor
    from mlaas4hep.auth.factory import create_authenticator
    from mlaas4hep.serve.app import create_inference_app
    from mlaas4hep.serve.settings import InferenceSettings

    auth = create_authenticator(
        settings.auth, data_dir=settings.data_dir, listen_host=settings.host
    ).authenticator
    # Signed-out UI sessions and foreign Host names are refused here as in create_app.
    revoking = RevokingAuthenticator(auth, RevokedSessions(revoked_sessions_path(settings)))
    app = create_inference_app(
        InferenceSettings.from_mapping(settings.inference, settings.data_dir),
        authenticate=lambda header, peer: revoking.authenticate(header, peer),
        authorize=model_policy,
        raw_loader=load_raw_preprocessor,
    )
    app.add_middleware(HostGuard, allowed=AllowedHosts.build(settings.allowed_hosts, settings.host))
    return app


def _run_executor(settings: Settings) -> int:
    import signal
    import threading

    from mlaas4hep.jobs.executors import make_executor
    from mlaas4hep.jobs.store import JobStore

    if settings.executor.workers < 1:
        msg = "serve --only executor needs executor.workers >= 1 (--workers N)"
        raise SpecError(msg)
    store = JobStore(settings.db_url)
    executor = make_executor(store, settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    executor.start()
    print(
        f"mlaas4hep: executor {executor.worker_id} running {settings.executor.workers} workers",
        flush=True,
    )
    status = 0
    try:
        # No HTTP port to probe: the process itself is the liveness signal. If a pool thread
        # died, exit non-zero so the container runtime restarts it; its jobs' leases expire.
        while not stop.wait(_EXECUTOR_CHECK_S):
            if not executor.alive:
                print("mlaas4hep: an executor thread died; exiting", file=sys.stderr)
                status = 1
                break
    except KeyboardInterrupt:
        pass
    finally:
        executor.stop()
        store.close()
    return status
