"""``mlaas4hep jobs [--state running]``: your jobs, newest first."""

from __future__ import annotations

import argparse
from typing import Any

from mlaas4hep.cli.client import add_client_arguments, client_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state",
        action="append",
        default=[],
        choices=["queued", "running", "succeeded", "failed", "cancelled"],
        help="only jobs in this state; repeatable",
    )
    parser.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    parser.add_argument("--json", action="store_true", help="print the raw JSON")
    add_client_arguments(parser)


def run(args: argparse.Namespace) -> int:
    with client_from_args(args) as client:
        page = client.jobs(args.state, limit=args.limit)
    if args.json:
        import json

        print(json.dumps(page["items"], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None)
    table.add_column("id", no_wrap=True, min_width=32)  # ids are copied into other commands
    for name in ("name", "state", "created", "progress", "reason"):
        table.add_column(name)
    for job in page["items"]:
        table.add_row(
            job["id"],
            job["name"],
            job["state"],
            job["created_at"][:19].replace("T", " "),
            _progress(job),
            (job["reason"] or "")[:60],
        )
    Console().print(table)
    return 0


def _progress(job: dict[str, Any]) -> str:
    p = job.get("progress") or {}
    if p.get("epochs"):
        return f"epoch {p.get('epoch', 0)}/{p['epochs']}"
    if p.get("total"):
        return f"{100 * (p.get('events') or 0) / p['total']:.0f}%"
    return ""
