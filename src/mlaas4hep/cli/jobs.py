"""``mlaas4hep jobs [--state running] [--json]``: your jobs, newest first.

The name column shows the run name when the job was given one (``submit --run-name``),
else the pipeline's name; the runs table with parameters and metrics is ``/ui/runs`` and
``GET /api/v1/runs``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mlaas4hep.cli.client import add_client_arguments, client_from_args
from mlaas4hep.cli.follow import PHASES, STATE_STYLE, fraction

_PIPE_WIDTH = 160


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state",
        action="append",
        default=[],
        choices=["queued", "running", "succeeded", "failed", "cancelled"],
        help="only jobs in this state; repeatable",
    )
    parser.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    parser.add_argument("--json", action="store_true", help="print the jobs as a JSON list")
    add_client_arguments(parser)


def run(args: argparse.Namespace) -> int:
    with client_from_args(args) as client:
        page = client.jobs(args.state, limit=args.limit)
    if args.json:
        print(json.dumps(page["items"], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None)
    table.add_column("id", no_wrap=True, min_width=32)  # ids are copied into other commands
    for name in ("name", "state", "created", "duration", "progress", "tags"):
        table.add_column(name, no_wrap=True)
    table.add_column("reason", overflow="ellipsis")
    for job in page["items"]:
        cells = (job.get("run_name") or job["name"], job["state"],
                 job["created_at"][:19].replace("T", " "), _duration(job), progress(job),
                 " ".join(f"{k}={v}" for k, v in (job.get("tags") or {}).items()),
                 (job["reason"] or "")[:60])  # fmt: skip
        # Text, not markup: a job name or reason is the user's text
        table.add_row(
            job["id"], *(Text(c, style=STATE_STYLE.get(c, "") if i == 1 else "")
                         for i, c in enumerate(cells))
        )  # fmt: skip
    # A pipe or a file gets whole lines (rich would squeeze them into 80 columns).
    Console(width=None if sys.stdout.isatty() else _PIPE_WIDTH).print(table, highlight=False)
    return 0


def _duration(job: dict[str, Any]) -> str:
    seconds = job.get("duration_seconds")
    if seconds is None:
        return ""
    s = round(seconds)
    return (
        f"{s // 60}:{s % 60:02d}" if s < 3600 else f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    )


def progress(job: dict[str, Any]) -> str:
    """``training 2/10 34%``: the phase of a running job and how far it is."""
    if job["state"] != "running":
        return ""
    p = job.get("progress") or {}
    parts = [PHASES.get(p["phase"], p["phase"])] if p.get("phase") else []
    if p.get("epochs"):
        parts.append(f"{p.get('epoch', 0)}/{p['epochs']}")
    done = fraction(job)
    if done is not None:
        parts.append(f"{100 * done:.0f}%")
    return " ".join(parts)
