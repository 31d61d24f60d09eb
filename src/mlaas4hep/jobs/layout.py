"""Where a job's files live under ``data_dir``; one place so nothing builds paths by hand.

::

    <data_dir>/jobs/<id>/input/pipeline.yaml   the spec as submitted (+ small user files)
    <data_dir>/jobs/<id>/attempt-<n>.partial/  an attempt writing its output (never served)
    <data_dir>/jobs/<id>/attempt-<n>/          a committed attempt: renamed atomically on success
    <data_dir>/jobs/<id>/logs/attempt-<n>.log  each attempt's log, kept whatever the outcome
    <data_dir>/datasets/<owner hash>/<id>/<name>
"""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from mlaas4hep.errors import SpecError

SPEC_NAME = "pipeline.yaml"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")


@dataclass(frozen=True)
class JobPaths:
    """The directories of one job."""

    root: Path

    @property
    def input(self) -> Path:
        return self.root / "input"

    @property
    def spec(self) -> Path:
        return self.input / SPEC_NAME

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def partial(self, attempt: int) -> Path:
        """The uncommitted output directory of *attempt*."""
        return self.root / f"attempt-{attempt}.partial"

    def committed(self, attempt: int) -> Path:
        """The output directory of *attempt* once it succeeded."""
        return self.root / f"attempt-{attempt}"

    def log(self, attempt: int) -> Path:
        return self.logs / f"attempt-{attempt}.log"


def job_paths(data_dir: Path, job_id: str) -> JobPaths:
    """The paths of job *job_id* (an id the store generated: hex only)."""
    if not re.fullmatch(r"[0-9a-f]{32}", job_id):
        msg = f"malformed job id {job_id!r}; job ids are 32 hexadecimal digits"
        raise SpecError(msg)
    return JobPaths(data_dir / "jobs" / job_id)


def owner_dir(data_dir: Path, owner: str) -> Path:
    """A filesystem-safe directory for *owner*'s datasets (owner keys hold ``:`` and ``/``)."""
    digest = hashlib.sha256(owner.encode()).hexdigest()[:24]
    return data_dir / "datasets" / digest


def safe_name(name: str, what: str = "file name") -> str:
    """Return *name* if it is a plain file name (no directories, no leading dot).

    Raises:
        SpecError: the name has a path separator, starts with a dot or uses other characters.
    """
    if not _SAFE_NAME.fullmatch(name):
        msg = (
            f"invalid {what} {name!r}: use 1-128 characters of letters, digits and '_.+-', "
            "not starting with '.' or '-', without directories"
        )
        raise SpecError(msg)
    return name


def remove_tree(path: Path) -> None:
    """Remove *path* if present; never follows a symlink out of it."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)
