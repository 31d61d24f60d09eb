"""The job service: submission, queries and user actions, knowing nothing of HTTP.

Routes validate the request shape, call one method here and map the result; this is the
"data plane" that the API, the CLI's local mode and the tests share.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import tarfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import yaml

from mlaas4hep.config import Settings
from mlaas4hep.errors import NotFound, PayloadTooLarge, SpecError
from mlaas4hep.jobs.credentials import store_token
from mlaas4hep.jobs.datasets import DatasetStore
from mlaas4hep.jobs.layout import JobPaths, job_paths, remove_tree, safe_name
from mlaas4hep.jobs.limits import fmt_bytes
from mlaas4hep.jobs.states import Decision, State
from mlaas4hep.jobs.store import JobRecord, JobStore, NewJob

#: Validates a parsed spec and returns its normalised form (raises SpecError).
SpecValidator = Callable[[dict[str, Any]], dict[str, Any]]
DATASET_PREFIX = "dataset:"
BUNDLE = "bundle.tar.gz"
_REMOTE = ("root://", "http://", "https://")


def pipeline_validator(doc: dict[str, Any]) -> dict[str, Any]:
    """The default validator: the pipeline spec of :mod:`mlaas4hep.spec`."""
    from mlaas4hep.spec import validate_spec

    return validate_spec(doc).model_dump(mode="json")


def parse_spec(body: bytes, limit: int) -> dict[str, Any]:
    """Parse a spec sent as JSON or YAML (JSON is YAML).

    Raises:
        PayloadTooLarge: more than *limit* bytes.
        SpecError: not UTF-8, not YAML/JSON, or not a mapping.
    """
    if len(body) > limit:
        msg = f"the spec is {fmt_bytes(len(body))}; the limit is {fmt_bytes(limit)}"
        raise PayloadTooLarge(msg)
    try:
        doc = yaml.safe_load(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise SpecError("the spec is not UTF-8 text; send YAML or JSON") from exc
    except yaml.YAMLError as exc:
        msg = f"the spec is not valid YAML/JSON: {exc}"
        raise SpecError(msg) from exc
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
        owner: str,
        doc: dict[str, Any],
        files: Sequence[UserFile] = (),
        idempotency_key: str | None = None,
        *,
        token: str | None = None,
    ) -> tuple[JobRecord, bool]:
        """Validate and queue a job; returns ``(job, created)`` (False for a replay).

        ``token``: the submitter's bearer token, kept for the job's remote reads (see
        ``jobs.credentials``); pass it only when ``credentials.wants_token`` says so.

        Raises:
            SpecError: invalid spec, file names or dataset references.
            PayloadTooLarge: too many or too large files.
            IdempotencyKeyReused: the key was used for a different request.
        """
        self._check_files(files)
        digest = _request_hash(doc, files)
        new = NewJob(
            owner=owner,
            name="",
            spec="",
            request_hash=digest,
            idempotency_key=idempotency_key,
            max_attempts=self.settings.executor.max_attempts,
        )
        earlier = self.store.replay(new)
        if earlier is not None:
            return earlier, False
        spec = self.validator(self._resolve_datasets(doc, owner))
        job_id = uuid.uuid4().hex
        paths = job_paths(self.settings.data_dir, job_id)
        spec = _module_in_input(spec, paths, files)
        self._write_input(paths, spec, files)
        if token:
            store_token(paths, token)
        new = NewJob(
            owner=owner,
            name=str(spec.get("name", "job"))[:256],
            spec=json.dumps(spec),
            request_hash=digest,
            idempotency_key=idempotency_key,
            needs_network=needs_network(spec),
            max_attempts=self.settings.executor.max_attempts,
            job_id=job_id,
        )
        try:
            job, created = self.store.create(new)
        except BaseException:
            remove_tree(paths.root)
            raise
        if not created:
            remove_tree(paths.root)
        return job, created

    def _check_files(self, files: Sequence[UserFile]) -> None:
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

    def _resolve_datasets(self, doc: dict[str, Any], owner: str) -> dict[str, Any]:
        doc = json.loads(json.dumps(doc))  # a deep copy; the caller's dict stays as sent
        data = doc.get("data")
        entries = data.get("datasets") if isinstance(data, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            files = entry.get("files") if isinstance(entry, dict) else None
            if isinstance(files, list):
                entry["files"] = [self._resolve_one(f, owner) for f in files]
        return doc

    def _resolve_one(self, item: Any, owner: str) -> Any:
        if not isinstance(item, str) or not item.startswith(DATASET_PREFIX):
            return item
        try:
            return str(self.datasets.by_name(item[len(DATASET_PREFIX) :], owner).path)
        except NotFound as exc:
            msg = f"the spec names {item!r}, but you have no dataset of that name; upload it first"
            raise SpecError(msg) from exc

    def _write_input(
        self, paths: JobPaths, spec: dict[str, Any], files: Sequence[UserFile]
    ) -> None:
        # Written beside the final place and renamed: a claimable job always has its input.
        tmp = paths.root.with_name(f".{paths.root.name}.tmp")
        remove_tree(tmp)
        (tmp / "input").mkdir(parents=True)
        (tmp / "logs").mkdir()
        (tmp / "input" / "pipeline.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        for f in files:
            (tmp / "input" / f.name).write_bytes(f.data)
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


def needs_network(spec: dict[str, Any]) -> bool:
    """Whether the spec reads remote data (the sandbox then keeps the network)."""
    data = spec.get("data") or {}
    if data.get("redirector") or data.get("xrootd_proxy"):
        return True
    for entry in data.get("datasets") or []:
        for f in entry.get("files") or []:
            if isinstance(f, str) and f.startswith(_REMOTE):
                return True
    return False


def input_paths(spec: dict[str, Any]) -> list[str]:
    """The data paths a spec reads, normalised, for ``storage.read:<path>`` checks.

    Local absolute paths as they are, ``root://host//store/x`` and ``https://host/x`` by
    their path; ``dataset:`` references are the caller's own uploads and are not listed.
    Relative paths stay inside the job's own directory; one that climbs out (``..``) is
    returned as is, and no scope ever grants it.
    """
    data = spec.get("data")
    if not isinstance(data, dict):
        return []
    out: list[str] = []
    for entry in data.get("datasets") or []:
        files = entry.get("files") if isinstance(entry, dict) else None
        for item in files if isinstance(files, list) else []:
            path = _input_path(item)
            if path is not None:
                out.append(path)
    return out


def deployed_model(spec: dict[str, Any]) -> str | None:
    """The model name a (not yet validated) spec publishes to, for the scope check."""
    deploy = spec.get("deploy")
    name = deploy.get("name") if isinstance(deploy, dict) else None
    return name if isinstance(name, str) and name else None


def _input_path(item: Any) -> str | None:
    if not isinstance(item, str) or item.startswith(DATASET_PREFIX):
        return None
    if item.startswith(_REMOTE):
        return "/" + posixpath.normpath(urlsplit(item).path).lstrip("/")
    text = item.removeprefix("@")
    if text.startswith("/"):
        return "/" + posixpath.normpath(text).lstrip("/")
    parts = PurePosixPath(text).parts
    return text if ".." in parts else None


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


def _request_hash(doc: dict[str, Any], files: Sequence[UserFile]) -> str:
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
