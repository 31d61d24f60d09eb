"""``mlaas4hep wait JOB``: follow a job until it ends, like ``submit --wait``.

The exit status says how it ended: 0 succeeded, 1 failed or cancelled, 124 still running
after ``--timeout`` seconds (the job goes on). With ``--json`` the live display goes to
stderr and the final job document is the only thing on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys

from mlaas4hep.cli.client import add_client_arguments, client_from_args
from mlaas4hep.cli.follow import follow, summary

EXIT_TIMEOUT = 124  # like timeout(1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", help="the job id (see `mlaas4hep jobs`)")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between updates")
    parser.add_argument(
        "--timeout", type=float, default=None, help="give up waiting after this many seconds"
    )
    parser.add_argument("--json", action="store_true", help="print the final job as JSON")
    add_client_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console(stderr=args.json)
    with client_from_args(args) as client:
        try:
            final = follow(client, args.job_id, args.poll, console, timeout=args.timeout)
        except TimeoutError:
            print(
                f"mlaas4hep wait: job {args.job_id} has not ended after {args.timeout:g} s; "
                f"it goes on (`mlaas4hep status {args.job_id}`)",
                file=sys.stderr,
            )
            return EXIT_TIMEOUT
        if args.json:
            print(json.dumps(final, indent=2))
        else:
            summary(client, final, console)
    return 0 if final["state"] == "succeeded" else 1
