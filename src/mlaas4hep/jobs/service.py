"""The job service: submission, queries and user actions, knowing nothing of HTTP.

Routes validate the request shape, call one method here and map the result; this is the
"data plane" that the API, the CLI's local mode and the tests share.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tarfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import yaml

from mlaas4hep.config import Settings
from mlaas4hep.documents import load_yaml
from mlaas4hep.errors import NotFound, PayloadTooLarge, SpecError
from mlaas4hep.jobs.apply_job import PinnedModel, copy_model
from mlaas4hep.jobs.credentials import store_token
from mlaas4hep.jobs.datasets import DatasetStore
from mlaas4hep.jobs.layout import JobPaths, job_paths, remove_tree, safe_name
from mlaas4hep.jobs.limits import fmt_bytes
from mlaas4hep.jobs.records import RunLabels
from mlaas4hep.jobs.states import Decision, State
from mlaas4hep.jobs.store import JobRecord, JobStore, NewJob
from mlaas4hep.spec import PipelineSpec, validate_spec

if TYPE_CHECKING:  # the policy imports this module; it builds what submit() takes
    from mlaas4hep.jobs.policy import Submission

#: Validates a parsed spec (raises SpecError): the typed ``PipelineSpec``. A test
#: stand-in may return a mapping instead (a document the fake job reads, not a pipeline).
SpecValidator = Callable[[dict[str, Any]], "PipelineSpec | dict[str, Any]"]
BUNDLE = "bundle.tar.gz"


def pipeline_validator(doc: dict[str, Any]) -> PipelineSpec:
    """The default validator: the pipeline spec of :mod:`mlaas4hep.spec`."""
    return validate_spec(doc)


def parse_spec(body: bytes, limit: int) -> dict[str, Any]:
    """Parse a spec sent as JSON or YAML (JSON is YAML).

    Raises:
        PayloadTooLarge: more than *limit* bytes.
        SpecError: not UTF-8, not YAML/JSON, not a mapping, or refused by
            :mod:`mlaas4hep.documents` (anchors/aliases, nesting deeper than 64).
    """
    if len(body) > limit:
        msg = f"the spec is {fmt_bytes(len(body))}; the limit is {fmt_bytes(limit)}"
        raise PayloadTooLarge(msg)
    doc = load_yaml(body, what="the spec", limit=limit)
    if not isinstance(doc, dict):
        msg = f"a pipeline spec is a mapping (name:, data:, ...), got {type(doc).__name__}"
        raise SpecError(msg)
    return doc


@dataclass(frozen=True)
class UserFile:
    """A small file sent with a job (e.g. a model module)."""

    name: str
    data: bytes


@dataclass(frozen=True)
class Artifact:
    """A file of a succeeded job."""

    name: str
    size: int


class JobService:
    """Everything users do with jobs, on top of the store and the job directories."""

    def __init__(
        self,
        store: JobStore,
        datasets: DatasetStore,
        settings: Settings,
        validator: SpecValidator = pipeline_validator,
    ) -> None:
        self.store, self.datasets, self.settings = store, datasets, settings
        self.validator = validator

    # ---- submit --------------------------------------------------------------------------

    def submit(
        self,
        submission: Submission,
        idempotency_key: str | None = None,
        *,
        token: str | None = None,
        labels: RunLabels | None = None,
    ) -> tuple[JobRecord, bool]:
        """Queue a job that passed the submission policy; ``(job, created)`` (False: a replay).

        *submission* comes from :func:`mlaas4hep.jobs.policy.authorize`, the one place that
        decides what may run. ``token``: the submitter's bearer token, kept for the job's
        remote reads (see ``jobs.credentials``); pass it only when
        ``credentials.wants_token`` says so. *labels*: the run name, tags and parent,
        checked by :func:`mlaas4hep.jobs.runs.check_labels` (a parent must be the
        submitter's own job).

        Raises:
            IdempotencyKeyReused: the key was used for a different request.
        """
        new = NewJob(
            owner=submission.owner,
            name="",
            spec="",
            request_hash=submission.request_hash,
            idempotency_key=idempotency_key,
            max_attempts=self.settings.executor.max_attempts,
        )
        earlier = self.store.replay(new)
        if earlier is not None:
            return earlier, False
        if labels is not None and labels.parent is not None:
            self.store.get(labels.parent, submission.owner)  # NotFound unless theirs
        paths = job_paths(self.settings.data_dir, submission.job_id)
        spec = _module_in_input(submission.document, paths, submission.files)
        self._write_input(paths, spec, submission.files, submission.model)
        if token:
            store_token(paths, token)
        new = dataclasses.replace(
            new,
            name=str(spec.get("name", "job"))[:256],
            spec=json.dumps(spec),
            needs_network=submission.needs_network,
            job_id=submission.job_id,
        )
        if labels is not None:
            new = dataclasses.replace(
                new, run_name=labels.name, tags=dict(labels.tags), parent=labels.parent
            )
        try:
            job, created = self.store.create(new)
        except BaseException:
            remove_tree(paths.root)
            raise
        if not created:
            remove_tree(paths.root)
        return job, created

    def check_files(self, files: Sequence[UserFile]) -> None:
        """Refuse too many or too large files, or bad or repeated names.

        Raises:
            PayloadTooLarge: over ``uploads.job_files`` / ``uploads.job_files_bytes``.
            SpecError: a bad, repeated or reserved (``pipeline.yaml``) name.
        """
        limits = self.settings.uploads
        if len(files) > limits.job_files:
            msg = f"{len(files)} files sent with the job; the limit is {limits.job_files}"
            raise PayloadTooLarge(msg)
        total = sum(len(f.data) for f in files)
        if total > limits.job_files_bytes:
            cap = fmt_bytes(limits.job_files_bytes)
            msg = f"the job's files total {fmt_bytes(total)}; the limit is {cap}"
            raise PayloadTooLarge(msg)
        names = [safe_name(f.name) for f in files]
        if len(set(names)) != len(names) or "pipeline.yaml" in names:
            msg = f"file names must be unique and not 'pipeline.yaml'; got {names!r}"
            raise SpecError(msg)

    def _write_input(
        self,
        paths: JobPaths,
        spec: dict[str, Any],
        files: Sequence[UserFile],
        model: PinnedModel | None = None,
    ) -> None:
        # Written beside the final place and renamed: a claimable job always has its input
        # (an apply job's model bundle included).
        tmp = paths.root.with_name(f".{paths.root.name}.tmp")
        remove_tree(tmp)
        (tmp / "input").mkdir(parents=True)
        (tmp / "logs").mkdir()
        try:
            (tmp / "input" / "pipeline.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
            for f in files:
                (tmp / "input" / f.name).write_bytes(f.data)
            if model is not None:
                copy_model(self.settings, model, tmp / "input")
        except BaseException:
            remove_tree(tmp)
            raise
        os.replace(tmp, paths.root)

    # ---- read ----------------------------------------------------------------------------

    def get(self, job_id: str, owner: str | None) -> JobRecord:
        """The job, if visible to *owner* (None: anyone's). Raises NotFound."""
        _check_id(job_id)
        return self.store.get(job_id, owner)

    def list_jobs(
        self,
        owner: str | None,
        states: Sequence[State] = (),
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[JobRecord], str | None]:
        """A page of jobs (newest first) and the cursor of the next page (None at the end)."""
        before = _decode_cursor(cursor) if cursor else None
        jobs = self.store.list_jobs(owner, states=states, limit=limit, before=before)
        nxt = _encode_cursor(jobs[-1]) if len(jobs) == limit else None
        return jobs, nxt

    def log_path(self, job: JobRecord, attempt: int | None = None) -> Path | None:
        """The log of *attempt* (default: the latest), or None before the job started."""
        n = job.attempt if attempt is None else attempt
        if n < 1 or n > job.attempt:
            if attempt is None:
                return None
            msg = f"job {job.id!r} has no attempt {attempt}; it has had {job.attempt}"
            raise NotFound(msg)
        return job_paths(self.settings.data_dir, job.id).log(n)

    def artifacts(self, job: JobRecord) -> list[Artifact]:
        """The files of a succeeded job (relative names), plus the whole bundle."""
        root = self._result_dir(job)
        files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
        out = [Artifact(p.relative_to(root).as_posix(), p.stat().st_size) for p in files]
        return [*out, Artifact(BUNDLE, -1)]

    def artifact_path(self, job: JobRecord, name: str) -> Path:
        """The path of artifact *name* (``bundle.tar.gz`` is built on first request).

        Raises:
            NotFound: no such artifact, or the name leaves the result directory.
        """
        root = self._result_dir(job)
        if name == BUNDLE:
            return self._bundle(job, root)
        candidate = (root / name).resolve()
        if root.resolve() not in candidate.parents or not candidate.is_file():
            msg = f"job {job.id!r} has no artifact {name!r}; list them first"
            raise NotFound(msg)
        return candidate

    def _result_dir(self, job: JobRecord) -> Path:
        if job.state is not State.SUCCEEDED or job.result_dir is None:
            msg = f"job {job.id!r} is {job.state.value}; artifacts exist once it succeeded"
            raise NotFound(msg)
        return job_paths(self.settings.data_dir, job.id).root / job.result_dir

    def _bundle(self, job: JobRecord, root: Path) -> Path:
        target = root.parent / f"{root.name}.{BUNDLE}"
        if not target.exists():
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
            with tarfile.open(tmp, "w:gz") as tar:
                tar.add(root, arcname=f"{job.name}-{job.id[:8]}", filter=_no_links)
            os.replace(tmp, target)
        return target

    # ---- actions -------------------------------------------------------------------------

    def cancel(self, job_id: str, owner: str | None) -> tuple[JobRecord, Decision]:
        """Cancel (queued: at once; running: the executor stops it within a heartbeat)."""
        _check_id(job_id)
        return self.store.request_cancel(job_id, owner)

    def delete(self, job_id: str, owner: str | None) -> None:
        """Delete a finished job and its files. Raises NotFound or Conflict (still active)."""
        _check_id(job_id)
        job = self.store.delete(job_id, owner)
        remove_tree(job_paths(self.settings.data_dir, job.id).root)


def deployed_model(spec: dict[str, Any]) -> str | None:
    """The model name a (not yet validated) spec publishes to, for the scope check."""
    deploy = spec.get("deploy")
    name = deploy.get("name") if isinstance(deploy, dict) else None
    return name if isinstance(name, str) and name else None


def _module_in_input(
    spec: dict[str, Any], paths: JobPaths, files: Sequence[UserFile]
) -> dict[str, Any]:
    """Point a relative ``model.module`` at the file of that name sent with the job.

    The job runs in its attempt directory, not beside its input: without this, the module
    sent with the job (``-F files=@my_net.py``) would not be found.
    """
    model = spec.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("module"), str):
        return spec
    module = PurePosixPath(model["module"])
    if module.is_absolute() or module.name not in {f.name for f in files}:
        return spec
    return {**spec, "model": {**model, "module": str(paths.input / module.name)}}


def request_hash(doc: dict[str, Any], files: Sequence[UserFile]) -> str:
    """The identity of a submission request (spec as sent, and its files), for replays."""
    body = {
        "spec": doc,
        "files": {f.name: hashlib.sha256(f.data).hexdigest() for f in files},
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _check_id(job_id: str) -> None:
    if len(job_id) != 32 or any(c not in "0123456789abcdef" for c in job_id):
        msg = f"no job {job_id!r} among yours; job ids are 32 hexadecimal digits"
        raise NotFound(msg)


def _encode_cursor(job: JobRecord) -> str:
    return f"{job.created_at!r}_{job.id}"


def _decode_cursor(cursor: str) -> tuple[float, str]:
    created, _, last_id = cursor.partition("_")
    try:
        return float(created), last_id
    except ValueError as exc:
        msg = f"invalid cursor {cursor!r}; pass the next_cursor of the previous page"
        raise SpecError(msg) from exc


def _no_links(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if info.issym() or info.islnk() else info
