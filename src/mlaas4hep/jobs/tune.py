"""A job's hyperparameter search, on the service side: trials on Dask, the study in the DB.

A job runs sandboxed, away from the service's database (``jobs/sandbox.py``): its search
keeps the study in the job's own directory (``train/tune.py``). When the job succeeds,
``record_study`` stores the study in the service's database (the job store's SQLite file or
PostgreSQL server, through Optuna's ``RDBStorage``) as ``job-<id>``, rebuilt from the job's
``tune/trials.json``: the job's output is hostile, so the file is bounded, parsed as JSON,
and every trial is checked against the search space of the job's validated spec. Read it
back with ``optuna.load_study(study_name="job-<id>", storage=<database URL>)``.

``trial_pool`` is where a job started with ``--dask-scheduler`` runs its trials: the
cluster's workers, through the client's ``concurrent.futures`` executor.
"""

from __future__ import annotations

import contextlib
import json
import math
from concurrent.futures import Executor
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from mlaas4hep.errors import Conflict, DataQualityError
from mlaas4hep.spec import TuneSpec, validate_spec
from mlaas4hep.train.tune_space import distributions, encode

if TYPE_CHECKING:
    import optuna

    from mlaas4hep.jobs.dask_map import DaskDistributor
    from mlaas4hep.jobs.records import JobRecord

TRIALS_FILE = "tune/trials.json"
MAX_TRIALS_BYTES = 32 << 20
_STATES = ("complete", "pruned", "failed")
_ATTRS = ("seconds", "epochs", "error")


def study_name(job_id: str) -> str:
    """The name of job *job_id*'s study in the service's database."""
    return f"job-{job_id}"


def trial_pool(distributor: DaskDistributor) -> Executor:
    """The Dask cluster as a ``concurrent.futures.Executor`` for a search's trials."""
    client: Any = distributor.client
    return cast(Executor, client.get_executor(pure=False))


def record_study(db_url: str, job: JobRecord, result_dir: Path) -> str | None:
    """Store the search of succeeded *job* in the database at *db_url*; its study name
    (``record_search`` for the job's id and spec).
    """
    return record_search(db_url, job.id, json.loads(job.spec), result_dir)


def record_search(
    db_url: str, job_id: str, raw_spec: dict[str, Any], result_dir: Path
) -> str | None:
    """Store the search a job ran (its spec *raw_spec*, its output *result_dir*) in the
    database at *db_url* as ``job-<job_id>``; the study name.

    None when the job's spec has no ``tune:`` section.

    Raises:
        DataQualityError: ``tune/trials.json`` is missing, too large or not what the
            search of this spec writes.
        Conflict: the database already holds this job's study.
    """
    if not raw_spec.get("tune"):  # most jobs (and apply jobs, whose spec is another kind)
        return None
    spec = validate_spec(raw_spec, origin=f"job {job_id}")
    if spec.tune is None:
        return None
    rows = _read(result_dir / TRIALS_FILE)
    trials = [_trial(spec.tune, row) for row in rows]
    name = study_name(job_id)
    _store(db_url, name, spec.tune, trials)
    return name


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        size = path.stat().st_size
        if size > MAX_TRIALS_BYTES:
            msg = f"{TRIALS_FILE} is {size} bytes; the limit is {MAX_TRIALS_BYTES}"
            raise DataQualityError(msg)
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        msg = f"the job's {TRIALS_FILE} cannot be read: {exc}"
        raise DataQualityError(msg) from exc
    rows = doc.get("trials") if isinstance(doc, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        msg = f"the job's {TRIALS_FILE} has no list of trials"
        raise DataQualityError(msg)
    return rows


def _trial(tune: TuneSpec, row: dict[str, Any]) -> optuna.trial.FrozenTrial:
    """One row as an Optuna trial, checked against the spec's search space."""
    import optuna
    from optuna.trial import TrialState

    state = row.get("state")
    params = row.get("params")
    if state not in _STATES or not isinstance(params, dict) or set(params) != set(tune.space):
        msg = f"{TRIALS_FILE}: trial {row.get('number')!r} is not a trial of this search"
        raise DataQualityError(msg)
    value = _number(row.get("value")) if state == "complete" else None
    curve = row.get("intermediate") or {}
    try:
        return optuna.trial.create_trial(
            state={"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED,
                   "failed": TrialState.FAIL}[state],
            value=value,
            params={p: encode(v) for p, v in params.items()},
            distributions=distributions(tune),
            intermediate_values={int(k): v for k, v in curve.items() if _number(v) is not None},
            user_attrs={k: row[k] for k in _ATTRS if row.get(k) is not None},
        )  # fmt: skip
    except (ValueError, TypeError, AttributeError) as exc:
        msg = f"{TRIALS_FILE}: trial {row.get('number')!r} does not fit the search: {exc}"
        raise DataQualityError(msg) from exc


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _store(db_url: str, name: str, tune: TuneSpec, trials: list[optuna.trial.FrozenTrial]) -> None:
    import optuna
    from optuna.exceptions import DuplicatedStudyError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(db_url)
    try:
        # A study left by an earlier attempt of the job (its lease was lost): the last wins.
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=name, storage=storage)
        study = optuna.create_study(
            storage=storage, study_name=name, direction=tune.resolved_direction()
        )
        study.add_trials(trials)
    except DuplicatedStudyError as exc:  # a concurrent recorder of the same job
        msg = f"the database already holds study {name!r}"
        raise Conflict(msg) from exc
    finally:
        storage.engine.dispose()
