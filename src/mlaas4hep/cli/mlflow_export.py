"""``mlaas4hep mlflow-export BUNDLE_DIR``: a finished bundle as a run on an MLflow server.

The bundle is what ``mlaas4hep run --out`` wrote or a service job's downloaded artifacts
(``mlaas4hep download JOB --out DIR``). The tracking URI is ``--tracking-uri``, else
``$MLFLOW_TRACKING_URI``; the experiment ``--experiment``, else ``$MLFLOW_EXPERIMENT_NAME``,
else the spec's name. Credentials come from MLflow's own variables
(``MLFLOW_TRACKING_TOKEN``, ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``).
The outcome is also written to ``BUNDLE_DIR/mlflow.json`` when the directory is writable.
What is logged: ``mlaas4hep.train.tracking``.

``mlaas4hep run SPEC --out DIR --mlflow [URI]`` calls :func:`export_after_run` once the
bundle is written: a failed export is a warning there, never a failed run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from mlaas4hep.train.tracking import (
    ENV_EXPERIMENT,
    ExportResult,
    ExportTarget,
    TrackingError,
    check_installed,
    export_bundle,
    export_safely,
    redact,
    resolve_tracking_uri,
    write_marker,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="the bundle directory (holds model.onnx)")
    parser.add_argument(
        "--tracking-uri", metavar="URI", help="the MLflow server (default: $MLFLOW_TRACKING_URI)"
    )
    parser.add_argument(
        "--experiment",
        metavar="NAME",
        help="experiment name (default: $MLFLOW_EXPERIMENT_NAME, else the spec's name)",
    )
    parser.add_argument("--run-name", metavar="NAME", help="run name (default: NAME-<UTC time>)")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")


def run(args: argparse.Namespace) -> int:
    target = ExportTarget(
        tracking_uri=resolve_tracking_uri(args.tracking_uri),
        experiment=args.experiment or os.environ.get(ENV_EXPERIMENT) or None,
        run_name=args.run_name,
    )
    try:
        with contextlib.redirect_stdout(sys.stderr):  # MLflow prints "View run" lines
            result = export_bundle(args.bundle, target)
    except TrackingError as exc:
        failed = ExportResult(ok=False, tracking_uri=redact(target.tracking_uri), error=str(exc))
        _record(args.bundle, failed)
        raise
    _record(args.bundle, result)
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        _report(result, sys.stdout)
    return 0


def check_run_option(uri: str | None) -> str:
    """The tracking URI of ``mlaas4hep run --mlflow [URI]``, checked before training starts
    (so a missing client or URI is not found out hours later). Raises TrackingError."""
    check_installed()
    return resolve_tracking_uri(uri)


def export_after_run(
    bundle: Path, uri: str, experiment: str | None, tags: Mapping[str, str] | None = None
) -> ExportResult:
    """Export a bundle just written by ``mlaas4hep run``; a failure is printed as a
    warning on stderr and recorded in ``mlflow.json``, never raised."""
    target = ExportTarget(
        tracking_uri=uri,
        experiment=experiment or os.environ.get(ENV_EXPERIMENT) or None,
        tags=dict(tags or {}),
    )
    with contextlib.redirect_stdout(sys.stderr):  # stdout may be --progress-json lines
        result = export_safely(bundle, target)
    _record(bundle, result)
    if result.ok:
        _report(result, sys.stderr)
    else:
        print(
            f"[mlflow] warning: the export to MLflow failed: {result.error}. The run succeeded "
            f"and its bundle {str(bundle)!r} is complete; export it later with: mlaas4hep "
            f"mlflow-export {bundle} --tracking-uri {redact(uri)}",
            file=sys.stderr,
        )
    return result


def _record(bundle: Path, result: ExportResult) -> None:
    try:
        write_marker(bundle, result)
    except OSError as exc:  # a read-only download: the printed outcome is what is left
        print(f"[mlflow] note: cannot write {bundle}/mlflow.json: {exc.strerror}", file=sys.stderr)


def _report(result: ExportResult, out: TextIO) -> None:
    verb = "already exported as" if result.reused else "exported as"
    where = result.run_url or f"run {result.run_id}"
    print(f"[mlflow] {verb} {where} (experiment {result.experiment!r})", file=out)
    for note in result.notes:
        print(f"[mlflow] note: {note}", file=out)
