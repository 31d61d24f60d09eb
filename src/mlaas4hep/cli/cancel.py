"""``mlaas4hep cancel ID [--json]``: cancel a queued or running job."""

from __future__ import annotations

import argparse
import json

from mlaas4hep.cli.client import add_client_arguments, client_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", help="the job id (see `mlaas4hep jobs`)")
    parser.add_argument("--json", action="store_true", help="print the job document as JSON")
    add_client_arguments(parser)


def run(args: argparse.Namespace) -> int:
    with client_from_args(args) as client:
        job = client.cancel(args.job_id)
    if args.json:
        print(json.dumps(job, indent=2))
    elif job["state"] == "cancelled":
        print(f"job {job['id']} cancelled")
    else:
        print(f"job {job['id']}: cancel requested; its processes are being stopped")
    return 0
