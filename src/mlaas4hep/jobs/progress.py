"""Progress reports of a running job: parsing the ``--progress-json`` lines, estimating ETA.

The job process prints one JSON object per line on stdout, e.g.
``{"phase": "train", "epoch": 2, "events": 120000, "total": 500000, "metrics": {...}}``.
Only known keys with the right types are kept, so a job cannot store arbitrary data. A
line with a ``phase`` is a whole report: it replaces the previous one's counts, timing and
message (``merge``); metrics accumulate.

How far a training job is (``fraction``, 0 up to but never 1 while it runs) weighs its
parts: the first pass ``P`` = ``PREPARE_WEIGHT``, the epochs ``T`` = 1 - P - F shared
equally, evaluation/export/bundle ``F`` = ``FINISH_WEIGHT``. With ``r`` = events/total of
the current pass (0 while the total is unknown) and ``e`` the 1-based epoch in progress of
``E``::

    prepare          P * r
    train, validate  P + T * (e - 1 + r) / E       (validate: r = 1, the epoch is read)
    export           1 - F        evaluate  1 - F/2        done  1 - F/4

A line without a phase counts as ``train``. Any other (a one-pass job such as ``apply``,
a training line without its epoch) counts ``r``, capped at 1 - F/4.

The ETA (``eta_seconds``) is ``elapsed * (1 - f) / f`` over the time since the job
started, unless the job sent its own ``eta_s`` for its current pass (``prepare`` or a
``train`` epoch) with the ``elapsed_s`` in it: the job measures its own rate, so the ETA is
then that ``eta_s`` plus the rest of the run at the same pace,
``eta_s + (elapsed_s + eta_s) * (1 - f_end) / w``, where ``w`` is the weight of the pass
(P, or T/E) and ``f_end`` the fraction at its end. The weights are a prior, not a
measurement: the first pass reads every input once, as the first epoch does.
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
# Seconds the job measured: kept when finite and within [0, _MAX_SECONDS].
_TIMES = ("elapsed_s", "eta_s")
_MAX_SECONDS = 1e9
# Keys of one report: a new phase line replaces them (a stale total or ETA would mislead).
_REPORT_KEYS = ("events", "total", "message", *_TIMES)
_MAX_METRICS = 32
_MAX_MERGED_METRICS = 64  # a job cannot grow its stored progress without bound
#: Epochs kept in the progress ``history`` (the newest; metrics.json has them all).
MAX_HISTORY = 500
_MAX_TEXT = 200
_MAX_LINE = 64 * 1024

#: Share of a training run taken by the first pass (it reads every input once, as epoch 1).
PREPARE_WEIGHT = 0.1
#: Share taken after the last epoch: scoring the test split, ONNX export, the bundle.
FINISH_WEIGHT = 0.05
_TRAIN_WEIGHT = 1.0 - PREPARE_WEIGHT - FINISH_WEIGHT
_AFTER_TRAINING = {
    "export": 1.0 - FINISH_WEIGHT,
    "evaluate": 1.0 - FINISH_WEIGHT / 2,
    "done": 1.0 - FINISH_WEIGHT / 4,
}
_LAST = _AFTER_TRAINING["done"]  # the most a running job reaches


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
    for key in _TIMES:
        seconds = _seconds(obj.get(key))
        if seconds is not None:
            out[key] = seconds
    metrics = obj.get("metrics")
    if isinstance(metrics, dict):
        out["metrics"] = {
            str(k)[:64]: float(v)
            for k, v in list(metrics.items())[:_MAX_METRICS]
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        }
    return out or None


def _seconds(value: Any) -> float | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    seconds = float(value)
    return seconds if math.isfinite(seconds) and 0 <= seconds <= _MAX_SECONDS else None


def merge(previous: dict[str, Any] | None, update: dict[str, Any]) -> dict[str, Any]:
    """Fold *update* into *previous*.

    An update with a ``phase`` is a whole report: the previous counts, timing and message
    (``events``, ``total``, ``message``, ``elapsed_s``, ``eta_s``) go unless it repeats
    them; ``epoch``/``epochs`` stay. Metrics are merged key by key, at most
    ``_MAX_MERGED_METRICS`` names in all: later new names are dropped, known ones update.
    A ``validate`` report (an epoch's end) appends ``{"epoch": E, **metrics}`` to
    ``history`` (the newest ``MAX_HISTORY`` epochs; a job cannot send a history itself).
    """
    merged = dict(previous or {})
    if "phase" in update:
        for key in _REPORT_KEYS:
            merged.pop(key, None)
    metrics = dict(merged.get("metrics", {}))
    for name, value in update.get("metrics", {}).items():
        if name in metrics or len(metrics) < _MAX_MERGED_METRICS:
            metrics[name] = value
    merged.update(update)
    if metrics:
        merged["metrics"] = metrics
    if update.get("phase") == "validate" and isinstance(update.get("epoch"), int):
        # The end of an epoch: its metrics join the history (the live per-epoch charts).
        # Only the metric names kept above: a job cannot grow each epoch by new names.
        kept = {k: v for k, v in update.get("metrics", {}).items() if k in metrics}
        point = {"epoch": update["epoch"], **kept}
        earlier = [h for h in merged.get("history", []) if h.get("epoch") != point["epoch"]]
        merged["history"] = [*earlier, point][-MAX_HISTORY:]
    return merged


def log_line(update: dict[str, Any]) -> str | None:
    """The line a progress report adds to the job log (epoch ends and later steps), or
    None for the frequent chunk updates. E.g. ``[mlaas4hep] epoch 2/5: train_loss 0.4512,
    val_loss 0.4401, val_auc 0.9012 (3.2 s)``."""
    phase = update.get("phase")
    if phase == "validate" and isinstance(update.get("epoch"), int):
        metrics = update.get("metrics", {})
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "seconds")
        of = f"/{update['epochs']}" if isinstance(update.get("epochs"), int) else ""
        took = f" ({metrics['seconds']:.1f} s)" if "seconds" in metrics else ""
        note = f" [{update['message']}]" if update.get("message") else ""
        return f"[mlaas4hep] epoch {update['epoch']}{of}: {shown}{took}{note}\n"
    if phase in ("export", "evaluate", "done") and update.get("message"):
        return f"[mlaas4hep] {phase}: {update['message']}\n"
    return None


def eta_seconds(
    progress: dict[str, Any] | None, started_at: float | None, now: float
) -> float | None:
    """Seconds left, or None when it cannot be estimated (see the module docstring).

    *started_at* and *now* are the job's start and the current time (UNIX seconds).
    """
    if not progress:
        return None
    own = _job_eta(progress)
    if own is not None:
        return own
    if started_at is None or now <= started_at:
        return None
    done = fraction(progress)
    if done is None or done <= 0:
        return None
    return max(0.0, (now - started_at) * (1.0 - done) / done)


def fraction(progress: dict[str, Any]) -> float | None:
    """How far the job is, from 0 up to (never reaching) 1; None when unknown."""
    phase, at, r = progress.get("phase"), _epoch(progress), _within(progress)
    if phase in _AFTER_TRAINING:
        return _AFTER_TRAINING[phase]
    if phase == "prepare":
        return PREPARE_WEIGHT * (r or 0.0)
    if phase in ("train", "validate", None) and at is not None:
        epoch, epochs = at
        within = 1.0 if phase == "validate" else (r or 0.0)
        return PREPARE_WEIGHT + _TRAIN_WEIGHT * (epoch - 1 + within) / epochs
    return None if r is None else min(_LAST, r)


def _job_eta(progress: dict[str, Any]) -> float | None:
    """The job's own ETA of its current pass, plus the rest of the run at its pace."""
    eta, elapsed = progress.get("eta_s"), progress.get("elapsed_s")
    if not isinstance(eta, float | int) or not isinstance(elapsed, float | int):
        return None
    phase, at = progress.get("phase"), _epoch(progress)
    if phase == "prepare":
        weight, end = PREPARE_WEIGHT, PREPARE_WEIGHT
    elif phase == "train" and at is not None:
        epoch, epochs = at
        weight = _TRAIN_WEIGHT / epochs
        end = PREPARE_WEIGHT + _TRAIN_WEIGHT * epoch / epochs
    else:
        return None
    return float(eta + (elapsed + eta) * (1.0 - end) / weight)


def _within(progress: dict[str, Any]) -> float | None:
    events, total = progress.get("events"), progress.get("total")
    if isinstance(events, int) and isinstance(total, int) and total > 0:
        return min(1.0, max(0, events) / total)
    return None


def _epoch(progress: dict[str, Any]) -> tuple[int, int] | None:
    """``(epoch, epochs)`` when both make sense, the epoch counted from 1."""
    epoch, epochs = progress.get("epoch"), progress.get("epochs")
    if isinstance(epoch, int) and isinstance(epochs, int) and 0 < epoch <= epochs:
        return epoch, epochs
    return None
