"""``mlaas4hep submit pipeline.yaml [--file model.py] [--wait]``: queue a pipeline.

The same command queues an apply request (a document with a top-level ``apply:``: a
deployed model applied to inputs, one output per input file; docs/service.md, "Applying a
model as a job"), e.g. ``mlaas4hep submit apply.yaml --wait``.

The service checks the spec with its one submission policy (``jobs/policy.py``) before
queueing it: an invalid spec or expression, an input the token may not read, or a
``deploy:`` to a model the caller may not modify is refused with the service's message.
With ``--wait`` a live progress bar follows the job (events or epochs, ETA, the latest
metrics) and the exit status says how it ended: 0 succeeded, 1 failed or cancelled.
"""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path
from typing import Any

from mlaas4hep.cli.client import add_client_arguments, client_from_args
from mlaas4hep.client import Client
from mlaas4hep.errors import SpecError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", type=Path, help="the pipeline spec or apply request (YAML or JSON)")
    parser.add_argument(
        "--file",
        dest="files",
        type=Path,
        action="append",
        default=[],
        help="a small file the job needs (the model module, or a file list the spec names "
        "as '@NAME', checked line by line at submission); repeatable",
    )
    parser.add_argument("--wait", action="store_true", help="follow the job until it ends")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between updates")
    parser.add_argument(
        "--idempotency-key",
        help="resubmitting with the same key returns the same job (default: a fresh key)",
    )
    add_client_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        spec = args.spec.read_bytes()
    except OSError as exc:
        msg = f"cannot read the spec {str(args.spec)!r}: {exc.strerror}"
        raise SpecError(msg) from exc
    key = args.idempotency_key or uuid.uuid4().hex
    with client_from_args(args) as client:
        job = client.submit(spec, args.files, key)
        print(f"submitted job {job['id']} ({job['name']})")
        if not args.wait:
            return 0
        final = wait(client, job["id"], args.poll)
    print(
        f"job {final['id']} {final['state']}" + (f": {final['reason']}" if final["reason"] else "")
    )
    return 0 if final["state"] == "succeeded" else 1


def wait(client: Client, job_id: str, poll: float) -> dict[str, Any]:
    """Poll until the job ends, drawing a progress bar; returns the final job."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[metrics]}"),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("queued", total=None, metrics="")
        return client.wait(job_id, poll=poll, on_update=lambda job: _update(bar, task, job))


def _update(bar: Any, task: Any, job: dict[str, Any]) -> None:
    p = job.get("progress") or {}
    if p.get("epochs"):
        done, total = p.get("epoch", 0), p["epochs"]
    else:
        done, total = p.get("events") or 0, p.get("total")
    phase = p.get("phase") or job["state"]
    metrics = "  ".join(f"{k}={v:.4g}" for k, v in sorted((p.get("metrics") or {}).items())[:4])
    bar.update(
        task, description=f"{job['state']}: {phase}", completed=done, total=total, metrics=metrics
    )
