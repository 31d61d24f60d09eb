"""Comparing runs side by side, and a run's spec as an editable document (clone).

:func:`compare` takes 2 to ``MAX_COMPARED`` of the caller's runs and returns every
parameter (flattened spec) with its value per run and whether they differ, every scalar
test metric per run, and each run's curves (``plots/curves.json`` written by training,
:mod:`mlaas4hep.train.curves`; the per-epoch history of ``metrics.json`` when that file is
missing). :func:`editable_spec` gives back the spec a run was submitted with, as YAML, for
the submit form's "clone and edit".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from mlaas4hep.data.inputs import DATASET_PREFIX
from mlaas4hep.errors import SpecError
from mlaas4hep.jobs.runs import Run, read_artifact_json, run_of
from mlaas4hep.jobs.service import JobService

MAX_COMPARED = 10
CURVES = "plots/curves.json"


@dataclass(frozen=True)
class Row:
    """One parameter or metric: its value in each compared run (None: absent)."""

    key: str
    values: list[Any]
    differs: bool


@dataclass(frozen=True)
class Comparison:
    """What :func:`compare` returns."""

    runs: list[Run]
    params: list[Row]
    metrics: list[Row]
    curves: list[dict[str, Any]]  # per run, in order: {"roc": [...], "history": [...], ...}


def compare(service: JobService, owner: str | None, job_ids: Sequence[str]) -> Comparison:
    """Compare the runs *job_ids* of *owner* (None: an admin, anyone's).

    Raises:
        SpecError: fewer than 2 or more than ``MAX_COMPARED`` distinct ids.
        NotFound: one of them is not among the caller's jobs (another user's neither).
    """
    ids = list(dict.fromkeys(job_ids))
    if not 2 <= len(ids) <= MAX_COMPARED:
        msg = f"compare 2 to {MAX_COMPARED} distinct runs; got {len(ids)}"
        raise SpecError(msg)
    runs = [run_of(service, service.get(i, owner)) for i in ids]
    params = _rows([r.params for r in runs])
    metrics = _rows([dict(r.metrics) for r in runs])
    return Comparison(runs, params, metrics, [curves_of(service, r) for r in runs])


def _rows(dicts: Sequence[dict[str, Any]]) -> list[Row]:
    keys = list(dict.fromkeys(k for d in dicts for k in d))
    rows = []
    for key in keys:
        values = [d.get(key) for d in dicts]
        shown = {json.dumps(v, sort_keys=True, default=str) for v in values}
        rows.append(Row(key, values, len(shown) > 1))
    return rows


def curves_of(service: JobService, run: Run) -> dict[str, Any]:
    """The run's ``curves.json`` (empty lists when it has none); the history falls back
    to ``metrics.json``, so a run trained before curves were written still shows it."""
    doc = read_artifact_json(service, run.job, CURVES) if run.metrics else {}
    out = {key: _list(doc.get(key)) for key in ("roc", "scores", "history")}
    if not out["history"] and run.metrics:
        metrics = read_artifact_json(service, run.job, "metrics.json")
        out["history"] = _list(metrics.get("history"))
    return out


def _list(value: Any) -> list[Any]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def editable_spec(service: JobService, owner: str, run: Run) -> str:
    """The spec of *run* as YAML, its uploaded inputs named ``dataset:NAME`` again.

    The store keeps the spec with ``dataset:NAME`` resolved to the upload's path inside the
    service; submitted again, such a path is refused, so it goes back to the name when it
    is one of *owner*'s datasets (another path stays as it was).
    """
    spec = json.loads(run.job.spec)
    mine = service.datasets.list_datasets(owner)
    paths = {str(d.path): f"{DATASET_PREFIX}{d.name}" for d in mine}
    data = spec.get("data") if isinstance(spec, dict) else None
    for entry in data.get("datasets", []) if isinstance(data, dict) else []:
        if isinstance(entry, dict) and isinstance(entry.get("files"), list):
            entry["files"] = [paths.get(f, f) if isinstance(f, str) else f for f in entry["files"]]
    return yaml.safe_dump(spec, sort_keys=False)
