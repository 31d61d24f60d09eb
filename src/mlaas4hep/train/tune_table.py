"""A finished study as the run's artifacts: ``tune/trials.json``, ``tune/trials.csv``, plots.

``trials.json`` is the contract read back by the service (``mlaas4hep.jobs.tune``) to
store the study in its database and by the UI's job page::

    {"study": NAME, "metric": "val_auc", "direction": "maximize", "best_trial": 3,
     "importances": {"train.lr": 0.7, ...},
     "trials": [{"number": 0, "state": "complete", "value": 0.81,
                 "params": {"train.lr": 0.003, "model.hidden": [32, 16]},
                 "intermediate": {"1": 0.78, "2": 0.81}, "seconds": 1.2, "epochs": 2,
                 "error": null}, ...]}

``params`` are spec values (what the trial's spec held); ``intermediate`` the metric per
epoch (1-based), as the pruner saw it.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlaas4hep.spec import TuneSpec
from mlaas4hep.train.atomic import atomic_write_text
from mlaas4hep.train.tune_plots import plot_history, plot_importance
from mlaas4hep.train.tune_space import spec_values

if TYPE_CHECKING:
    import optuna

TRIALS_JSON = "trials.json"
TRIALS_CSV = "trials.csv"
_STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}


def trial_rows(study: optuna.Study, tune: TuneSpec) -> list[dict[str, Any]]:
    """One JSON-safe row per finished trial, in trial order."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        state = _STATES.get(t.state.name)
        if state is None:  # still running or waiting: not a result
            continue
        curve = t.intermediate_values
        rows.append(
            {
                "number": t.number,
                "state": state,
                "value": _finite(t.value) if state == "complete" else None,
                "params": spec_values(tune, t.params),
                "intermediate": {str(k): _finite(v) for k, v in sorted(curve.items())},
                "seconds": t.user_attrs.get("seconds"),
                "epochs": t.user_attrs.get("epochs"),
                "error": t.user_attrs.get("error"),
            }
        )
    return rows


def write_tables(
    study: optuna.Study, tune: TuneSpec, directory: Path, name: str, storage: str
) -> dict[str, Any]:
    """Write the trials table (JSON, CSV) and plots; return the summary for metrics.json."""
    rows = trial_rows(study, tune)
    best = study.best_trial
    importances = _importances(study, tune)
    direction = tune.resolved_direction()
    doc = {
        "study": name,
        "metric": tune.metric,
        "direction": direction,
        "best_trial": best.number,
        "importances": importances,
        "trials": rows,
    }
    atomic_write_text(directory / TRIALS_JSON, json.dumps(doc, indent=1) + "\n")
    atomic_write_text(directory / TRIALS_CSV, _csv(rows, list(tune.space)))
    plots = [plot_history(directory / "history.png", rows, tune.metric, direction)]
    if importances:
        plots.append(plot_importance(directory / "importance.png", importances))
    counts = {s: sum(r["state"] == s for r in rows) for s in _STATES.values()}
    return {
        "study": name,
        "storage": _redacted(storage),
        "metric": tune.metric,
        "direction": direction,
        "trials": counts,
        "best": {"number": best.number, "value": best.value, "params": rows_by(rows, best.number)},
        "importances": importances,
        "files": [f"tune/{TRIALS_JSON}", f"tune/{TRIALS_CSV}"] + [f"tune/{p.name}" for p in plots],
    }


def rows_by(rows: list[dict[str, Any]], number: int) -> dict[str, Any]:
    """The spec values of trial *number*."""
    params: dict[str, Any] = next(r["params"] for r in rows if r["number"] == number)
    return params


def _importances(study: optuna.Study, tune: TuneSpec) -> dict[str, float]:
    """fANOVA importances (seeded), or {} with fewer than two completed trials."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < 2:
        return {}
    evaluator = FanovaImportanceEvaluator(seed=tune.seed)
    try:
        found = get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError, optuna.exceptions.OptunaError):
        return {}  # e.g. every completed trial drew the same values
    return {k: round(float(v), 6) for k, v in found.items()}


def _csv(rows: list[dict[str, Any]], paths: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["number", "state", "value", "epochs", "seconds", *paths, "error"])
    for r in rows:
        values = [_cell(r["params"].get(p)) for p in paths]
        writer.writerow(
            [r["number"], r["state"], _cell(r["value"]), _cell(r["epochs"]), _cell(r["seconds"]),
             *values, r["error"] or ""]
        )  # fmt: skip
    return buf.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _redacted(url: str) -> str:
    """The storage URL without its password (it goes to metrics.json)."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
