"""A job's hyperparameter search as its page shows it (``api/ui/templates/_tune.html``).

Read from the job's ``tune/trials.json`` (hostile content: through ``read_artifact_json``,
bounded, JSON only); the values are shown as text, never as markup, and the table is
bounded: at most ``MAX_SHOWN`` trials by ``MAX_COLUMNS`` parameters, short cells.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from mlaas4hep.jobs.records import JobRecord
from mlaas4hep.jobs.runs import read_artifact_json
from mlaas4hep.jobs.service import JobService
from mlaas4hep.jobs.tune import TRIALS_FILE, study_name

_PLOTS = (("tune/history.png", "Optimisation history"),
          ("tune/importance.png", "Parameter importance"))  # fmt: skip
MAX_SHOWN = 200
MAX_COLUMNS = 64  # the most paths a search space has (TuneSpec.space)


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str
    value: str
    params: dict[str, str]


@dataclass(frozen=True)
class TuneView:
    """The search of one succeeded job: its trials (at most ``MAX_SHOWN``) and plots."""

    study: str
    metric: str
    direction: str
    best: int | None
    paths: list[str]
    trials: list[TrialRow] = field(default_factory=list)
    hidden: int = 0  # trials beyond MAX_SHOWN (in trials.csv)
    plots: list[tuple[str, str]] = field(default_factory=list)


def tune_view(service: JobService, job: JobRecord) -> TuneView | None:
    """The job's search, or None when it ran none (or is not finished)."""
    doc = read_artifact_json(service, job, TRIALS_FILE)
    rows = doc.get("trials")
    if not isinstance(rows, list):
        return None
    rows = [r for r in rows if isinstance(r, dict)]
    shown = rows[:MAX_SHOWN]
    found = {str(p)[:100] for r in shown if isinstance(r.get("params"), dict) for p in r["params"]}
    paths = sorted(found)[:MAX_COLUMNS]
    names = {a.name for a in service.artifacts(job)}
    best = doc.get("best_trial")
    return TuneView(
        study=study_name(job.id),
        metric=str(doc.get("metric", ""))[:40],
        direction=str(doc.get("direction", ""))[:20],
        best=best if isinstance(best, int) else None,
        paths=paths,
        trials=[_row(r, paths) for r in shown],
        hidden=max(0, len(rows) - MAX_SHOWN),
        plots=[(name, alt) for name, alt in _PLOTS if name in names],
    )


def _row(row: dict[str, Any], paths: list[str]) -> TrialRow:
    params = row.get("params") if isinstance(row.get("params"), dict) else {}
    number = row.get("number")
    return TrialRow(
        number=number if isinstance(number, int) else -1,
        state=str(row.get("state", ""))[:20],
        value=_text(row.get("value")),
        params={p: _text(params.get(p)) for p in paths},  # type: ignore[union-attr]
    )


def _text(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, list | dict):
        return json.dumps(value)[:100]
    return str(value)[:100]
