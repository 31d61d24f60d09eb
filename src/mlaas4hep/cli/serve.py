"""``mlaas4hep serve``: run the service with embedded defaults: the job API, the local
executor and the model inference routes (V2, TFaaS) in one process.

Without options: SQLite and job files in the data directory, two local job workers, the
model repository in ``<data_dir>/models``, the local token issuer, on 127.0.0.1:8000.
``--config`` points at a production YAML file (see docs/service.md); ``MLAAS4HEP_*``
variables override it. ``--only api|executor|inference`` runs one role, as the container
image does in a scaled-out deployment (docs/deployment.md).
"""

from __future__ import annotations

import argparse
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
    # gRPC listens where HTTP does unless the settings say otherwise
    inference.setdefault("grpc_host", update.get("host", settings.host))
    update["inference"] = inference
    return Settings.model_validate({**settings.model_dump(), **update})


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.only == "executor":
        return _run_executor(settings)
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
