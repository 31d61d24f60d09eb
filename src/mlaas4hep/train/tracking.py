"""Exporting a finished bundle to an MLflow tracking server; mlaas4hep stays the system of record.

The bundle directory is the source: nothing here touches training. One export makes one
MLflow run in an experiment (default: the spec's name) holding

- tags: ``mlaas4hep.version``, ``mlaas4hep.spec_hash``, ``mlaas4hep.model_sha256`` (the
  export's identity), ``mlaas4hep.task``, ``mlaas4hep.engine``, ``mlaas4hep.evaluated_on``,
  ``mlaas4hep.warnings`` and the caller's (``mlaas4hep.job_id``, ``mlaas4hep.owner``), and the
  model card as the run's description (``mlflow.note.content``);
- params: the resolved spec's ``model``, ``train`` and ``preprocess`` sections flattened
  to dotted keys (``model.hidden`` = ``[128, 64]``) within MLflow's limits, each cut or
  omission a note (``tracking_values.py``);
- metrics: every numeric entry of ``metrics.json``'s ``history`` with ``step = epoch``, and
  the final ``test_*`` (else ``validation_*``), ``train_sample_*``, ``training_*`` and
  ``onnx_max_abs_diff`` values;
- artifacts laid out as the bundle: ``model.onnx``, ``spec.yaml``, ``README.md``,
  ``metrics.json``, ``features.json``, ``metadata.json`` and ``plots/``: downloading them
  gives a bundle that ``mlaas4hep apply`` and ``mlaas4hep.Model`` load.

Exporting the same model again into the same experiment finds the earlier run (by
``mlaas4hep.model_sha256``) and makes no second one. A server that cannot be reached is
found with one TCP connection (``CONNECT_TIMEOUT_S``) instead of MLflow's minutes of
retries. Credentials are MLflow's own variables (``MLFLOW_TRACKING_TOKEN``,
``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``, ``MLFLOW_TRACKING_INSECURE_TLS``,
...), read by the MLflow client; nothing here prints or stores them, and a user name or
password written into the URI is masked in every message.

``export_bundle`` raises :class:`TrackingError`; :func:`export_safely` never raises (a
failed export must not fail a run) and :func:`write_marker` records the outcome in the
bundle (``mlflow.json``). ``mlflow`` (or ``mlflow-skinny``) is imported only here, lazily:
``pip install 'mlaas4hep[mlflow]'``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.util
import json
import os
import socket
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mlaas4hep import __version__
from mlaas4hep.artifact import (
    CARD_FILE,
    FEATURES_FILE,
    MAX_DOCUMENT_BYTES,
    METADATA_FILE,
    METRICS_FILE,
    MODEL_FILE,
    PLOTS_DIR,
    SPEC_FILE,
    read_document,
)
from mlaas4hep.documents import load_yaml
from mlaas4hep.errors import Mlaas4hepError, SpecError
from mlaas4hep.train.tracking_values import (
    MAX_EXPERIMENT_NAME_LENGTH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_PER_BATCH,
    MAX_TAG_VALUE_LENGTH,
    cut,
    epoch_metrics,
    final_metrics,
    flatten_params,
    valid_key,
)

#: The export's outcome, written into the bundle directory (see :func:`write_marker`).
MARKER_FILE = "mlflow.json"
#: The files of a bundle that are logged (at the artifact root, as in the bundle).
BUNDLE_ARTIFACTS = (MODEL_FILE, SPEC_FILE, CARD_FILE, METRICS_FILE, FEATURES_FILE, METADATA_FILE)
#: Plot files logged under ``plots/``.
PLOT_SUFFIXES = (".png", ".pdf", ".svg")
INSTALL_HINT = "pip install 'mlaas4hep[mlflow]'"
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
ENV_EXPERIMENT = "MLFLOW_EXPERIMENT_NAME"
CONNECT_TIMEOUT_S = 5.0

_SHA_TAG = "mlaas4hep.model_sha256"


class TrackingError(Mlaas4hepError):
    """Exporting to the tracking server failed (unreachable, refused, not installed)."""


@dataclass(frozen=True)
class ExportTarget:
    """Where and as what a bundle is exported.

    ``experiment``: the experiment's name (default: the spec's name); ``run_name``:
    default ``<spec name>-<job id>`` with a job id, else ``<spec name>-<UTC time>``;
    ``tags``: more run tags (``mlaas4hep.job_id``, ``mlaas4hep.owner``).
    """

    tracking_uri: str
    experiment: str | None = None
    run_name: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportResult:
    """What an export did; ``ok`` False carries the ``error``. Never holds credentials."""

    ok: bool
    tracking_uri: str
    experiment: str | None = None
    experiment_id: str | None = None
    run_id: str | None = None
    run_url: str | None = None
    reused: bool = False
    notes: tuple[str, ...] = ()
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "tracking_uri": self.tracking_uri,
            "experiment": self.experiment,
            "experiment_id": self.experiment_id,
            "run_id": self.run_id,
            "run_url": self.run_url,
            "reused": self.reused,
            "notes": list(self.notes),
            "error": self.error,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "mlaas4hep_version": __version__,
        }


def resolve_tracking_uri(uri: str | None) -> str:
    """*uri*, else ``$MLFLOW_TRACKING_URI``; TrackingError when neither is set."""
    chosen = uri or os.environ.get(ENV_TRACKING_URI, "")
    if not chosen.strip():
        msg = (
            f"no MLflow tracking URI: give one (--mlflow URI, --tracking-uri URI) or set "
            f"{ENV_TRACKING_URI}, e.g. http://127.0.0.1:5000"
        )
        raise TrackingError(msg)
    return chosen.strip()


def check_installed() -> None:
    """TrackingError with the install command unless the MLflow client can be imported."""
    if importlib.util.find_spec("mlflow") is None:
        msg = f"exporting to MLflow needs the MLflow client; install it: {INSTALL_HINT}"
        raise TrackingError(msg)


def redact(uri: str) -> str:
    """*uri* with a user name and password in it replaced by ``***``."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    return urlunsplit(parts._replace(netloc="***@" + _host_port(uri)))


