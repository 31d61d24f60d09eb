"""``mlaas4hep submit pipeline.yaml [--file model.py] [--run-name N] [--tag K=V] [--wait]``.

Queues a pipeline; ``--run-name`` and ``--tag`` label the run (the runs table, docs/ui.md).

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
import sys
import uuid
from pathlib import Path
from typing import Any

from mlaas4hep.cli.client import add_client_arguments, client_from_args
from mlaas4hep.cli.datasets import describe, upload_progress
from mlaas4hep.client import Client


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
    parser.add_argument(
        "--run-name", "--name", dest="run_name", help="a name for this run (the runs table)"
    )
    parser.add_argument(
        "--tag",
        dest="tags",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a run tag, e.g. --tag sample=ttbar; repeatable",
    )
    parser.add_argument("--parent", help="the id of a job of yours this run belongs to")
    parser.add_argument("--wait", action="store_true", help="follow the job until it ends")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between updates")
    parser.add_argument(
        "--idempotency-key",
        help="resubmitting with the same key returns the same job (default: a fresh key)",
    )
    add_client_arguments(parser)


def run(args: argparse.Namespace) -> int:
    key = args.idempotency_key or uuid.uuid4().hex
    with client_from_args(args) as client:
        done: list[str] = []
        with upload_progress() as progress:  # local inputs are uploaded first
            job = client.submit(
                args.spec,
                args.files,
                key,
                progress=progress,
                uploaded=lambda item: done.append(describe(item)),
                run_name=args.run_name,
                tags=args.tags,
                parent=args.parent,
            )
        for line in done:
            print(line, file=sys.stderr)
        named = f"run {job['run_name']!r}, " if job.get("run_name") else ""
        print(f"submitted job {job['id']} ({named}{job['name']})")
        if not args.wait:
            return 0
        final = wait(client, job["id"], args.poll)
    print(
        f"job {final['id']} {final['state']}" + (f": {final['reason']}" if final["reason"] else "")
    )
    return 0 if final["state"] == "succeeded" else 1


def wait(client: Client, job_id: str, poll: float) -> dict[str, Any]:
    """Follow the job until it ends (phase, events, ETA, metrics; see
    :mod:`mlaas4hep.cli.follow`), then say how it ended: test metrics, plots, deployed
    model (the caller prints the final state). Returns the final job."""
    from mlaas4hep.cli.follow import follow, summary

    final = follow(client, job_id, poll)
    summary(client, final, head=False)
    return final
