"""Apply jobs: a deployed model applied to inputs by the job service.

An apply request (:mod:`mlaas4hep.apply_request`) goes through the same submission policy,
store, executor, sandbox, logs, cancel and artifacts as a training job. What differs is
decided here, once:

* **the model** (:func:`pin_model`, called by the policy): read rights as on the
  inference routes (``storage.read:/models/NAME`` or ``mlaas.infer``, and the model's
  owner record: the owner, a group it is shared with, public, the admin group); the version
  is resolved at submission (default: the latest on disk) and pinned in the stored
  request, so a later publish does not change what the job applies;
* **the bundle** (:func:`copy_model`, called when the job's input is written): the pinned
  version's published files are copied, without following links
  (:func:`mlaas4hep.serve.intake.copy_artifacts`), into ``input/models/NAME/`` of the job,
  the one place the sandbox lets the job read besides its inputs; the job applies exactly
  the bytes that were authorized, even if the version is deleted before it runs;
* **the command** (:func:`apply_argv`, called by the attempt runner):
  ``executor.apply_command MODEL_DIR INPUTS... --out DIR --format F [--tree T]
  [--only-passing] [--step-size N] [--dataset=NAME] --progress-json`` (``mlaas4hep
  apply``: one output per input file, the job's artifacts);
* **datasets** (:func:`register_outputs`, called by the executor after the attempt
  committed and before the success is recorded, like a deploy): with
  ``register_dataset: true`` each ROOT output ``F`` becomes the submitter's dataset
  ``<job name>.F`` through the upload path (:class:`~mlaas4hep.jobs.datasets.DatasetStore`:
  copied, inspected in the sandboxed child). All or none: a name already taken, or an
  output the inspection refuses, fails the job and removes what this call registered.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from mlaas4hep.apply_request import ApplyRequest, is_apply_request, parse_model_ref
from mlaas4hep.artifact import SPEC_FILE
from mlaas4hep.auth.policy import INFERENCE_SCOPE, model_scope, require_any_scope
from mlaas4hep.auth.principal import Principal
from mlaas4hep.config import Settings
from mlaas4hep.errors import Conflict, NotFound, PermissionDenied, SpecError
from mlaas4hep.jobs.datasets import Dataset, DatasetStore
from mlaas4hep.jobs.layout import JobPaths, safe_name
from mlaas4hep.jobs.store import JobRecord, JobStore

#: Where the pinned bundle lies in a job's input directory: ``input/models/NAME/``.
MODELS_DIR = "models"
_CHUNK = 1 << 20
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True)
class PinnedModel:
    """The model version an apply job applies, fixed at submission."""

    name: str
    version: int
    #: its training datasets (``data.datasets[].name`` of its ``spec.yaml``); None when
    #: the version has no spec (an uploaded ONNX file)
    datasets: tuple[str, ...] | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


def pin_model(settings: Settings, caller: Principal, ref: str) -> PinnedModel:
    """Check *caller*'s read rights on model *ref* (``NAME[:VERSION]``) and pin its version.

    Raises:
        PermissionDenied: no ``storage.read:/models/NAME`` nor ``mlaas.infer`` scope, or
            the owner record does not let *caller* read the model (403).
        SpecError: no such model, or no such version (422; other users' model names are
            never listed).
    """
    from mlaas4hep.jobs.deploy import model_repository  # deploy imports the service
    from mlaas4hep.serve.ownership import ModelOwners, denied_message

    try:
        name, version = parse_model_ref(ref)
    except ValueError as exc:
        raise SpecError(f"apply.model: {exc}") from exc
    require_any_scope(caller, model_scope("read", name), INFERENCE_SCOPE)
    repository = model_repository(settings)
    record = ModelOwners(repository.root).record(name)
    if record is not None and not record.allows(caller, "read"):
        raise PermissionDenied(denied_message(name, "read", record))
    versions = repository.versions(name)
    if not versions:
        msg = (
            f"apply.model: there is no model {name!r} in the service's repository; "
            "deploy it first (deploy: {name: ...} in a pipeline, or an upload) or check "
            "the name with GET /v2/models"
        )
        raise SpecError(msg)
    if version is not None and version not in versions:
        msg = f"apply.model: model {name!r} has no version {version}; versions: {versions}"
        raise SpecError(msg)
    chosen = versions[-1] if version is None else version
    spec = repository.version_dir(name, chosen) / SPEC_FILE
    return PinnedModel(name, chosen, _training_datasets(spec))


def _training_datasets(spec: Path) -> tuple[str, ...] | None:
    """The dataset names of a published version's ``spec.yaml``; None without one, or
    with one this version of the service cannot read (the job then says why)."""
    from mlaas4hep.spec import load_spec

    if not spec.is_file():
        return None
    try:
        return tuple(d.name for d in load_spec(spec).data.datasets)
    except SpecError:
        return None


def pinned(request: ApplyRequest, model: PinnedModel, files: list[str]) -> dict[str, Any]:
    """The request as stored: the model version pinned, the inputs resolved.

    Raises ``SpecError`` for an ``apply.training_dataset`` the model was not trained on.
    """
    wanted = request.apply.training_dataset
    if wanted and model.datasets is not None and wanted not in model.datasets:
        msg = (
            f"apply.training_dataset: model {model.ref} has no training dataset {wanted!r}; "
            f"its datasets: {', '.join(map(repr, model.datasets))}; give one of them, or "
            "leave it out for the global preprocessing"
        )
        raise SpecError(msg)
    apply = request.apply.model_copy(update={"model": model.ref, "files": files})
    return request.model_copy(update={"apply": apply}).model_dump(mode="json")


def model_dir(input_dir: Path, name: str) -> Path:
    """Where the bundle of model *name* lies in a job's input directory."""
    return input_dir / MODELS_DIR / name


