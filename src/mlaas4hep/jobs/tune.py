"""A job's hyperparameter search, on the service side: trials on Dask, the study in the DB.

A job runs sandboxed, away from the service's database (``jobs/sandbox.py``): its search
keeps the study in the job's own directory (``train/tune.py``). When the job succeeds,
``record_study`` stores the study in the service's database (the job store's SQLite file or
PostgreSQL server, through Optuna's ``RDBStorage``) as ``job-<id>``, rebuilt from the job's
``tune/trials.json``: the job's output is hostile, so the file is opened as
``serve/intake.py`` opens a model directory (no symbolic link on the way, a regular
single-link file: never a FIFO or a device), bounded, parsed as JSON of bounded depth, and
every trial is checked against the search space of the job's validated spec: at most
``n_trials`` (or ``MAX_TRIALS``) trials, finite values, a value per epoch for
at most the epochs the spec lets a trial train, short attributes. Read it back with
``optuna.load_study(study_name="job-<id>", storage=<database URL>)``.

``trial_pool`` is where a job started with ``--dask-scheduler`` runs its trials: the
cluster's workers, through the client's ``concurrent.futures`` executor.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from concurrent.futures import Executor
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, cast

from mlaas4hep.documents import load_json
from mlaas4hep.errors import Conflict, DataQualityError, PayloadTooLarge, SpecError
from mlaas4hep.spec import (
    CategoricalParamSpec,
    FloatParamSpec,
    IntParamSpec,
    PipelineSpec,
    TuneSpec,
    validate_spec,
)
from mlaas4hep.train.tune_space import distributions, encode

if TYPE_CHECKING:
    import optuna

    from mlaas4hep.jobs.dask_map import DaskDistributor
    from mlaas4hep.jobs.records import JobRecord

TRIALS_FILE = "tune/trials.json"
MAX_TRIALS_BYTES = 32 << 20
MAX_TRIALS = 10_000  # the most trials a search may ask for (TuneSpec.n_trials)
MAX_ERROR_CHARS = 2000  # what the search itself keeps of a trial's error
_STATES = ("complete", "pruned", "failed")


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

    None when the job's spec has no ``tune:`` section. *result_dir*'s parent is trusted
    (the job's directory, the service's own); nothing below it is.

    Raises:
        DataQualityError: ``tune/trials.json`` is missing, a link or a special file, too
            large or too deep, or not what the search of this spec writes.
        Conflict: the database already holds this job's study.
    """
    if not raw_spec.get("tune"):  # most jobs (and apply jobs, whose spec is another kind)
        return None
    spec = validate_spec(raw_spec, origin=f"job {job_id}")
    if spec.tune is None:
        return None
    rows = _read(result_dir)
    cap = min(spec.tune.n_trials or MAX_TRIALS, MAX_TRIALS)
    if len(rows) > cap:
        msg = f"{TRIALS_FILE} lists {len(rows)} trials; this search ran at most {cap}"
        raise DataQualityError(msg)
    epochs = max_epochs(spec)
    trials = [_trial(spec.tune, row, epochs) for row in rows]
    name = study_name(job_id)
    _store(db_url, name, spec.tune, trials)
    return name


def _read(result_dir: Path) -> list[dict[str, Any]]:
    """The trial rows of ``result_dir/tune/trials.json``, read as hostile content."""
    from mlaas4hep.serve.intake import open_directory, open_plain

    tune_dir, name = PurePath(TRIALS_FILE).parent, PurePath(TRIALS_FILE).name
    try:
        dir_fd = open_directory(result_dir.parent, PurePath(result_dir.name) / tune_dir)
        try:
            fd = open_plain(dir_fd, name, MAX_TRIALS_BYTES)
        finally:
            os.close(dir_fd)
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(MAX_TRIALS_BYTES + 1)
        doc = load_json(data, what=TRIALS_FILE, limit=MAX_TRIALS_BYTES)
    except (OSError, SpecError, PayloadTooLarge) as exc:
        msg = f"the job's {TRIALS_FILE} cannot be read: {exc}"
        raise DataQualityError(msg) from exc
    rows = doc.get("trials") if isinstance(doc, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        msg = f"the job's {TRIALS_FILE} has no list of trials"
        raise DataQualityError(msg)
    return rows


def max_epochs(spec: PipelineSpec) -> int:
    """The most epochs a trial of *spec*'s search trains (``train.epochs`` or its range)."""
    param = spec.tune.space.get("train.epochs") if spec.tune else None
    if isinstance(param, IntParamSpec | FloatParamSpec):
        return int(param.high)
    if isinstance(param, CategoricalParamSpec):
        return max((int(c) for c in param.choices if isinstance(c, int | float)), default=1)
    return spec.train.epochs


def _trial(tune: TuneSpec, row: dict[str, Any], epochs: int) -> optuna.trial.FrozenTrial:
    """One row as an Optuna trial, checked against the spec's search space."""
    import optuna
    from optuna.trial import TrialState

    state = row.get("state")
    params = row.get("params")
    number = _shown(row.get("number"))
    if state not in _STATES or not isinstance(params, dict) or set(params) != set(tune.space):
        msg = f"{TRIALS_FILE}: trial {number} is not a trial of this search"
        raise DataQualityError(msg)
    value = _number(row.get("value")) if state == "complete" else None
    try:
        return optuna.trial.create_trial(
            state={"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED,
                   "failed": TrialState.FAIL}[state],
            value=value,
            params={p: encode(v) for p, v in params.items()},
            distributions=distributions(tune),
            intermediate_values=_curve(row.get("intermediate"), epochs),
            user_attrs=_attrs(row),
        )  # fmt: skip
    except (ValueError, TypeError, AttributeError) as exc:
        msg = f"{TRIALS_FILE}: trial {number} does not fit the search: {str(exc)[:300]}"
        raise DataQualityError(msg) from exc


def _curve(curve: Any, epochs: int) -> dict[int, float]:
    """The per-epoch values: epochs 1..*epochs*, finite numbers (others are dropped)."""
    if curve is None:
        return {}
    if not isinstance(curve, dict) or len(curve) > epochs:
        raise ValueError(f"intermediate is not a mapping of at most {epochs} epochs")
    out: dict[int, float] = {}
    for key, v in curve.items():
        digits = isinstance(key, str) and len(key) <= 7 and key.isascii() and key.isdigit()
        step = int(key) if digits else 0
        if not 1 <= step <= epochs:
            raise ValueError(f"intermediate: {_shown(key)} is not an epoch 1..{epochs}")
        value = _number(v)
        if value is not None:
            out[step] = value
    return out


def _attrs(row: dict[str, Any]) -> dict[str, Any]:
    """``seconds`` and ``epochs`` as numbers, ``error`` as a short text; nothing else."""
    out: dict[str, Any] = {}
    for key in ("seconds", "epochs"):
        value = _number(row.get(key))
        if value is not None:
            out[key] = int(value) if key == "epochs" and value.is_integer() else value
    error = row.get("error")
    if error is not None:
        out["error"] = str(error)[:MAX_ERROR_CHARS]
    return out


def _number(value: Any) -> float | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)  # an int of 400 digits overflows
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _shown(value: Any) -> str:
    """*value* for a message: its ``repr``, at most 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


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
