"""Response bodies of the job and dataset API (pydantic; they make the OpenAPI schema)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from mlaas4hep.jobs import progress as prog
from mlaas4hep.jobs.datasets import Dataset, UploadState
from mlaas4hep.jobs.run_compare import Comparison
from mlaas4hep.jobs.runs import Run
from mlaas4hep.jobs.service import Artifact
from mlaas4hep.jobs.states import State
from mlaas4hep.jobs.store import JobRecord

API_PREFIX = "/api/v1"
_PROGRESS_KEYS = ("phase", "epoch", "epochs", "events", "total", "message")


def iso(ts: float | None) -> datetime | None:
    """UNIX seconds -> an aware UTC datetime (ISO 8601 in JSON)."""
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


class Problem(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``)."""

    type: str = Field(description="URI naming the kind of problem")
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="for 422: one entry per invalid field (loc, msg)"
    )


class Progress(BaseModel):
    """What the running job last reported."""

    phase: str | None = Field(
        default=None, description="prepare (first pass), train, validate, export, evaluate, done"
    )
    epoch: int | None = Field(default=None, description="the epoch in progress, from 1")
    epochs: int | None = None
    events: int | None = Field(
        default=None, description="events processed so far in this pass (first pass or epoch)"
    )
    total: int | None = Field(default=None, description="events of this pass, once known")
    message: str | None = Field(default=None, description="what the job is doing, in words")
    eta_seconds: float | None = Field(
        default=None, description="seconds left in the whole job, at the rate so far"
    )
    metrics: dict[str, float] = Field(default_factory=dict)
    history: list[dict[str, float]] = Field(
        default_factory=list,
        description="per finished epoch: epoch, train_loss, val_loss, val_auc, ... (the "
        "newest 500)",
    )


class Deployment(BaseModel):
    """The model version a succeeded job with ``deploy:`` published."""

    model: str
    version: int


class JobLinks(BaseModel):
    """Where to go next."""

    self: str
    logs: str
    artifacts: str
    cancel: str


class Job(BaseModel):
    """A job: state, timestamps, progress, outcome."""

    id: str
    name: str
    state: State
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempt: int = Field(description="attempts started so far (a requeue starts another)")
    max_attempts: int
    cancel_requested: bool
    reason: str | None = Field(description="why it failed, was cancelled or requeued")
    progress: Progress | None
    deployed: Deployment | None = Field(default=None, description="the model it published")
    links: JobLinks
    run_name: str | None = Field(default=None, description="the run name given at submission")
    tags: dict[str, str] = Field(default_factory=dict, description="key=value run tags")
    parent: str | None = Field(default=None, description="the job this run belongs to")
    duration_seconds: float | None = Field(
        default=None, description="from start to end (so far, while it runs)"
    )

    @classmethod
    def of(cls, job: JobRecord) -> Job:
        base = f"{API_PREFIX}/jobs/{job.id}"
        progress = None
        if job.progress is not None:
            p = job.progress
            progress = Progress(
                **{k: p[k] for k in _PROGRESS_KEYS if k in p},
                metrics=p.get("metrics", {}),
                history=_history(p.get("history")),
                eta_seconds=(
                    prog.eta_seconds(p, job.started_at, time.time())
                    if job.state is State.RUNNING
                    else None
                ),
            )
        deployed = (job.progress or {}).get("deployed")
        return cls(
            id=job.id,
            name=job.name,
            state=job.state,
            created_at=iso(job.created_at),  # type: ignore[arg-type]
            updated_at=iso(job.updated_at),  # type: ignore[arg-type]
            started_at=iso(job.started_at),
            finished_at=iso(job.finished_at),
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            deployed=Deployment(**deployed) if isinstance(deployed, dict) else None,
            cancel_requested=job.cancel_requested,
            reason=job.reason,
            progress=progress,
            links=JobLinks(
                self=base,
                logs=f"{base}/logs",
                artifacts=f"{base}/artifacts",
                cancel=f"{base}/cancel",
            ),
            run_name=job.run_name,
            tags=job.tags,
            parent=job.parent,
            duration_seconds=job.duration,
        )


def _history(value: Any) -> list[dict[str, float]]:
    if not isinstance(value, list):
        return []
    return [
        {k: float(v) for k, v in h.items() if isinstance(v, int | float)}
        for h in value
        if isinstance(h, dict)
    ]