def copy_model(settings: Settings, model: PinnedModel, input_dir: Path) -> Path:
    """Copy the published files of *model* into *input_dir* (see the module docstring).

    Raises:
        SpecError: the version vanished since it was pinned, or holds something other
            than plain files (UnsafeModelFiles).
    """
    from mlaas4hep.jobs.deploy import model_repository
    from mlaas4hep.serve.intake import copy_artifacts

    repository = model_repository(settings)
    try:
        repository.version_dir(model.name, model.version)
    except NotFound as exc:
        msg = f"model {model.name!r} version {model.version} was deleted; submit again"
        raise SpecError(msg) from exc
    dest = model_dir(input_dir, model.name)
    dest.mkdir(parents=True)
    copy_artifacts(repository.root, PurePath(model.name, str(model.version)), dest)
    return dest


def apply_argv(settings: Settings, paths: JobPaths, spec: str, out: Path) -> list[str] | None:
    """The job command of an apply job (see the module docstring); None for a pipeline.

    *spec* is the stored document (JSON), which the policy validated and pinned: every
    input is absolute or a URL, so none can be read as an option.
    """
    doc = json.loads(spec)
    if not is_apply_request(doc):
        return None
    request = ApplyRequest.model_validate(doc)
    apply = request.apply
    argv = [*settings.executor.apply_command, str(model_dir(paths.input, request.model_name()))]
    argv += [*apply.files, "--out", str(out), "--format", apply.format]
    if apply.tree:
        argv += ["--tree", apply.tree]
    if apply.only_passing:
        argv.append("--only-passing")
    if apply.step_size:
        argv += ["--step-size", str(apply.step_size)]
    if apply.training_dataset:  # one argument: a name is never read as an option
        argv.append(f"--dataset={apply.training_dataset}")
    return [*argv, "--progress-json"]


def register_outputs(
    settings: Settings, store: JobStore, job: JobRecord, result_dir: Path
) -> list[str]:
    """Register the ROOT outputs of a succeeded apply job as datasets of its owner.

    Returns the dataset names (empty unless the request asked for it). *result_dir* lies
    under ``<data_dir>/jobs`` and was written by the job: reached and read without
    following links, regular single-link files only.

    Raises:
        Conflict: a name is already one of the owner's datasets.
        SpecError: a bad name, or an output the upload inspection refuses.
        PayloadTooLarge: an output over ``uploads.dataset_bytes``.
    """
    import asyncio

    doc = json.loads(job.spec)
    if not is_apply_request(doc) or not ApplyRequest.model_validate(doc).apply.register_dataset:
        return []
    base = settings.data_dir / "jobs"
    rel = PurePath(result_dir.relative_to(base))
    outputs = _root_outputs(base, rel)
    names = [safe_name(f"{job.name}.{out}", "dataset name") for out in outputs]
    datasets = DatasetStore(store, settings)
    for name in names:
        _check_free(datasets, job.owner, name)
    done: list[Dataset] = []
    try:
        for out, name in zip(outputs, names, strict=True):
            chunks = _read_chunks(base, rel, out)
            done.append(asyncio.run(datasets.upload(job.owner, name, chunks)))
    except BaseException:
        for ds in done:
            datasets.delete(ds.id, job.owner)
        raise
    return names


def _check_free(datasets: DatasetStore, owner: str, name: str) -> None:
    try:
        datasets.by_name(name, owner)
    except NotFound:
        return
    msg = (
        f"you already have a dataset named {name!r}; delete it, or submit the apply "
        "request under another name (datasets are named <job name>.<output file>)"
    )
    raise Conflict(msg)


def _root_outputs(base: Path, rel: PurePath) -> list[str]:
    from mlaas4hep.serve.intake import open_directory

    fd = open_directory(base, rel)
    try:
        names = sorted(os.listdir(fd))
        return [
            n
            for n in names
            if n.endswith(".root")
            and stat.S_ISREG(os.stat(n, dir_fd=fd, follow_symlinks=False).st_mode)
        ]
    finally:
        os.close(fd)


async def _read_chunks(base: Path, rel: PurePath, name: str) -> AsyncIterator[bytes]:
    from mlaas4hep.serve.intake import open_directory

    dir_fd = open_directory(base, rel)
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "rb") as source:
        info = os.fstat(source.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            msg = f"the output {name!r} is not a plain file; it is not registered"
            raise SpecError(msg)
        while chunk := source.read(_CHUNK):
            yield chunk
