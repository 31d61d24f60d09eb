"""``mlaas4hep logs ID [-f]``: print a job's log; ``-f`` follows it until the job ends."""

from __future__ import annotations

import argparse
import sys

from mlaas4hep.cli.client import add_client_arguments, client_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", help="the job id (see `mlaas4hep jobs`)")
    parser.add_argument("-f", "--follow", action="store_true", help="stream until the job ends")
    add_client_arguments(parser)


def run(args: argparse.Namespace) -> int:
    with client_from_args(args) as client:
        for chunk in client.log_stream(args.job_id, follow=args.follow):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
    return 0
