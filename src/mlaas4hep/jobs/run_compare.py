"""Comparing runs side by side, and a run's spec as an editable document (clone).

:func:`compare` takes 2 to ``MAX_COMPARED`` of the caller's runs and returns every
parameter (flattened spec) with its value per run and whether they differ, every scalar
test metric per run, and each run's curves (``plots/curves.json`` written by training,
:mod:`mlaas4hep.train.curves`; the per-epoch history of ``metrics.json`` when that file is
missing). :func:`editable_spec` gives back the spec a run was submitted with, as YAML, for
the submit form's "clone and edit".
"""

from __future__ import annotations

import itertools
import json
import math
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
#: Bounds on what a run's curves bring to a page (``curves.json`` is the job's: hostile).
MAX_CURVES = 32
MAX_POINTS = 1001
_MAX_LABEL = 64
MAX_CLASSES = 32
MAX_CELLS = 100
MAX_FEATURES = 100
_MAX_EPOCH_KEYS = 32


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


def curves_of(service: JobService, run: Run, *, charts: bool = False) -> dict[str, Any]:
    """The run's ``curves.json`` (empty lists when it has none); the history falls back
    to ``metrics.json``, so a run trained before curves were written still shows it.
    *charts*: with the confusion matrix, regression and importance too (the job page).

    The job wrote both files: only what :func:`clean_curves` keeps reaches a page."""
    doc = read_artifact_json(service, run.job, CURVES) if run.metrics else {}
    out: dict[str, Any] = clean_curves(doc)
    if charts:
        out |= clean_charts(doc)
    if not out["history"] and run.metrics:
        metrics = read_artifact_json(service, run.job, "metrics.json")
        out["history"] = clean_curves({"history": metrics.get("history")})["history"]
    return out


def clean_curves(doc: Any) -> dict[str, list[dict[str, Any]]]:
    """The well-formed part of a ``curves.json`` document (:mod:`mlaas4hep.train.curves`):
    at most ``MAX_CURVES`` ROC and score curves of at most ``MAX_POINTS`` numbers (or
    nulls) each, labels cut to ``_MAX_LABEL`` printable characters, at most
    ``MAX_POINTS`` epochs of at most ``_MAX_EPOCH_KEYS`` finite numbers. Anything else
    (wrong types, unequal lengths, giant arrays, control characters) is dropped."""
    doc = doc if isinstance(doc, dict) else {}
    roc = [_roc(c) for c in _dicts(doc.get("roc"), MAX_CURVES)]
    scores = [_score(c) for c in _dicts(doc.get("scores"), MAX_CURVES)]
    history = [_epoch(h) for h in _dicts(doc.get("history"), MAX_POINTS)]
    return {
        "roc": [c for c in roc if c is not None],
        "scores": [c for c in scores if c is not None],
        "history": [h for h in history if h is not None],
    }


def clean_charts(doc: Any) -> dict[str, dict[str, Any]]:
    """The well-formed ``confusion``, ``regression`` and ``importance`` of a ``curves.json``
    document: at most ``MAX_CLASSES`` classes, ``MAX_CELLS`` x ``MAX_CELLS`` bins,
    ``MAX_CURVES`` response bins and ``MAX_FEATURES`` features; a section that is not
    well formed is left out whole."""
    doc = doc if isinstance(doc, dict) else {}
    made = {"confusion": _confusion(doc.get("confusion")),
            "regression": _regression(doc.get("regression")),
            "importance": _importance(doc.get("importance"))}  # fmt: skip
    return {k: v for k, v in made.items() if v is not None}


def _confusion(c: Any) -> dict[str, Any] | None:
    classes = c.get("classes") if isinstance(c, dict) else None
    if not isinstance(classes, list) or not 2 <= len(classes) <= MAX_CLASSES:
        return None
    out: dict[str, Any] = {"classes": [_label(n) for n in classes]}
    for key in ("fraction", "weight", "events"):
        out[key] = _matrix(c.get(key), len(classes), len(classes))
        if out[key] is None:
            return None
    return out


def _regression(r: Any) -> dict[str, Any] | None:
    given = _numbers(r.get("edges")) if isinstance(r, dict) else None
    edges = [e for e in given or [] if e is not None]
    if given is None or len(edges) != len(given) or not 3 <= len(edges) <= MAX_CELLS + 1:
        return None
    if any(b <= a for a, b in itertools.pairwise(edges)):
        return None
    counts = _matrix(r.get("counts"), len(edges) - 1, len(edges) - 1)
    keys = ("low", "high", "n_events", "response", "resolution")
    bins = [{k: _number(b.get(k)) for k in keys} for b in _dicts(r.get("bins"), MAX_CURVES)]
    if counts is None:
        return None
    return {"definition": _label(r.get("definition")), "edges": edges, "counts": counts,
            "bins": bins}  # fmt: skip


def _importance(i: Any) -> dict[str, Any] | None:
    if not isinstance(i, dict) or not isinstance(i.get("features"), list):
        return None
    rows = [
        {"name": _label(f.get("name")), "importance": _number(f.get("importance")),
         "std": _number(f.get("std"))}
        for f in _dicts(i.get("features"), MAX_FEATURES)
    ]  # fmt: skip
    return {"metric": _label(i.get("metric")), "features": rows}


def _matrix(value: Any, n_rows: int, n_columns: int) -> list[list[float | None]] | None:
    if not isinstance(value, list) or len(value) != n_rows:
        return None
    rows = []
    for row in value:
        numbers = _numbers(row)
        if numbers is None or len(numbers) != n_columns:
            return None
        rows.append(numbers)
    return rows


def _dicts(value: Any, limit: int) -> list[dict[str, Any]]:
    return [v for v in value[:limit] if isinstance(v, dict)] if isinstance(value, list) else []


def _roc(c: dict[str, Any]) -> dict[str, Any] | None:
    eff_s, eff_b = _numbers(c.get("eff_s")), _numbers(c.get("eff_b"))
    if eff_s is None or eff_b is None or len(eff_s) != len(eff_b):
        return None
    return {**_labels(c, ("class", "split")), "auc": _number(c.get("auc")), "eff_s": eff_s,
            "eff_b": eff_b}  # fmt: skip


def _score(c: dict[str, Any]) -> dict[str, Any] | None:
    edges, density = _numbers(c.get("edges")), _numbers(c.get("density"))
    if edges is None or density is None or len(edges) != len(density) + 1:
        return None
    return {**_labels(c, ("class", "split", "score_of")), "edges": edges, "density": density}


def _epoch(h: dict[str, Any]) -> dict[str, float] | None:
    epoch = _number(h.get("epoch"))  # curves.json writes it as a float (1.0)
    if epoch is None or not epoch.is_integer() or not 0 <= epoch < 1e9:
        return None
    out: dict[str, float] = {"epoch": int(epoch)}
    for key, value in list(h.items())[: _MAX_EPOCH_KEYS * 4]:
        number = _number(value)
        if number is None or key == "epoch" or not key or _label(key) != key:
            continue
        if len(out) <= _MAX_EPOCH_KEYS:
            out[key] = number
    return out


def _labels(c: dict[str, Any], keys: Sequence[str]) -> dict[str, str]:
    return {k: _label(c.get(k)) for k in keys}


def _label(value: Any) -> str:
    text = value if isinstance(value, str) else ""
    return "".join(ch for ch in text[:_MAX_LABEL] if ch.isprintable())


def _numbers(value: Any) -> list[float | None] | None:
    if not isinstance(value, list) or len(value) > MAX_POINTS:
        return None
    return [_number(v) for v in value]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


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
