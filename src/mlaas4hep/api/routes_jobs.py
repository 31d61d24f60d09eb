"""``/api/v1/jobs``: submit, list, inspect, follow logs, cancel, delete, download.

Routes hold no logic: check the caller (the auth dependency plus a scope), call one
:class:`~mlaas4hep.jobs.service.JobService` method, map the result. Another user's job is
a 404, exactly like a job that does not exist.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from mlaas4hep.api.artifacts import artifact_response
from mlaas4hep.api.deps import auth_failures, require_scope
from mlaas4hep.api.errors import Cause, problem_responses
from mlaas4hep.api.schemas import ArtifactList, Job, JobList
from mlaas4hep.auth.principal import Principal
from mlaas4hep.errors import (
    Conflict,
    DataSourceError,
    ExpressionError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    SpecError,
)
from mlaas4hep.jobs.credentials import bearer_token, wants_token
from mlaas4hep.jobs.policy import authorize
from mlaas4hep.jobs.runs import MAX_RUN_NAME, check_labels
from mlaas4hep.jobs.service import JobService, UserFile, parse_spec
from mlaas4hep.jobs.states import State
from mlaas4hep.jobs.store import IdempotencyKeyReused, JobRecord

_LOG_POLL_S = 0.5
_LOG_CHUNK = 64 * 1024
_SPEC_TYPES = (
    "application/json",
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
    "text/plain",
)
_SPEC_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "the pipeline spec, or an apply request (top-level 'apply:', see "
        "docs/service.md), as JSON or YAML; or multipart with a 'spec' part and small user "
        "files (e.g. a model module, a file list) as further parts",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/yaml": {"schema": {"type": "string"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "spec": {"type": "string", "format": "binary"},
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                    },
                    "required": ["spec"],
                }
            },
        },
    }
}


#: What each route can answer besides success, read off the code it calls (the statuses
#: come from the error table; ``problem_responses`` renders them).
_NO_JOB: Cause = (NotFound, "no such job among yours (another user's job is not found either)")
_SUBMIT_ERRORS: tuple[Cause, ...] = (
    *auth_failures("compute.create"),
    (MultiPartException, "a malformed multipart body, or more parts than allowed"),
    (
        PermissionDenied,
        "the submission policy refuses an input or the deploy target: a missing storage "
        "scope, or a model you may not read or modify (the detail names it)",
    ),
    (PayloadTooLarge, "the body, the spec or the job's files over the limits (uploads.*)"),
    (
        SpecError,
        "not YAML/JSON, an unsupported content type, or an invalid spec or apply request "
        "(the detail names the field; an unknown dataset or model too)",
    ),
    (ExpressionError, "an expression does not parse or names an unknown branch (with a caret)"),
    (DataSourceError, "an input that cannot be resolved (e.g. a glob without a directory)"),
    (IdempotencyKeyReused, "the Idempotency-Key was already used with another body"),
    (
        RequestValidationError,
        "an Idempotency-Key header outside 1 to 256 characters, or a run_name, tag or "
        "parent parameter too long",
    ),
    (NotFound, "the parent job is not among yours"),
)
_REPLAY = {
    "model": Job,
    "description": "a replay: the job an earlier request with this Idempotency-Key and the "
    "same body created",
}
_CREATED = {
    "description": "the job, queued",
    "headers": {"Location": {"description": "the job's URL", "schema": {"type": "string"}}},
}


def owner_filter(caller: Principal) -> str | None:
    """The owner key listings and lookups are restricted to (None for admins)."""
    return None if caller.is_admin else caller.key


def jobs_router(service: JobService, principal: Callable[..., Principal]) -> APIRouter:
    """The job routes, authenticated by the *principal* dependency."""
    router = APIRouter(prefix="/jobs", tags=["jobs"])
    reading = auth_failures("compute.read")
    # Dependencies as defaults, not Annotated aliases: aliases local to this factory
    # cannot be resolved from the postponed (string) annotations.
    can_create = Depends(require_scope(principal, "compute.create"))
    can_read = Depends(require_scope(principal, "compute.read"))
    can_cancel = Depends(require_scope(principal, "compute.cancel"))
    can_modify = Depends(require_scope(principal, "compute.modify"))

    @router.post(
        "",
        status_code=201,
        response_model=Job,
        openapi_extra=_SPEC_BODY,
        responses={201: _CREATED, 200: _REPLAY, **problem_responses(*_SUBMIT_ERRORS)},
    )
    async def submit(
        request: Request,
        response: Response,
        caller: Principal = can_create,
        idempotency_key: Annotated[
            str | None, Header(alias="Idempotency-Key", min_length=1, max_length=256)
        ] = None,
        run_name: Annotated[
            str | None, Query(max_length=MAX_RUN_NAME, description="a name for this run")
        ] = None,
        tag: Annotated[
            list[str] | None,
            Query(max_length=300, description="a run tag KEY=VALUE; repeat for several"),
        ] = None,
        parent: Annotated[
            str | None, Query(max_length=32, description="a job of yours this run belongs to")
        ] = None,
    ) -> Job:
        """Queue a pipeline, or an apply request (a deployed model applied to inputs). A
        replay of the same ``Idempotency-Key`` and body returns the same job (200); the same
        key with another body is refused (422). ``run_name``, ``tag`` and ``parent`` label
        the run (the runs table, docs/ui.md)."""
        labels = check_labels(run_name, tag or (), parent)
        doc, files = await _read_submission(request, service)
        # The one submission policy (inputs, scopes, deploy rights, expressions).
        submission = await run_in_threadpool(authorize, service, caller, doc, files)
        # The job's own remote reads use the caller's token (never logged; see credentials).
        token = None
        if wants_token(caller.scopes, submission.needs_network):
            token = bearer_token(request.headers.get("authorization"))
        job, created = await run_in_threadpool(
            service.submit, submission, idempotency_key, token=token, labels=labels
        )
        response.status_code = 201 if created else 200
        response.headers["Location"] = f"{request.url.path}/{job.id}"
        return Job.of(job)

    @router.get(
        "",
        response_model=JobList,
        responses=problem_responses(
            *reading,
            (RequestValidationError, "a state, limit or cursor parameter out of range"),
            (SpecError, "a cursor that is not the next_cursor of a listing"),
        ),
    )
    def list_jobs(
        caller: Principal = can_read,
        state: Annotated[list[State] | None, Query(description="repeat to allow several")] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=100)] = None,
    ) -> JobList:
        """Your jobs, newest first, one page at a time."""
        jobs, nxt = service.list_jobs(owner_filter(caller), state or (), limit, cursor)
        return JobList(items=[Job.of(j) for j in jobs], next_cursor=nxt)

    @router.get("/{job_id}", response_model=Job, responses=problem_responses(*reading, _NO_JOB))
    def get_job(job_id: str, caller: Principal = can_read) -> Job:
        """State, timestamps, progress (events, epoch, ETA, metrics) and outcome."""
        return Job.of(service.get(job_id, owner_filter(caller)))

    @router.get(
        "/{job_id}/logs",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
            **problem_responses(
                *reading,
                (NotFound, "no such job among yours, or no such attempt"),
                (RequestValidationError, "follow is not a boolean, or attempt not in 1..1000"),
            ),
        },
    )
    def get_logs(
        job_id: str,
        caller: Principal = can_read,
        follow: bool = False,
        attempt: Annotated[int | None, Query(ge=1, le=1000)] = None,
    ) -> StreamingResponse:
        """The log of the latest (or the given) attempt; ``follow=true`` streams until the
        job ends."""
        job = service.get(job_id, owner_filter(caller))
        path = service.log_path(job, attempt)
        stream = _follow(service, job, path, attempt) if follow else _read_once(path)
        return StreamingResponse(stream, media_type="text/plain; charset=utf-8")

    @router.post(
        "/{job_id}/cancel",
        status_code=202,
        response_model=Job,
        responses=problem_responses(
            *auth_failures("compute.cancel"),
            _NO_JOB,
            (Conflict, "the job already succeeded or failed, or it changed meanwhile: retry"),
        ),
    )
    def cancel(job_id: str, caller: Principal = can_cancel) -> Job:
        """Cancel: a queued job at once, a running one within a heartbeat (its processes
        get SIGTERM, then SIGKILL after the grace period)."""
        job, _ = service.cancel(job_id, owner_filter(caller))
        return Job.of(job)

    @router.delete(
        "/{job_id}",
        status_code=204,
        response_class=Response,
        responses=problem_responses(
            *auth_failures("compute.modify"),
            _NO_JOB,
            (Conflict, "the job is still queued or running: cancel it first"),
        ),
    )
    def delete(job_id: str, caller: Principal = can_modify) -> Response:
        """Delete a finished job with its files (409 while it is queued or running)."""
        service.delete(job_id, owner_filter(caller))
        return Response(status_code=204)

    @router.get(
        "/{job_id}/artifacts",
        response_model=ArtifactList,
        responses=problem_responses(
            *reading, (NotFound, "no such job among yours, or it has not succeeded (yet)")
        ),
    )
    def list_artifacts(job_id: str, caller: Principal = can_read) -> ArtifactList:
        """The files of a succeeded job (model.onnx, metrics.json, plots, ...)."""
        job = service.get(job_id, owner_filter(caller))
        return ArtifactList.of(job.id, service.artifacts(job))

    @router.get(
        "/{job_id}/artifacts/{name:path}",
        response_class=FileResponse,
        responses={
            200: {
                "description": "the file: a download, or inline for a checked raster image",
                "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
            },
            **problem_responses(
                *reading,
                (NotFound, "no such job among yours, not succeeded (yet), or no such artifact"),
            ),
        },
    )
    def get_artifact(job_id: str, name: str, caller: Principal = can_read) -> FileResponse:
        """One artifact, or ``bundle.tar.gz`` with all of them."""
        job = service.get(job_id, owner_filter(caller))
        # Hostile content: a download, inline only for checked raster images (docs/security.md).
        return artifact_response(service.artifact_path(job, name), name)

    return router


async def _read_submission(
    request: Request, service: JobService
) -> tuple[dict[str, Any], list[UserFile]]:
    uploads = service.settings.uploads
    cap = uploads.spec_bytes + uploads.job_files_bytes + 64 * 1024  # + multipart framing
    body = await _read_capped(request, cap)
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if ctype == "multipart/form-data":
        return await _read_multipart(request, body, service)
    if ctype not in _SPEC_TYPES:
        msg = f"unsupported content type {ctype!r}; send JSON, YAML or multipart/form-data"
        raise SpecError(msg)
    return parse_spec(body, uploads.spec_bytes), []


async def _read_capped(request: Request, cap: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        msg = f"the request body is {declared} bytes; the limit is {cap}"
        raise PayloadTooLarge(msg)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            msg = f"the request body exceeds the limit of {cap} bytes"
            raise PayloadTooLarge(msg)
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_multipart(
    request: Request, body: bytes, service: JobService
) -> tuple[dict[str, Any], list[UserFile]]:
    uploads = service.settings.uploads

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    replayed = Request(request.scope, replay)
    form = await replayed.form(
        max_files=uploads.job_files + 1, max_fields=8, max_part_size=uploads.spec_bytes
    )
    try:
        spec_part = form.get("spec")
        if spec_part is None:
            raise SpecError("the multipart request has no 'spec' part; add -F spec=@pipeline.yaml")
        raw = await spec_part.read() if isinstance(spec_part, UploadFile) else spec_part.encode()
        doc = parse_spec(raw, uploads.spec_bytes)
        files = []
        for key, value in form.multi_items():
            if key != "spec" and isinstance(value, UploadFile):
                files.append(UserFile(value.filename or key, await value.read()))
        return doc, files
    finally:
        await form.close()


async def _read_once(path: Path | None) -> AsyncIterator[bytes]:
    if path is None or not path.exists():
        return
    with path.open("rb") as f:
        while chunk := await run_in_threadpool(f.read, _LOG_CHUNK):
            yield chunk


async def _follow(
    service: JobService, job: JobRecord, path: Path | None, attempt: int | None
) -> AsyncIterator[bytes]:
    offset = 0
    while True:
        if path is not None and path.exists():
            with path.open("rb") as f:
                f.seek(offset)
                while chunk := f.read(_LOG_CHUNK):
                    offset += len(chunk)
                    yield chunk
        if job.state.terminal:
            return
        await asyncio.sleep(_LOG_POLL_S)
        job = await run_in_threadpool(service.get, job.id, None)
        if attempt is None and (path is None or job.attempt > int(path.stem.split("-")[1])):
            # A new attempt started (requeue): continue with its log.
            path, offset = service.log_path(job), 0
