"""Exporting a succeeded training job to MLflow (``tracking.mlflow_uri``), from the service.

Jobs run in a sandbox that may have no network and never sees the service's MLflow
credentials, so the service process exports, after the job is recorded as succeeded: an
export can neither fail nor delay a job's success, and a slow server only keeps this
executor slot from claiming its next job meanwhile. The job's output directory is read
as hostile, as a deploy reads it (``serve/intake.py``): only the bundle's allow-listed
files and the ``plots/`` images are copied, each a plain single-link file within the size
caps, into a private staging directory, and that copy is exported. The outcome goes to
``mlflow.json`` in the job's result directory (an artifact like the others) and to a line
of the job's log.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path, PurePath

from mlaas4hep.apply_request import is_apply_request
from mlaas4hep.config import Settings
from mlaas4hep.errors import SpecError
from mlaas4hep.jobs.layout import job_paths
from mlaas4hep.jobs.records import JobRecord
from mlaas4hep.jobs.states import State
from mlaas4hep.train.tracking import (
    PLOT_SUFFIXES,
    ExportResult,
    ExportTarget,
    export_safely,
    redact,
    write_marker,
)

log = logging.getLogger(__name__)
_MAX_PLOTS = 64
_MAX_PLOT_BYTES = 16 << 20


def export_job(settings: Settings, job: JobRecord) -> ExportResult | None:
    """Export *job*'s bundle when ``tracking.mlflow_uri`` is set and it is a succeeded
    training job (not an apply job); None when there is nothing to do. Never raises for
    an export failure: the result says it (and the marker and the log)."""
    uri = settings.tracking.mlflow_uri
    if not uri or job.state is not State.SUCCEEDED or job.result_dir is None:
        return None
    if is_apply_request(json.loads(job.spec)):
        return None
    paths = job_paths(settings.data_dir, job.id)
    result_dir = paths.root / job.result_dir
    experiment = settings.tracking.mlflow_experiment.replace("{owner}", job.owner)
    target = ExportTarget(
        tracking_uri=uri,
        experiment=experiment,
        tags={"mlaas4hep.job_id": job.id, "mlaas4hep.owner": job.owner},
    )
    with tempfile.TemporaryDirectory(prefix="mlaas4hep-mlflow-") as tmp:
        stage = Path(tmp) / "bundle"
        try:
            skipped = stage_bundle(settings.data_dir / "jobs", result_dir, stage)
        except (SpecError, OSError) as exc:
            error = f"the job's bundle cannot be exported: {exc}"
            result = ExportResult(ok=False, tracking_uri=redact(uri), error=error)
        else:
            result = export_safely(stage, target)
            if skipped:
                result = _with_notes(result, skipped)
    _record(job, result_dir, paths.log(job.attempt), result)
    return result


def stage_bundle(base: Path, result_dir: Path, stage: Path) -> list[str]:
    """Copy the bundle files and plots of ``result_dir`` (below the trusted *base*) into
    the new directory *stage*, refusing links, special files and oversized files.

    Returns notes on plots left out. Raises UnsafeModelFiles (a SpecError) or OSError.
    """
    from mlaas4hep.serve.intake import copy_artifacts, open_directory, open_plain

    rel = PurePath(result_dir.relative_to(base))
    stage.mkdir(mode=0o700)
    copy_artifacts(base, rel, stage)
    plots = result_dir / "plots"
    if not plots.is_dir() or plots.is_symlink():
        return []
    notes: list[str] = []
    dir_fd = open_directory(base, rel / "plots")
    try:
        names = sorted(n for n in os.listdir(dir_fd) if n.endswith(PLOT_SUFFIXES))
        (stage / "plots").mkdir()
        for name in names[:_MAX_PLOTS]:
            try:
                fd = open_plain(dir_fd, name, _MAX_PLOT_BYTES)
            except (SpecError, OSError) as exc:
                notes.append(f"plot {name!r} left out: {exc}")
                continue
            with os.fdopen(fd, "rb") as src, (stage / "plots" / name).open("xb") as dst:
                shutil.copyfileobj(src, dst)
        if len(names) > _MAX_PLOTS:
            notes.append(f"{len(names) - _MAX_PLOTS} plots past the first {_MAX_PLOTS} left out")
    finally:
        os.close(dir_fd)
    return notes


def _with_notes(result: ExportResult, notes: list[str]) -> ExportResult:
    from dataclasses import replace

    return replace(result, notes=(*result.notes, *notes))


def _record(job: JobRecord, result_dir: Path, log_path: Path, result: ExportResult) -> None:
    if result.ok:
        line = f"exported to MLflow: {result.run_url or result.run_id}"
        log.info("job %s: %s", job.id, line)
    else:
        line = f"warning: the export to MLflow failed (the job succeeded): {result.error}"
        log.warning("job %s: %s", job.id, line)
    lines = [line, *(f"MLflow note: {n}" for n in result.notes)]
    try:
        write_marker(result_dir, result)
        with log_path.open("a", encoding="utf-8") as fh:
            fh.writelines(f"[mlaas4hep] {text}\n" for text in lines)
    except OSError as exc:
        log.warning("job %s: cannot record the MLflow export: %s", job.id, exc)
