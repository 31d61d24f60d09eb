"""The submission policy: what a caller may submit, decided once for every way in.

The JSON API, the web UI's form and its live validation (and the CLI, which goes through
the API) call :func:`authorize`; nothing else decides whether a spec may run. In order:

1. ``compute.create``;
2. the spec is validated into the typed ``PipelineSpec`` (422 naming the field), and every
   expression is parsed (422 with a caret under the bad token);
3. every input is resolved by :func:`mlaas4hep.data.inputs.resolve_inputs`, the one
   reading of a ``files`` entry (each scheme spelling, globs, ``@list`` files opened from
   the job's own files, ``dataset:NAME`` among the caller's own uploads), and each needs
   ``storage.read`` on its path; a relative path that names none of the files sent with
   the job is refused (it is on the submitter's machine: upload it); paths inside the
   service's own data directory are refused (uploads are reachable only as
   ``dataset:NAME``); for each input that is one of the caller's datasets, branch names
   and types are checked against the schema recorded at upload (422 naming the branch
   and the closest names);
4. ``deploy: {name: N}`` needs the rights of :func:`mlaas4hep.jobs.deploy.check_deploy_rights`.

An apply request (a document with a top-level ``apply:``, :mod:`mlaas4hep.apply_request`)
takes the same steps 1 and 3 (its ``apply.files`` are resolved and checked like a dataset's
``files``; each must be absolute, a URL or ``dataset:NAME``) and, instead of 2 and 4, is
validated as an ``ApplyRequest`` and needs read rights on its model
(:func:`mlaas4hep.jobs.apply_job.pin_model`), whose version is pinned in the stored request.

The result, a :class:`Submission`, carries the typed spec, the resolved inputs and the
sandbox's network decision (taken from the same resolved inputs) to ``JobService.submit``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import posixpath
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlaas4hep.apply_request import is_apply_request, validate_apply_request
from mlaas4hep.auth.policy import require_scope
from mlaas4hep.auth.principal import Principal
from mlaas4hep.data.inputs import ResolvedInput, resolve_inputs
from mlaas4hep.errors import ExpressionError, NotFound, PermissionDenied, SpecError
from mlaas4hep.jobs.apply_job import MODELS_DIR, PinnedModel, pin_model, pinned
from mlaas4hep.jobs.deploy import check_deploy_rights
from mlaas4hep.jobs.layout import job_paths
from mlaas4hep.jobs.service import JobService, UserFile, deployed_model, request_hash
from mlaas4hep.spec import DatasetSpec, PipelineSpec


@dataclass(frozen=True)
class Submission:
    """A spec that passed the policy, ready for ``JobService.submit``.

    ``spec`` is the typed ``PipelineSpec`` with its inputs resolved (None for an apply
    request, and with a test stand-in validator whose documents are not pipelines);
    ``document`` is the same spec as the JSON the job store keeps. ``model``: the model
    version an apply request applies (its bundle is copied into the job's input).
    """

    owner: str
    job_id: str
    spec: PipelineSpec | None
    document: dict[str, Any]
    files: tuple[UserFile, ...]
    inputs: tuple[ResolvedInput, ...]
    needs_network: bool
    request_hash: str
    model: PinnedModel | None = None


def authorize(
    service: JobService, caller: Principal, doc: dict[str, Any], files: Sequence[UserFile] = ()
) -> Submission:
    """Check *doc* (as parsed) and *files* for *caller*; see the module docstring.

    Raises:
        PermissionDenied: a missing scope (naming it and the input's path) or deploy right.
        SpecError / ExpressionError / DataSourceError: an invalid spec (422).
        PayloadTooLarge: too many or too large files.
    """
    require_scope(caller, "compute.create")
    service.check_files(files)
    job_id = uuid.uuid4().hex
    if is_apply_request(doc):
        return _authorize_apply(service, caller, doc, files, job_id)
    checked = service.validator(doc)
    spec = checked if isinstance(checked, PipelineSpec) else None
    if spec is not None:
        check_expressions(spec)
    resolved = _resolve_all(service, caller, spec, checked, files, job_id)
    inputs = tuple(i for group in resolved for i in group)
    _check_reads(service, caller, inputs)
    check_visible(inputs, files)
    if spec is not None:
        spec = _with_inputs(spec, resolved)
        check_against_schemas(spec, _recorded_schemas(service, caller.key, inputs))
        document = spec.model_dump(mode="json")
    else:
        document = _dict_with_inputs(_as_dict(checked), resolved)
    if name := deployed_model(document):
        check_deploy_rights(service.settings, caller, name)
    # Only inputs decide: a proxy or redirector setting alone names no data, and a
    # user-chosen one must not hand a job the host's network (the resolver already marks
    # /store names remote when a redirector is set).
    network = any(i.remote for i in inputs)
    return Submission(
        owner=caller.key,
        job_id=job_id,
        spec=spec,
        document=document,
        files=tuple(files),
        inputs=inputs,
        needs_network=network,
        request_hash=request_hash(doc, files),
    )


def _authorize_apply(
    service: JobService,
    caller: Principal,
    doc: dict[str, Any],
    files: Sequence[UserFile],
    job_id: str,
) -> Submission:
    """The policy for an apply request (see the module docstring)."""
    request = validate_apply_request(doc)
    if any(f.name == MODELS_DIR for f in files):
        msg = f"a file sent with an apply request cannot be named {MODELS_DIR!r}; rename it"
        raise SpecError(msg)
    model = pin_model(service.settings, caller, request.apply.model)
    inputs = _resolve(service, caller, request.apply.files, files, job_id, None)
    _check_reads(service, caller, inputs)
    for item in inputs:
        if not item.remote and not item.entry.startswith("/"):
            msg = (
                f"apply.files: {item.written!r} is a relative path; an apply job reads "
                "absolute paths, URLs and dataset:NAME: upload a local file with "
                "`mlaas4hep datasets upload FILE` and write dataset:NAME"
            )
            raise SpecError(msg)
    return Submission(
        owner=caller.key,
        job_id=job_id,
        spec=None,
        document=pinned(request, model, [i.entry for i in inputs]),
        files=tuple(files),
        inputs=tuple(inputs),
        needs_network=any(i.remote for i in inputs),
        request_hash=request_hash(doc, files),
        model=model,
    )


def _resolve(
    service: JobService,
    caller: Principal,
    entries: Sequence[str],
    files: Sequence[UserFile],
    job_id: str,
    redirector: str | None,
) -> list[ResolvedInput]:
    """The resolved inputs of one ``files`` list (``@lists`` from *files*)."""
    return resolve_inputs(
        entries,
        lists={f.name: f.data for f in files},
        dataset=lambda name: _dataset_path(service, caller.key, name),
        list_dir=str(job_paths(service.settings.data_dir, job_id).input),
        redirector=redirector,
    )


def _resolve_all(
    service: JobService,
    caller: Principal,
    spec: PipelineSpec | None,
    checked: object,
    files: Sequence[UserFile],
    job_id: str,
) -> list[list[ResolvedInput]]:
    """The resolved inputs of each dataset of the spec, in order."""
    redirector = _data_field(spec, checked, "redirector")
    return [
        _resolve(service, caller, entries, files, job_id, redirector)
        for entries in _dataset_files(spec, checked)
    ]


def check_expressions(spec: PipelineSpec) -> None:
    """Parse every expression of *spec* (ExpressionError with a caret on the first bad one).

    Names and types need the data's schema: :func:`check_against_schemas` where one is
    recorded; otherwise the job checks them on its first chunk.
    """
    from mlaas4hep.preprocess.program import Program

    Program(spec)


def check_against_schemas(spec: PipelineSpec, schemas: Mapping[str, Mapping[str, Any]]) -> None:
    """Check *spec*'s branch names and expression types against recorded tree schemas.

    *schemas*: the recorded schema (``TreeSchema.to_dict()``) of each input that is one of
    the caller's datasets, by its ``dataset:NAME`` spelling.

    Raises:
        ExpressionError: an unknown name (a caret under it and the closest branch names)
            or a type error, prefixed with the dataset.
        SpecError: a feature or identifier that is no branch of the dataset.
    """
    from mlaas4hep.preprocess.program import Program

    for where, schema in schemas.items():
        if spec.data.tree and schema.get("tree") != spec.data.tree:
            continue  # the job reports the missing tree, listing the file's trees
        program = Program(spec)
        try:
            program.branches([b["name"] for b in schema.get("branches", ())])
            program.bind(empty_columns(schema))
        except (ExpressionError, SpecError) as exc:
            raise type(exc)(f"{where}: {exc}") from exc


def empty_columns(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Zero-length columns of a recorded tree schema's types, for ``Program.bind``."""
    import awkward as ak
    import numpy as np

    out: dict[str, Any] = {}
    for b in schema.get("branches", ()):
        try:
            dtype = np.dtype(b["dtype"])
        except TypeError:
            continue  # a type expressions cannot use; reading it fails with a clear message
        flat = np.zeros(0, dtype)
        if b["kind"] in ("flat", "counter"):
            out[b["name"]] = flat
        elif b["kind"] == "jagged":
            out[b["name"]] = ak.unflatten(flat, np.zeros(0, np.int64))
    return out


def _recorded_schemas(
    service: JobService, owner: str, inputs: Sequence[ResolvedInput]
) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for item in inputs:
        if item.dataset is not None and f"dataset:{item.dataset}" not in out:
            ds = service.datasets.by_name(item.dataset, owner)
            out[f"dataset:{item.dataset}"] = service.datasets.schema(ds)
    return out


#: What to do about an input on the submitter's machine: the job can never see it.
UPLOAD_REMEDY = (
    "`mlaas4hep submit SPEC` uploads the local files a spec names and submits it with "
    "dataset:NAME in their place; or upload with `mlaas4hep datasets upload FILE` and "
    "write dataset:NAME in the spec"
)


def check_visible(inputs: Sequence[ResolvedInput], files: Sequence[UserFile]) -> None:
    """Refuse a relative local input that is none of the files sent with the job.

    A job runs in a sandbox that sees its own files, the owner's datasets and granted
    paths; a path relative to the submitter's machine names nothing there.

    Raises:
        SpecError: naming the input and how to upload it (:data:`UPLOAD_REMEDY`).
    """
    sent = [f.name for f in files]
    for item in inputs:
        if item.remote or item.dataset is not None or item.entry.startswith("/"):
            continue
        if any(fnmatch.fnmatchcase(name, item.entry) for name in sent):
            continue
        msg = (
            f"input {item.written!r} is a path on your machine; the job runs on the service, "
            f"in a sandbox that sees only your uploaded datasets and the files sent with "
            f"the job. {UPLOAD_REMEDY}"
        )
        raise SpecError(msg)


def _check_reads(service: JobService, caller: Principal, inputs: Sequence[ResolvedInput]) -> None:
    data_dir = posixpath.normpath(str(service.settings.data_dir.resolve()))
    for item in inputs:
        if item.scope_path is None:
            continue
        path = item.scope_path
        try:
            require_scope(caller, f"storage.read:{path}")
        except PermissionDenied as exc:
            shown = "" if item.written == path else f" (input {item.written!r})"
            local = "" if item.remote else f". If it is a file on your machine: {UPLOAD_REMEDY}"
            raise PermissionDenied(f"{exc}{shown}{local}") from exc
        if path == data_dir or path.startswith(data_dir.rstrip("/") + "/"):
            msg = (
                f"input {item.written!r} is inside the service's own data directory; "
                "refer to an uploaded file of yours as dataset:NAME"
            )
            raise PermissionDenied(msg)


def _dataset_path(service: JobService, owner: str, name: str) -> str:
    try:
        return str(service.datasets.by_name(name, owner).path)
    except NotFound as exc:
        msg = (
            f"the spec names 'dataset:{name}', but you have no dataset of that name; "
            "upload it first (`mlaas4hep datasets upload FILE`, or `mlaas4hep submit` "
            "with the local path in the spec) or list yours (`mlaas4hep datasets list`)"
        )
        raise SpecError(msg) from exc


def _dataset_files(spec: PipelineSpec | None, checked: object) -> list[list[str]]:
    if spec is not None:
        return [list(d.files) for d in spec.data.datasets]
    data = _as_dict(checked).get("data")
    entries = data.get("datasets") if isinstance(data, dict) else None
    out: list[list[str]] = []
    for entry in entries if isinstance(entries, list) else []:
        files = entry.get("files") if isinstance(entry, dict) else None
        out.append([f for f in files if isinstance(f, str)] if isinstance(files, list) else [])
    return out


def _data_field(spec: PipelineSpec | None, checked: object, name: str) -> str | None:
    if spec is not None:
        value = getattr(spec.data, name)
    else:
        data = _as_dict(checked).get("data")
        value = data.get(name) if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None


def _with_inputs(spec: PipelineSpec, resolved: Sequence[Sequence[ResolvedInput]]) -> PipelineSpec:
    datasets: list[DatasetSpec] = [
        d.model_copy(update={"files": [i.entry for i in group]})
        for d, group in zip(spec.data.datasets, resolved, strict=True)
    ]
    data = spec.data.model_copy(update={"datasets": datasets})
    return spec.model_copy(update={"data": data})


def _dict_with_inputs(
    doc: dict[str, Any], resolved: Sequence[Sequence[ResolvedInput]]
) -> dict[str, Any]:
    data = doc.get("data")
    entries = data.get("datasets") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return doc
    new = [
        {**e, "files": [i.entry for i in group]} if isinstance(e, dict) else e
        for e, group in zip(entries, resolved, strict=False)
    ]
    return {**doc, "data": {**data, "datasets": new}}  # type: ignore[dict-item]


def _as_dict(checked: object) -> dict[str, Any]:
    return dict(checked) if isinstance(checked, Mapping) else {}


def as_owner(submission: Submission, owner: str) -> Submission:
    """The same submission filed under *owner* (tests and trusted in-process callers)."""
    return dataclasses.replace(submission, owner=owner)
