"""``mlaas4hep status JOB [--json]``: one job now: state, phase, progress, ETA, reason,
metrics and the model it deployed."""

from __future__ import annotations

import argparse
import json
from typing import Any

from mlaas4hep.cli.client import add_client_arguments, client_from_args
from mlaas4hep.cli.follow import PHASES, STATE_STYLE, clock, eta, fraction, metrics_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", help="the job id (see `mlaas4hep jobs`)")
    parser.add_argument("--json", action="store_true", help="print the job document as JSON")
    add_client_arguments(parser)


def run(args: argparse.Namespace) -> int:
    with client_from_args(args) as client:
        job = client.job(args.job_id)
    if args.json:
        print(json.dumps(job, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    state_style = STATE_STYLE.get(job["state"], "")
    for key, value in rows(job):  # Text: a job name or reason is never read as markup
        grid.add_row(key, Text(value, style=state_style if key == "state" else ""))
    Console().print(grid, highlight=False)
    return 0


def rows(job: dict[str, Any]) -> list[tuple[str, str]]:
    """The (label, value) lines of one job, the empty ones left out."""
    p = job.get("progress") or {}
    state = job["state"] + (" (cancel requested)" if job.get("cancel_requested") else "")
    out = [
        ("job", f"{job['id']}  {job['name']}"),
        ("state", state),
        ("attempt", f"{job.get('attempt', 0)}/{job.get('max_attempts', '?')}"),
    ]
    if p.get("phase"):
        epoch = f"  epoch {p['epoch']}/{p['epochs']}" if p.get("epoch") and p.get("epochs") else ""
        out.append(("phase", PHASES.get(p["phase"], p["phase"]) + epoch))
    out.append(("progress", _progress(p, fraction(job))))
    if job["state"] == "running":  # the end's message is the job's own output path
        out.append(("doing", str(p.get("message") or "")))
    left = eta(job, None)
    out.append(("ETA", clock(left) if left is not None else ""))
    out.append(("metrics", metrics_text(p.get("metrics"), limit=12)))
    out.append(("reason", job.get("reason") or ""))
    deployed = job.get("deployed")
    if deployed:
        out.append(("deployed", f"model {deployed['model']} version {deployed['version']}"))
    for label, key in (("created", "created_at"), ("started", "started_at"),
                       ("finished", "finished_at")):  # fmt: skip
        if job.get(key):
            out.append((label, str(job[key])[:19].replace("T", " ") + " UTC"))
    return [(k, v) for k, v in out if v]


def _progress(p: dict[str, Any], done: float | None) -> str:
    events, total = int(p.get("events") or 0), p.get("total")
    text = f"{events:,} events" if events else ""
    if total:
        text = f"{events:,}/{int(total):,} events"
    if done is not None:
        text += f" ({100 * done:.0f}% of the job)" if p.get("epochs") else f" ({100 * done:.0f}%)"
    return text.strip()
