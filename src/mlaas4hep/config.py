"""Service settings, in one place: built once by the CLI and passed down.

Sources, later ones winning: the defaults below, a YAML file (``mlaas4hep serve --config``),
then environment variables ``MLAAS4HEP_<FIELD>``; a nested field uses ``__``, e.g.
``MLAAS4HEP_LIMITS__MEMORY_BYTES=8589934592`` or ``MLAAS4HEP_EXECUTOR__WORKERS=4``. A value
that does not validate raises :class:`~mlaas4hep.errors.SpecError` naming the field path.

The embedded default needs nothing: SQLite (WAL) in ``data_dir``, a local executor pool,
the service on 127.0.0.1:8000.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlaas4hep.documents import yaml_error_message
from mlaas4hep.errors import SpecError

ENV_PREFIX = "MLAAS4HEP_"
#: argv that runs the ``mlaas4hep`` command with this interpreter (no __main__ module needed).
MLAAS4HEP_ARGV = (
    sys.executable,
    "-c",
    "import sys; from mlaas4hep.cli import main; sys.exit(main())",
)
GiB = 1024**3
MiB = 1024**2


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JobLimits(_Section):
    """Limits every job process runs under; ``None`` switches one off."""

    wall_clock_s: float = Field(default=6 * 3600, gt=0)
    cpu_s: int | None = Field(default=None, gt=0, description="RLIMIT_CPU, seconds")
    memory_bytes: int | None = Field(
        default=4 * GiB,
        gt=0,
        description=(
            "memory of the whole job: a cgroup limit enforced by the kernel (else "
            "RLIMIT_DATA), and the resident size polled for the message"
        ),
    )
    address_space_bytes: int | None = Field(
        default=None, gt=0, description="RLIMIT_AS backstop; torch maps far more than it uses"
    )
    file_size_bytes: int | None = Field(default=20 * GiB, gt=0, description="RLIMIT_FSIZE")
    open_files: int | None = Field(default=4096, gt=0, description="RLIMIT_NOFILE")
    processes: int | None = Field(
        default=1024,
        gt=0,
        description=(
            "processes + threads of one job: cgroup pids.max, and RLIMIT_NPROC of the "
            "job's slot uid when the service runs as root"
        ),
    )
    log_bytes: int = Field(default=10 * MiB, gt=0, description="cap of each attempt's log")


class ExecutorSettings(_Section):
    """The local executor pool and the job lifecycle timings."""

    workers: int = Field(default=2, ge=0, description="jobs run at once; 0 = API only")
    job_command: list[str] = Field(
        default_factory=lambda: [*MLAAS4HEP_ARGV, "run"],
        min_length=1,
        description="argv prefix; the executor appends SPEC --out DIR --progress-json",
    )
    apply_command: list[str] = Field(
        default_factory=lambda: [*MLAAS4HEP_ARGV, "apply"],
        min_length=1,
        description="argv prefix of apply jobs; the executor appends MODEL_DIR INPUTS... "
        "--out DIR --format F [--tree T] [--only-passing] [--step-size N] --progress-json",
    )
    max_attempts: int = Field(default=3, ge=1, description="claims before a lost job fails")
    lease_s: float = Field(default=30.0, gt=0)
    heartbeat_s: float = Field(default=5.0, gt=0)
    poll_s: float = Field(default=1.0, gt=0, description="queue poll interval when idle")
    cancel_grace_s: float = Field(default=10.0, ge=0)
    sandbox: Literal["auto", "bwrap", "none"] = Field(
        default="auto",
        description=(
            "auto/bwrap: jobs run in the bwrap sandbox, and the executor refuses jobs when "
            "the host cannot give it; none: UNSAFE, jobs run unsandboxed (logged loudly)"
        ),
    )
    sandbox_uid: int = Field(
        default=61000,
        ge=1,
        description="service as root: worker slot n runs its job as uid sandbox_uid + n",
    )
    sandbox_gid: int = Field(
        default=61000, ge=1, description="service as root: the group of every job slot"
    )
    user_code: Literal["sandboxed", "always", "never"] = Field(
        default="sandboxed",
        description="pass --allow-user-code (model.kind 'python') only inside bwrap, always, never",
    )
    sandbox_ro_paths: list[Path] = Field(
        default_factory=list, description="extra paths a sandboxed job may read"
    )
    retention_days: float | None = Field(default=30.0, gt=0, description="None keeps forever")
    kind: Literal["local", "dask"] = Field(
        default="local",
        description="local: job processes on this host; dask: on the workers of a Dask cluster",
    )
    address: str | None = Field(
        default=None, description="the Dask scheduler, tcp://host:8786 (kind 'dask' only)"
    )
    partitions_in_flight: int | None = Field(
        default=None,
        gt=0,
        description="partitions a Dask job keeps submitted at once; default 2 x worker threads",
    )

    @model_validator(mode="after")
    def _dask_needs_address(self) -> ExecutorSettings:
        if self.kind == "dask" and not self.address:
            raise ValueError("executor.kind 'dask' needs executor.address (tcp://host:8786)")
        return self


class UploadLimits(_Section):
    """Request size limits."""

    spec_bytes: int = Field(default=1 * MiB, gt=0)
    job_files_bytes: int = Field(default=20 * MiB, gt=0, description="all files of one job")
    job_files: int = Field(default=32, gt=0)
    dataset_bytes: int = Field(default=50 * GiB, gt=0)


class TrackingSettings(_Section):
    """Exporting succeeded training jobs to an MLflow tracking server (docs/training.md).

    The service process exports after the job is recorded as succeeded (jobs may have no
    network); credentials are MLflow's variables in the service's environment
    (``MLFLOW_TRACKING_TOKEN``, ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``), never a job's.
    """

    mlflow_uri: str | None = Field(
        default=None, description="the MLflow server, e.g. https://mlflow.example.org; None = off"
    )
    mlflow_experiment: str = Field(
        default="{name}",
        min_length=1,
        description="experiment of each run; {name}: the spec's name, {owner}: the job's owner",
    )


class Settings(_Section):
    """Everything the service needs; see the module docstring for how it is loaded."""

    data_dir: Path = Field(default_factory=lambda: default_data_dir())
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: sqlite:///<data_dir>/mlaas4hep.db"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    allowed_hosts: list[str] | None = Field(
        default=None,
        description=(
            "Host names requests may name (Host/Origin; '.example.org' also matches its "
            "subdomains, '*' any); default: loopback names and `host`. IP literals always pass"
        ),
    )
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    limits: JobLimits = Field(default_factory=JobLimits)
    uploads: UploadLimits = Field(default_factory=UploadLimits)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    # Owned by the auth layer: the raw mapping is turned into ``AuthSettings`` by
    # ``mlaas4hep.auth.settings.AuthSettings.from_mapping`` (see docs/security.md).
    auth: dict[str, Any] = Field(default_factory=dict)
    # Owned by the serving layer: ``InferenceSettings.from_mapping(inference, data_dir)``.
    inference: dict[str, Any] = Field(default_factory=dict)
    # Owned by the web UI: ``mlaas4hep.api.ui.settings.UiSettings.from_mapping`` (docs/ui.md).
    ui: dict[str, Any] = Field(default_factory=dict)

    @property
    def db_url(self) -> str:
        """The database URL actually used (the embedded SQLite file by default)."""
        return self.database_url or f"sqlite:///{self.data_dir / 'mlaas4hep.db'}"


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/mlaas4hep``, else ``~/.local/share/mlaas4hep`` (``MLAAS4HEP_DATA_DIR``
    overrides it through :func:`load_settings`, like every field)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mlaas4hep"


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from an optional YAML file and ``MLAAS4HEP_*`` variables.

    Raises:
        SpecError: the file cannot be read or parsed, or a value is invalid (the message
            names the field path and the source).
    """
    data: dict[str, Any] = _read_yaml(path) if path is not None else {}
    env = os.environ if environ is None else environ
    for key, value in env.items():
        if key.startswith(ENV_PREFIX) and key not in _CLIENT_ONLY_ENV:
            _set_path(data, key[len(ENV_PREFIX) :].lower().split("__"), _env_value(value))
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        source = f"{str(path)!r} and MLAAS4HEP_* variables" if path else "MLAAS4HEP_* variables"
        msg = f"invalid settings in {source}: {_describe(exc)}"
        raise SpecError(msg) from exc


