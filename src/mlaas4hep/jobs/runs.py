"""Runs: a job seen as an experiment, with its labels, parameters and metrics.

A *run* is a job record plus what makes runs comparable: the labels given at submission
(:class:`RunLabels`: a run name, ``key=value`` tags, a parent job), the flattened
parameters of its spec (``model.kind``, ``train.lr``, ...) and the scalar test metrics of
its ``metrics.json``. :func:`list_runs` filters, searches and sorts the caller's newest
runs; :mod:`mlaas4hep.jobs.run_compare` compares a few of them side by side.

Nothing here knows about HTTP: the API's ``/runs`` routes, the UI's runs page and the CLI
call these functions with the caller's owner key (None for an admin), like every job
lookup.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mlaas4hep.documents import load_json
from mlaas4hep.errors import NotFound, PayloadTooLarge, SpecError
from mlaas4hep.jobs.records import JobRecord, RunLabels
from mlaas4hep.jobs.service import JobService
from mlaas4hep.jobs.states import State

MAX_TAGS = 20
MAX_RUN_NAME = 128
MAX_TAG_VALUE = 256
#: How many of the newest jobs a runs listing considers (filters apply within them).
MAX_RUNS = 500
_TAG_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}")
#: Unicode categories refused in names and tags: controls (C0, C1), format characters
#: (bidi overrides that reverse how a name reads, zero-width), line/paragraph separators,
#: surrogates and private use.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co"})
_MAX_ARTIFACT_JSON = 4 * 1024 * 1024
#: A run's scalar test metrics kept (``metrics.json`` is the job's: hostile), by name.
MAX_METRICS = 64
_MAX_METRIC_NAME = 64
#: The parameters a runs table shows as columns, when a run has them.
KEY_PARAMS = (
    "model.kind",
    "model.hidden",
    "model.max_depth",
    "model.n_estimators",
    "train.epochs",
    "train.lr",
    "train.batch_size",
)
#: The test metrics a runs table shows as columns, when a run has them.
KEY_METRICS = ("auc", "accuracy", "loss", "rmse", "response", "resolution")
SortOrder = Literal["asc", "desc"]


def check_labels(
    name: str | None, tags: Iterable[str] | Mapping[str, str], parent: str | None = None
) -> RunLabels:
    """Validate a run name and tags (``KEY=VALUE`` strings or a mapping).

    Raises:
        SpecError: a name or tag value too long or with control characters, a bad tag
            key, a repeated key, more than ``MAX_TAGS`` tags, a malformed parent id.
    """
    name = name.strip() if name else None
    if name is not None:
        _check_text(name, "the run name", MAX_RUN_NAME)
    pairs = list(tags.items()) if isinstance(tags, Mapping) else [_split_tag(t) for t in tags]
    if len(pairs) > MAX_TAGS:
        msg = f"{len(pairs)} tags given; a run has at most {MAX_TAGS}"
        raise SpecError(msg)
    out: dict[str, str] = {}
    for key, value in pairs:
        if not _TAG_KEY.fullmatch(key):
            msg = (
                f"tag key {key!r}: use 1 to 64 letters, digits and _ . : / -, starting with "
                "a letter or digit (e.g. --tag sample=ttbar)"
            )
            raise SpecError(msg)
        if key in out:
            msg = f"tag {key!r} given twice; give each key once"
            raise SpecError(msg)
        _check_text(value, f"the value of tag {key!r}", MAX_TAG_VALUE)
        out[key] = value
    if parent is not None and not re.fullmatch(r"[0-9a-f]{32}", parent):
        msg = f"parent {parent!r} is not a job id (32 hexadecimal digits)"
        raise SpecError(msg)
    return RunLabels(name or None, out, parent)


def _split_tag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        msg = f"tag {text!r} has no '='; write KEY=VALUE, e.g. sample=ttbar"
        raise SpecError(msg)
    return key.strip(), value.strip()


def _check_text(value: str, what: str, limit: int) -> None:
    if len(value) > limit:
        msg = f"{what} has {len(value)} characters; at most {limit}"
        raise SpecError(msg)
    bad = next((c for c in value if unicodedata.category(c) in _REFUSED_CATEGORIES), None)
    if bad is not None:
        msg = (
            f"{what} {value!r} contains control characters (U+{ord(bad):04X} "
            f"{unicodedata.name(bad, 'unnamed')}); use plain text"
        )
        raise SpecError(msg)


# ---- one run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """A job with its flattened parameters and scalar test metrics."""

    job: JobRecord
    params: dict[str, Any]
    metrics: dict[str, float]


def flatten(doc: Any, prefix: str = "") -> dict[str, Any]:
    """``{"model": {"kind": "mlp"}}`` -> ``{"model.kind": "mlp"}``; lists of scalars stay
    one value, lists of mappings get their index (``data.datasets.0.name``)."""
    if isinstance(doc, Mapping):
        out: dict[str, Any] = {}
        for key, value in doc.items():
            out |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(doc, list) and any(isinstance(v, Mapping | list) for v in doc):
        out = {}
        for i, value in enumerate(doc):
            out |= flatten(value, f"{prefix}.{i}")
        return out
    return {prefix: doc}


def run_of(service: JobService, job: JobRecord) -> Run:
    """The parameters and (for a succeeded job) test metrics of *job*."""
    try:
        spec = json.loads(job.spec)
    except ValueError:
        spec = {}
    metrics = read_artifact_json(service, job, "metrics.json") if _done(job) else {}
    test = metrics.get("test")
    return Run(job, flatten(spec) if isinstance(spec, dict) else {}, scalar_metrics(test))


def scalar_metrics(test: Any) -> dict[str, float]:
    """The finite numbers of a ``metrics.json`` ``test`` object, at most ``MAX_METRICS``
    of them, each named by 1 to 64 printable characters (others are dropped: the job
    wrote the file)."""
    out: dict[str, float] = {}
    for k, v in test.items() if isinstance(test, dict) else ():
        if len(out) == MAX_METRICS:
            break
        number = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        if number and 0 < len(k) <= _MAX_METRIC_NAME and k.isprintable():
            out[k] = float(v)
    return out


def _done(job: JobRecord) -> bool:
    return job.state is State.SUCCEEDED and job.result_dir is not None


def read_artifact_json(service: JobService, job: JobRecord, name: str) -> dict[str, Any]:
    """A JSON object a succeeded job wrote, or ``{}`` when missing, too large or invalid.

    The job wrote it, so it is hostile: at most one byte over the cap is read (a sparse
    20 GiB file costs nothing to make), links are not followed, only regular files read.
    """
    try:
        path = service.artifact_path(job, name)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return {}
            data = f.read(_MAX_ARTIFACT_JSON + 1)
        doc = load_json(data, what=name, limit=_MAX_ARTIFACT_JSON)
    except (NotFound, OSError, ValueError, PayloadTooLarge):
        return {}
    return doc if isinstance(doc, dict) else {}


# ---- listing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunQuery:
    """Filter, search and sort of a runs listing.

    ``search``: words that must each appear (case-insensitive) in the run name, pipeline
    name, id, a tag or a parameter value. ``tags``: ``KEY=VALUE`` (or ``KEY``) that must
    match. ``sort``: ``created``, ``name``, ``state``, ``duration``, ``param:KEY`` or
    ``metric:KEY``; runs without the value go last.
    """

    search: str = ""
    states: tuple[State, ...] = ()
    tags: tuple[str, ...] = ()
    parent: str | None = None
    sort: str = "created"
    order: SortOrder = "desc"
    limit: int = 100


def list_runs(service: JobService, owner: str | None, query: RunQuery) -> list[Run]:
    """The caller's runs among the newest ``MAX_RUNS`` jobs, filtered, searched, sorted.

    Raises:
        SpecError: an unknown sort key.
    """
    key = _sort_key(query.sort)
    jobs = service.store.list_jobs(owner, states=query.states, limit=MAX_RUNS)
    runs = [
        run_of(service, j)
        for j in jobs
        if _tags_match(j, query.tags) and (query.parent is None or j.parent == query.parent)
    ]
    words = query.search.lower().split()
    runs = [r for r in runs if all(w in search_text(r) for w in words)]
    present = [r for r in runs if key(r) is not None]
    missing = [r for r in runs if key(r) is None]
    present.sort(key=key, reverse=query.order == "desc")
    return (present + missing)[: query.limit]


def _tags_match(job: JobRecord, wanted: Sequence[str]) -> bool:
    for item in wanted:
        k, sep, v = item.partition("=")
        if k not in job.tags or (sep and job.tags[k] != v):
            return False
    return True


def search_text(run: Run) -> str:
    """What a search looks in (lower case): names, id, state, tags, key parameters."""
    job = run.job
    parts = [job.run_name or "", job.name, job.id, job.state.value]
    parts += [f"{k}={v}" for k, v in job.tags.items()]
    parts += [f"{k}={v}" for k, v in run.params.items() if k in KEY_PARAMS]
    return " ".join(parts).lower()


_SORTS: dict[str, Any] = {
    "created": lambda r: r.job.created_at,
    "name": lambda r: r.job.title.lower(),
    "state": lambda r: r.job.state.value,
    "duration": lambda r: r.job.duration,
}


def _sort_key(sort: str) -> Any:
    if sort in _SORTS:
        return _SORTS[sort]
    kind, _, name = sort.partition(":")
    if kind == "metric" and name:
        return lambda r: r.metrics.get(name)
    if kind == "param" and name:
        return lambda r: _comparable(r.params.get(name))
    msg = f"unknown sort {sort!r}; use one of {sorted(_SORTS)}, param:KEY or metric:KEY"
    raise SpecError(msg)


def _comparable(value: Any) -> Any:
    # Mixed parameter types (an int in one run, a list in another) still sort.
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, json.dumps(value, sort_keys=True, default=str))


def columns(runs: Sequence[Run]) -> tuple[list[str], list[str]]:
    """The key parameters and key metrics that at least one of *runs* has, in order."""
    params = [k for k in KEY_PARAMS if any(k in r.params for r in runs)]
    metrics = [k for k in KEY_METRICS if any(k in r.metrics for r in runs)]
    return params, metrics
