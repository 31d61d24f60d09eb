"""Following a job on the service: the display of ``submit --wait`` and ``wait``.

A job document carries ``state``, ``reason``, ``deployed`` and ``progress`` (``phase``,
``epoch``/``epochs``, ``events``/``total`` of the current pass, ``message``, ``metrics``,
``eta_seconds``). :class:`Rate` measures events per second between polls, :func:`render`
draws a job in two short lines (what it does, then a bar and the latest metrics, or the
job's message while there are none, as in the first pass; both fit 80 columns),
:func:`follow` polls with a live display on a terminal and one plain line per change
elsewhere, and :func:`summary` says how it ended: test metrics, plots, deployed model.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlaas4hep.client import Client
from mlaas4hep.errors import Mlaas4hepError

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

Job = dict[str, Any]

#: What a phase of ``mlaas4hep run``/``apply`` means to the person watching.
PHASES = {
    "prepare": "preprocessing",
    "train": "training",
    "validate": "validating",
    "evaluate": "evaluating",
    "export": "exporting ONNX",
    "apply": "applying",
    "done": "finishing",
}
STATE_STYLE = {
    "queued": "yellow",
    "running": "cyan",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
}
METRICS_FILE = "metrics.json"
_SHOWN_METRICS = 4
_MERIT = ("auc", "loss", "acc", "rmse")
_BAR_WIDTH = 24


@dataclass
class Rate:
    """Events per second within one phase and epoch, measured between polls."""

    key: tuple[Any, ...] | None = None
    since: float = 0.0
    start_events: int = 0
    value: float | None = None

    def observe(self, job: Job, now: float | None = None) -> float | None:
        """Fold in one poll of *job*; the rate so far in its phase/epoch, or None."""
        now = time.monotonic() if now is None else now
        p = job.get("progress") or {}
        events = int(p.get("events") or 0)
        key = (job.get("state"), p.get("phase"), p.get("epoch"))
        if key != self.key or events < self.start_events:
            self.key, self.since, self.start_events, self.value = key, now, events, None
        elif now > self.since and events > self.start_events:
            self.value = (events - self.start_events) / (now - self.since)
        return self.value


def eta(job: Job, rate: float | None) -> float | None:
    """Seconds left: the service's estimate, else this phase's at the measured rate."""
    if job.get("state") != "running":
        return None
    p = job.get("progress") or {}
    if p.get("eta_seconds") is not None:
        return float(p["eta_seconds"])
    events, total = int(p.get("events") or 0), p.get("total")
    if total and rate:
        return max(0.0, (int(total) - events) / rate)
    return None


def fraction(job: Job) -> float | None:
    """How far the job is (0..1) over all epochs when known, else over the events."""
    p = job.get("progress") or {}
    epoch, epochs = p.get("epoch"), p.get("epochs")
    events, total = int(p.get("events") or 0), p.get("total")
    within = min(1.0, events / total) if total else None
    if epoch and epochs:
        return min(1.0, (int(epoch) - 1 + (within or 0.0)) / int(epochs))
    return within


def status_line(job: Job, rate: float | None = None) -> str:
    """``running  training  epoch 2/10  120,000/500,000 events  ETA 0:04:10  8.1k ev/s``.

    What matters most comes first and counts are kept short, so the state, phase, events
    and ETA fit in 80 columns (a narrower terminal cuts the end).
    """
    p = job.get("progress") or {}
    running = job.get("state") == "running"
    state = str(job.get("state", "?"))
    if running and job.get("cancel_requested"):
        state = "cancelling"
    parts = [state]
    if running and p.get("phase"):
        parts.append(PHASES.get(p["phase"], str(p["phase"])))
    if running and p.get("epoch") and p.get("epochs"):
        parts.append(f"epoch {p['epoch']}/{p['epochs']}")
    if running:
        events, total = int(p.get("events") or 0), p.get("total")
        if total:
            parts.append(f"{count(events)}/{count(int(total))} events")
        elif events:
            parts.append(f"{count(events)} events")
    left = eta(job, rate)
    if left is not None:
        parts.append(f"ETA {clock(left)}")
    if running and rate:
        parts.append(f"{_si(rate)} ev/s")
    if job.get("state") == "queued" and (job.get("attempt") or 0) > 0:
        parts.append(f"requeued (attempt {job['attempt']}/{job.get('max_attempts', '?')})")
    return "  ".join(parts)


def count(n: int) -> str:
    """``123,456`` below a million, then ``12.3M`` (``status`` shows the exact count)."""
    return f"{n:,}" if n < 1_000_000 else _si(n)


def detail(progress: dict[str, Any] | None) -> str:
    """What the second line shows: the latest metrics, else the job's message."""
    p = progress or {}
    return metrics_text(p.get("metrics")) or str(p.get("message") or "")


def metrics_text(metrics: dict[str, Any] | None, limit: int = _SHOWN_METRICS) -> str:
    """``val_auc 0.9121  val_loss 0.3123``: at most *limit* numeric metrics, the usual
    figures of merit (AUC, loss, accuracy, RMSE) first."""
    numeric = [
        (k, v)
        for k, v in (metrics or {}).items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k != "seconds"
    ]
    numeric.sort(key=lambda kv: (_merit(kv[0]), not kv[0].startswith("val"), kv[0]))
    return "  ".join(f"{k} {v:.4g}" for k, v in numeric[:limit])


