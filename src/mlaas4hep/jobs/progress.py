"""Progress reports of a running job: parsing the ``--progress-json`` lines, estimating ETA.

The job process prints one JSON object per line on stdout, e.g.
``{"phase": "train", "epoch": 2, "events": 120000, "total": 500000, "metrics": {...}}``.
Only known keys with the right types are kept, so a job cannot store arbitrary data.
"""

from __future__ import annotations

import math
from typing import Any

from mlaas4hep.documents import load_json
from mlaas4hep.errors import PayloadTooLarge

_KEYS: dict[str, tuple[type, ...]] = {
    "phase": (str,),
    "epoch": (int,),
    "epochs": (int,),
    "events": (int,),
    "total": (int,),
    "message": (str,),
}
_MAX_METRICS = 32
_MAX_MERGED_METRICS = 64  # a job cannot grow its stored progress without bound
_MAX_TEXT = 200
_MAX_LINE = 64 * 1024


def parse_line(line: str) -> dict[str, Any] | None:
    """The progress object on *line*, or None if it is not one (then it is log text)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:  # the job wrote it: a deep or huge line is log text, never a RecursionError
        obj = load_json(line, what="a progress line", limit=_MAX_LINE)
    except (ValueError, PayloadTooLarge):
        return None
    if not isinstance(obj, dict):
        return None
    out: dict[str, Any] = {}
    for key, types in _KEYS.items():
        value = obj.get(key)
        if isinstance(value, types) and not isinstance(value, bool):
            out[key] = value[:_MAX_TEXT] if isinstance(value, str) else value
    metrics = obj.get("metrics")
    if isinstance(metrics, dict):
        out["metrics"] = {
            str(k)[:64]: float(v)
            for k, v in list(metrics.items())[:_MAX_METRICS]
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        }
    return out or None


def merge(previous: dict[str, Any] | None, update: dict[str, Any]) -> dict[str, Any]:
    """Fold *update* into *previous* (metrics are merged key by key, at most
    ``_MAX_MERGED_METRICS`` names in all: later new names are dropped, known ones update)."""
    merged = dict(previous or {})
    metrics = dict(merged.get("metrics", {}))
    for name, value in update.get("metrics", {}).items():
        if name in metrics or len(metrics) < _MAX_MERGED_METRICS:
            metrics[name] = value
    merged.update(update)
    if metrics:
        merged["metrics"] = metrics
    return merged


def eta_seconds(
    progress: dict[str, Any] | None, started_at: float | None, now: float
) -> float | None:
    """Seconds left at the rate seen so far, or None when it cannot be estimated.

    Uses ``epoch/epochs`` when both are known (training dominates), else ``events/total``.
    """
    if not progress or started_at is None or now <= started_at:
        return None
    done = _fraction(progress)
    if done is None or done <= 0:
        return None
    elapsed = now - started_at
    return max(0.0, elapsed * (1.0 - done) / done)


def _fraction(progress: dict[str, Any]) -> float | None:
    epoch, epochs = progress.get("epoch"), progress.get("epochs")
    if isinstance(epoch, int) and isinstance(epochs, int) and epochs > 0:
        return min(1.0, epoch / epochs)
    events, total = progress.get("events"), progress.get("total")
    if isinstance(events, int) and isinstance(total, int) and total > 0:
        return min(1.0, events / total)
    return None