def _host_port(uri: str) -> str:
    """``host[:port]`` of *uri*, without user name or password (IPv6 in brackets)."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    try:
        port = parts.port
    except ValueError:  # not a number: shown as nothing rather than failing a message
        port = None
    return host + (f":{port}" if port else "")


def export_safely(bundle: Path, target: ExportTarget) -> ExportResult:
    """:func:`export_bundle`, its failure returned as ``ok=False`` instead of raised."""
    try:
        return export_bundle(bundle, target)
    except TrackingError as exc:
        return ExportResult(ok=False, tracking_uri=redact(target.tracking_uri), error=str(exc))
    except Exception as exc:  # the run succeeded: an export bug must not undo it
        error = f"unexpected {type(exc).__name__}: {_short(exc)}"
        return ExportResult(ok=False, tracking_uri=redact(target.tracking_uri), error=error)


def write_marker(bundle: Path, result: ExportResult) -> None:
    """Write ``mlflow.json`` into *bundle* atomically (a temporary file renamed over it, so
    a link planted under that name is replaced, never followed). Raises OSError."""
    from mlaas4hep.train.atomic import atomic_write_text

    if not bundle.is_dir():  # never create a directory for a mistyped path
        raise NotADirectoryError(errno.ENOTDIR, "not a bundle directory", str(bundle))
    atomic_write_text(bundle / MARKER_FILE, json.dumps(result.to_json(), indent=2) + "\n")


def export_bundle(bundle: Path, target: ExportTarget) -> ExportResult:
    """Export the bundle directory *bundle* as one MLflow run (see the module docstring).

    Raises:
        TrackingError: MLflow is not installed, the server cannot be reached or refuses
            a request, the experiment is deleted, or the bundle cannot be read.
    """
    check_installed()
    content = read_bundle(bundle)
    uri = target.tracking_uri
    shown = redact(uri)
    experiment = experiment_name(target.experiment, content.name)
    _probe(uri)
    from mlflow.exceptions import MlflowException

    try:
        return _export(content, target, experiment)
    except MlflowException as exc:
        msg = f"the MLflow server {shown!r} refused the export: {_short(exc)}"
        raise TrackingError(msg) from exc
    except OSError as exc:  # requests' ConnectionError is an OSError too
        msg = f"the MLflow server {shown!r} could not be reached during the export: {_short(exc)}"
        raise TrackingError(msg) from exc


def experiment_name(configured: str | None, spec_name: str) -> str:
    """The experiment: *configured* (``{name}`` replaced by the spec's name), else the spec's
    name, cut to MLflow's limit."""
    name = (configured or "{name}").replace("{name}", spec_name).strip() or spec_name
    return name[:MAX_EXPERIMENT_NAME_LENGTH]


# -- reading the bundle ----------------------------------------------------------------------


@dataclass(frozen=True)
class BundleContent:
    """What an export reads from a bundle directory."""

    root: Path
    name: str
    spec: Mapping[str, Any]
    metrics: Mapping[str, Any]
    metadata: Mapping[str, Any]
    card: str
    model_sha256: str
    files: tuple[tuple[Path, str | None], ...]  # (file, artifact folder or None for the root)


def read_bundle(bundle: Path) -> BundleContent:
    """The documents and artifact files of *bundle*; TrackingError when it is no bundle."""
    try:
        model = bundle / MODEL_FILE
        sha = _sha256(model)
        spec = _mapping(
            load_yaml((bundle / SPEC_FILE).read_bytes(), what=SPEC_FILE, limit=MAX_DOCUMENT_BYTES)
        )
        metrics = _mapping(read_document(bundle / METRICS_FILE))
        metadata = (
            _mapping(read_document(bundle / METADATA_FILE))
            if (bundle / METADATA_FILE).is_file()
            else {}
        )
        card_path = bundle / CARD_FILE
        card = card_path.read_text("utf-8", errors="replace") if card_path.is_file() else ""
    except (OSError, SpecError) as exc:
        msg = (
            f"{str(bundle)!r} is not a complete mlaas4hep bundle ({_short(exc)}); give the "
            f"directory `mlaas4hep run --out` wrote (or a downloaded job's artifacts)"
        )
        raise TrackingError(msg) from exc
    files: list[tuple[Path, str | None]] = [
        (bundle / n, None) for n in BUNDLE_ARTIFACTS if (bundle / n).is_file()
    ]
    plots = bundle / PLOTS_DIR
    if plots.is_dir():
        files += [
            (p, PLOTS_DIR)
            for p in sorted(plots.iterdir())
            if p.suffix in PLOT_SUFFIXES and p.is_file() and not p.is_symlink()
        ]
    name = str(spec.get("name") or bundle.resolve().name)
    return BundleContent(bundle, name, spec, metrics, metadata, card, sha, tuple(files))


def _mapping(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        msg = f"expected a mapping, got {type(value).__name__}"
        raise SpecError(msg)
    return value


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def run_tags(content: BundleContent, target: ExportTarget) -> dict[str, str]:
    """The run's tags: mlaas4hep's, the caller's, the card as the run's description."""
    metrics, model = content.metrics, content.spec.get("model")
    warnings = metrics.get("warnings")
    codes = [str(w.get("code")) for w in warnings or () if isinstance(w, Mapping)]
    tags = {
        "mlaas4hep.version": __version__,
        _SHA_TAG: content.model_sha256,
        "mlaas4hep.spec_name": content.name,
        "mlaas4hep.spec_hash": str(content.metadata.get("spec_hash") or ""),
        "mlaas4hep.task": str(metrics.get("task") or ""),
        "mlaas4hep.engine": str(model.get("kind") or "") if isinstance(model, Mapping) else "",
        "mlaas4hep.evaluated_on": str(metrics.get("evaluated_on") or ""),
        "mlaas4hep.warnings": ",".join(codes),
        "mlflow.source.name": "mlaas4hep",
        **target.tags,
    }
    if content.card:
        tags["mlflow.note.content"] = cut(content.card, MAX_TAG_VALUE_LENGTH)
    return {k: cut(v, MAX_TAG_VALUE_LENGTH) for k, v in tags.items() if v and valid_key(k)}


def _short(exc: BaseException, limit: int = 400) -> str:
    text = str(exc).strip().replace("\n", " ") or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


# -- talking to the server -----------------------------------------------------------------


def _probe(uri: str) -> None:
    """Refuse at once when an http(s) server cannot be reached: MLflow's own retries take
    minutes. Skipped behind a proxy (the client goes through it) and for other schemes."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    host = parts.hostname
    if urllib.request.getproxies().get(parts.scheme) and not urllib.request.proxy_bypass(host):
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or _short(exc)
        msg = (
            f"cannot reach the MLflow tracking server {redact(uri)!r} ({why}); check the URI "
            f"and that the server runs"
        )
        raise TrackingError(msg) from exc


def _export(content: BundleContent, target: ExportTarget, experiment: str) -> ExportResult:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=target.tracking_uri)
    shown = redact(target.tracking_uri)
    experiment_id = _experiment_id(client, experiment)
    params, notes = flatten_params(content.spec)
    found = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{_SHA_TAG}` = '{content.model_sha256}' and attributes.status = 'FINISHED'"
        ),
        max_results=1,
    )
    if found:
        run_id = found[0].info.run_id
        return ExportResult(
            ok=True, tracking_uri=shown, experiment=experiment, experiment_id=experiment_id,
            run_id=run_id, run_url=_run_url(target.tracking_uri, experiment_id, run_id),
            reused=True,
        )  # fmt: skip
    tags = run_tags(content, target)
    if notes:
        tags["mlaas4hep.export_notes"] = cut("; ".join(notes), MAX_TAG_VALUE_LENGTH)
    run = client.create_run(experiment_id, run_name=_run_name(content, target), tags=tags)
    run_id = run.info.run_id
    try:
        _log_values(client, run_id, params, content.metrics)
        for path, folder in content.files:
            client.log_artifact(run_id, str(path), artifact_path=folder)
    except BaseException:
        _mark_failed(client, run_id)
        raise
    client.set_terminated(run_id, "FINISHED")
    return ExportResult(
        ok=True, tracking_uri=shown, experiment=experiment, experiment_id=experiment_id,
        run_id=run_id, run_url=_run_url(target.tracking_uri, experiment_id, run_id),
        notes=tuple(notes),
    )  # fmt: skip


def _experiment_id(client: Any, name: str) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return str(client.create_experiment(name))
        except MlflowException:  # created meanwhile by a concurrent export
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.lifecycle_stage != "active":
        msg = (
            f"the MLflow experiment {name!r} is deleted; restore it "
            f"(mlflow experiments restore --experiment-id {found.experiment_id}) or export "
            f"into another experiment"
        )
        raise TrackingError(msg)
    return str(found.experiment_id)


def _log_values(client: Any, run_id: str, params: dict[str, str], metrics: Any) -> None:
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    items = [Param(k, v) for k, v in params.items()]
    for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[start : start + MAX_PARAMS_PER_BATCH])
    history = metrics.get("history") if isinstance(metrics.get("history"), list) else []
    values = [Metric(k, v, now, step) for k, v, step in epoch_metrics(history)]
    values += [Metric(k, v, now, 0) for k, v in final_metrics(metrics).items()]
    for start in range(0, len(values), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=values[start : start + MAX_METRICS_PER_BATCH])


def _mark_failed(client: Any, run_id: str) -> None:
    with contextlib.suppress(Exception):  # best effort: the original error is what matters
        client.set_terminated(run_id, "FAILED")


def _run_name(content: BundleContent, target: ExportTarget) -> str:
    if target.run_name:
        return target.run_name
    job = target.tags.get("mlaas4hep.job_id")
    suffix = job or time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"{content.name}-{suffix}"


def _run_url(uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI, without any credentials of the URI."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    base = urlunsplit((parts.scheme, _host_port(uri), parts.path.rstrip("/"), "", ""))
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