class JobList(BaseModel):
    """A page of jobs, newest first."""

    items: list[Job]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class RunSummary(BaseModel):
    """A job as a run: its labels, key parameters and scalar test metrics."""

    id: str
    title: str = Field(description="the run name, else the pipeline's name")
    run_name: str | None
    name: str = Field(description="the pipeline's name (spec name:)")
    state: State
    tags: dict[str, str]
    parent: str | None
    created_at: datetime
    duration_seconds: float | None
    params: dict[str, Any] = Field(description="key parameters (flattened spec keys)")
    metrics: dict[str, float] = Field(description="every scalar of metrics.json's test")
    url: str

    @classmethod
    def of(cls, run: Run, keys: Sequence[str] | None = None) -> RunSummary:
        """*keys*: the parameters to include (default: all of the run's)."""
        job = run.job
        params = run.params if keys is None else {k: run.params[k] for k in keys if k in run.params}
        return cls(
            id=job.id,
            title=job.title,
            run_name=job.run_name,
            name=job.name,
            state=job.state,
            tags=job.tags,
            parent=job.parent,
            created_at=iso(job.created_at),  # type: ignore[arg-type]
            duration_seconds=job.duration,
            params=params,
            metrics=run.metrics,
            url=f"{API_PREFIX}/jobs/{job.id}",
        )


class RunList(BaseModel):
    """The caller's runs (among their newest 500 jobs), filtered, searched and sorted."""

    items: list[RunSummary]
    param_columns: list[str] = Field(description="key parameters at least one run has")
    metric_columns: list[str] = Field(description="key test metrics at least one run has")


class CompareRow(BaseModel):
    """One parameter or metric across the compared runs (null: the run has none)."""

    key: str
    values: list[Any]
    differs: bool


class RunComparison(BaseModel):
    """2 to 10 runs side by side; ``curves`` per run as in ``plots/curves.json``."""

    runs: list[RunSummary]
    params: list[CompareRow]
    metrics: list[CompareRow]
    curves: list[dict[str, Any]] = Field(
        description="per run, in order: roc (eff_s, eff_b per class and split), scores "
        "(edges, density), history (per epoch)"
    )

    @classmethod
    def of(cls, c: Comparison) -> RunComparison:
        return cls(
            runs=[RunSummary.of(r, keys=()) for r in c.runs],
            params=[CompareRow(key=r.key, values=r.values, differs=r.differs) for r in c.params],
            metrics=[CompareRow(key=r.key, values=r.values, differs=r.differs) for r in c.metrics],
            curves=c.curves,
        )


class ArtifactInfo(BaseModel):
    """One downloadable file of a succeeded job."""

    name: str
    size: int | None = Field(description="bytes; null for the bundle, built on request")
    url: str


class ArtifactList(BaseModel):
    """The files of a succeeded job; ``bundle.tar.gz`` holds them all."""

    items: list[ArtifactInfo]

    @classmethod
    def of(cls, job_id: str, artifacts: list[Artifact]) -> ArtifactList:
        base = f"{API_PREFIX}/jobs/{job_id}/artifacts"
        return cls(
            items=[
                ArtifactInfo(
                    name=a.name, size=a.size if a.size >= 0 else None, url=f"{base}/{a.name}"
                )
                for a in artifacts
            ]
        )


class DatasetInfo(BaseModel):
    """An uploaded ROOT file; use ``uri`` in a spec's ``files``."""

    id: str
    name: str
    size: int
    sha256: str
    created_at: datetime
    uri: str = Field(description="'dataset:NAME', for data.datasets[].files")

    @classmethod
    def of(cls, ds: Dataset) -> DatasetInfo:
        return cls(
            id=ds.id,
            name=ds.name,
            size=ds.size,
            sha256=ds.sha256,
            created_at=iso(ds.created_at),  # type: ignore[arg-type]
            uri=f"dataset:{ds.name}",
        )


class DatasetList(BaseModel):
    """The caller's datasets, newest first."""

    items: list[DatasetInfo]


class UploadInfo(BaseModel):
    """A resumable upload: ``received`` of ``size`` bytes; ``dataset`` once complete."""

    sha256: str
    size: int
    received: int = Field(description="bytes the service holds: resume at this offset")
    name: str
    dataset: DatasetInfo | None = Field(
        default=None, description="the stored dataset, once every byte arrived and checked"
    )

    @classmethod
    def of(cls, state: UploadState) -> UploadInfo:
        ds = None if state.dataset is None else DatasetInfo.of(state.dataset)
        return cls(
            sha256=state.sha256,
            size=state.size,
            received=state.received,
            name=state.name,
            dataset=ds,
        )


class Health(BaseModel):
    """Liveness / readiness."""

    status: str
    checks: dict[str, str] = Field(default_factory=dict)