def _merit(name: str) -> int:
    """The rank of a metric's kind (AUC first), past the known ones for the others."""
    return next((i for i, word in enumerate(_MERIT) if word in name), len(_MERIT))


def render(job: Job, rate: float | None = None) -> RenderableType:
    """The job in two lines: :func:`status_line`, then a bar and the latest metrics."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    line = Text(status_line(job, rate), no_wrap=True, overflow="ellipsis")
    line.stylize(STATE_STYLE.get(str(job.get("state")), ""), 0, len(str(job.get("state", ""))))
    if job.get("state") != "running":
        return line
    done = fraction(job)
    grid = Table.grid(padding=(0, 1))
    grid.add_row(
        ProgressBar(total=None if done is None else 100.0, completed=100 * (done or 0),
                    width=_BAR_WIDTH),
        Text(f"{100 * done:3.0f}%" if done is not None else "    "),
        Text(detail(job.get("progress")), no_wrap=True, overflow="ellipsis"),
    )  # fmt: skip
    return Group(line, grid)


def follow(
    client: Client,
    job_id: str,
    poll: float = 1.0,
    console: Console | None = None,
    timeout: float | None = None,
) -> Job:
    """Poll until the job ends, showing it on *console*; return the final job.

    On a terminal the display is live; elsewhere (a log file, CI) one line is printed per
    change of state, phase or epoch, so the output stays short. Raises ``TimeoutError``
    after *timeout* seconds (the job goes on).
    """
    from rich.console import Console
    from rich.live import Live

    console = console or Console()
    rate = Rate()
    if console.is_terminal:
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            return client.wait(
                job_id,
                poll=poll,
                timeout=timeout,
                on_update=lambda job: live.update(render(job, rate.observe(job))),
            )
    return client.wait(job_id, poll=poll, timeout=timeout, on_update=_Lines(console, rate))


@dataclass
class _Lines:
    """One plain line per change of state, phase or epoch (not per poll)."""

    console: Console
    rate: Rate
    last: tuple[Any, ...] | None = None

    def __call__(self, job: Job) -> None:
        value = self.rate.observe(job)
        p = job.get("progress") or {}
        key = (job.get("state"), p.get("phase"), p.get("epoch"))
        if key == self.last:
            return
        self.last = key
        metrics = detail(p) if job.get("state") == "running" else ""
        self.console.print(status_line(job, value) + (f"  {metrics}" if metrics else ""),
                           highlight=False, markup=False, soft_wrap=True)  # fmt: skip


def summary(client: Client, job: Job, console: Console | None = None, *, head: bool = True) -> None:
    """How the job ended (*head*: its state and reason first): test metrics, plots and
    how to get them, the deployed model; for a failed or cancelled job its log."""
    from rich.console import Console

    console = console or Console()
    state, job_id = job["state"], job["id"]
    if head:
        text = f"job {job_id} {state}" + (f": {job['reason']}" if job.get("reason") else "")
        console.print(
            text, style=STATE_STYLE.get(state, ""), highlight=False, markup=False, soft_wrap=True
        )
    if state != "succeeded":
        console.print(f"  log: mlaas4hep logs {job_id}", highlight=False, markup=False)
        return
    names, metrics, label = _results(client, job)
    if metrics:
        console.print(f"  {label}: {metrics_text(metrics, limit=8)}", highlight=False, markup=False)
    plots = [n for n in names if n.endswith(".png")]
    if plots:
        console.print(f"  plots: {', '.join(plots)}", highlight=False, markup=False, soft_wrap=True)
    if names:
        console.print(
            f"  files: {len(names)} artifacts; `mlaas4hep download {job_id} --out DIR` saves them",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    deployed = job.get("deployed")
    if deployed:
        ref = f"{deployed['model']}:{deployed['version']}"
        console.print(
            f"  deployed: model {deployed['model']} version {deployed['version']}"
            f"  (mlaas4hep models show {ref})",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


def _results(client: Client, job: Job) -> tuple[list[str], dict[str, Any], str]:
    """The artifact names and the metrics to show with their label: ``metrics.json``'s
    ``test`` section, else the metrics of the job's final progress."""
    fallback = dict((job.get("progress") or {}).get("metrics") or {})
    try:
        names = [a["name"] for a in client.artifacts(job["id"])]
    except Mlaas4hepError:  # e.g. a token that may not read artifacts: just less to show
        return [], fallback, "metrics"
    if METRICS_FILE not in names:
        return names, fallback, "metrics"
    try:
        answer = client.request("GET", f"/jobs/{job['id']}/artifacts/{METRICS_FILE}")
        doc = json.loads(answer.content)
    except (Mlaas4hepError, ValueError):
        return names, fallback, "metrics"
    test = doc.get("test") if isinstance(doc, dict) else None
    if not isinstance(test, dict):
        return names, fallback, "metrics"
    where = doc.get("evaluated_on", "test")
    return names, test, f"{where} metrics" if isinstance(where, str) else "test metrics"


def clock(seconds: float) -> str:
    """``H:MM:SS``."""
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _si(value: float) -> str:
    """``812``, ``8.1k``, ``1.2M``."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.1f}{suffix}"
    return f"{value:.0f}"