# Read by the CLI client (and the job markers by a job), not by the service's settings.
_CLIENT_ONLY_ENV = frozenset(
    {
        "MLAAS4HEP_URL",
        "MLAAS4HEP_TOKEN",
        "MLAAS4HEP_TOKEN_FILE",
        "MLAAS4HEP_CLIENT_CONFIG",
        "MLAAS4HEP_CACHE_DIR",
        "MLAAS4HEP_UI_SCREENSHOTS",
        "MLAAS4HEP_JOB_ID",
        "MLAAS4HEP_JOB_ATTEMPT",
    }
)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        msg = f"cannot read the settings file {str(path)!r}: {reason}"
        raise SpecError(msg) from exc
    try:
        loaded = yaml.safe_load(text)  # safe: operator config
    except yaml.YAMLError as exc:
        # line, column and an indentation hint, like the user documents' loader
        msg = f"the settings file {yaml_error_message(exc, text, repr(str(path)))}"
        raise SpecError(msg) from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        msg = f"the settings file {str(path)!r} must hold a mapping, got {type(loaded).__name__}"
        raise SpecError(msg)
    return loaded


def _env_value(value: str) -> Any:
    # JSON/YAML flow syntax lets lists ("[a, b]") and nulls ("null") come from the environment;
    # plain strings stay strings.
    try:
        return yaml.safe_load(value) if value.strip() else value  # safe: operator env
    except yaml.YAMLError:
        return value


def _set_path(data: dict[str, Any], parts: list[str], value: Any) -> None:
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts)
