"""``/api/v1/datasets``: upload a ROOT file (streamed to disk, size-limited), list, delete.

An upload is the raw request body (``curl --data-binary @f.root``), so it is written to
disk as it arrives and refused with 413 as soon as it passes the limit. Two ways:

* ``POST /datasets?name=NAME``: the whole file in one request;
* ``PUT /datasets/uploads/{sha256}?name=NAME&size=N&offset=K``: content-addressed and
  resumable (what ``mlaas4hep submit`` and ``mlaas4hep datasets upload`` use). ``GET`` on
  the same path says how many bytes the service holds (resume there), ``DELETE`` drops
  the partial. ``GET /datasets?sha256=H`` finds a file already uploaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.requests import ClientDisconnect

from mlaas4hep.api.deps import auth_failures, require_scope
from mlaas4hep.api.errors import problem_responses
from mlaas4hep.api.routes_jobs import owner_filter
from mlaas4hep.api.schemas import DatasetInfo, DatasetList, UploadInfo
from mlaas4hep.auth.principal import Principal
from mlaas4hep.errors import Conflict, NotFound, PayloadTooLarge, SpecError
from mlaas4hep.jobs.datasets import DatasetStore
from mlaas4hep.jobs.limits import fmt_bytes

log = logging.getLogger(__name__)

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "the ROOT file's bytes",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def datasets_router(datasets: DatasetStore, principal: Callable[..., Principal]) -> APIRouter:
    """The dataset routes, authenticated by the *principal* dependency."""
    router = APIRouter(prefix="/datasets", tags=["datasets"])
    # Dependencies as defaults, not Annotated aliases: aliases local to this factory
    # cannot be resolved from the postponed (string) annotations.
    can_create = Depends(require_scope(principal, "compute.create"))
    can_read = Depends(require_scope(principal, "compute.read"))
    can_modify = Depends(require_scope(principal, "compute.modify"))

    @router.post(
        "",
        status_code=201,
        response_model=DatasetInfo,
        openapi_extra=_UPLOAD_BODY,
        responses=problem_responses(
            *auth_failures("compute.create"),
            (Conflict, "you already have a dataset of that name"),
            (PayloadTooLarge, "the file is over the limit (uploads.dataset_bytes)"),
            (SpecError, "a bad name, or the file is not a readable ROOT file"),
            (RequestValidationError, "name missing or over 128 characters"),
        ),
    )
    async def upload(
        request: Request,
        name: Annotated[str, Query(min_length=1, max_length=128, description="file name")],
        caller: Principal = can_create,
    ) -> DatasetInfo:
        """Upload one ROOT file; refer to it as ``dataset:NAME`` in a spec."""
        declared = request.headers.get("content-length")
        limit = datasets.limit
        if declared and declared.isdigit() and int(declared) > limit:
            msg = f"the upload is {declared} bytes; the limit is {fmt_bytes(limit)}"
            raise PayloadTooLarge(msg)
        ds = await datasets.upload(caller.key, name, request.stream())
        return DatasetInfo.of(ds)

    @router.get(
        "",
        response_model=DatasetList,
        responses=problem_responses(
            *auth_failures("compute.read"),
            (RequestValidationError, "sha256 over 64 characters"),
        ),
    )
    def list_datasets(
        sha256: Annotated[
            str | None, Query(max_length=64, description="only your file with this SHA-256")
        ] = None,
        caller: Principal = can_read,
    ) -> DatasetList:
        """Your datasets, newest first."""
        if sha256 is not None:
            found = datasets.by_hash(sha256, caller.key)
            return DatasetList(items=[] if found is None else [DatasetInfo.of(found)])
        return DatasetList(
            items=[DatasetInfo.of(d) for d in datasets.list_datasets(owner_filter(caller))]
        )

    @router.get(
        "/uploads/{sha256}",
        response_model=UploadInfo,
        responses=problem_responses(
            *auth_failures("compute.read"),
            (NotFound, "no unfinished upload of that file among yours"),
            (SpecError, "sha256 is not 64 lower-case hexadecimal digits"),
        ),
    )
    def upload_state(sha256: str, caller: Principal = can_read) -> UploadInfo:
        """How many bytes of your unfinished upload of *sha256* the service holds."""
        return UploadInfo.of(datasets.uploads.state(caller.key, sha256))

    @router.put(
        "/uploads/{sha256}",
        response_model=UploadInfo,
        openapi_extra=_UPLOAD_BODY,
        responses={
            201: {"description": "complete: the dataset is stored"},
            **problem_responses(
                *auth_failures("compute.create"),
                (
                    Conflict,
                    "offset is not where the service's copy ends (the detail says where), the "
                    "name is taken by another file, this file is being uploaded already, or "
                    "too many unfinished uploads",
                ),
                (PayloadTooLarge, "size over uploads.dataset_bytes, or more bytes than size"),
                (
                    SpecError,
                    "a malformed sha256 or name, not a ROOT file, or the content does not hash "
                    "to sha256",
                ),
                (RequestValidationError, "name, size or offset missing or out of range"),
            ),
        },
    )
    async def resume_upload(
        request: Request,
        response: Response,
        sha256: str,
        name: Annotated[str, Query(min_length=1, max_length=128, description="file name")],
        size: Annotated[int, Query(ge=1, description="the whole file's size in bytes")],
        offset: Annotated[int, Query(ge=0, description="where this body starts")] = 0,
        caller: Principal = can_create,
    ) -> UploadInfo | Response:
        """Send bytes of the file *sha256* from *offset*; 201 once it is complete."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max(size - offset, 0):
            msg = f"the body is {declared} bytes; only {size - offset} remain of {size}"
            raise PayloadTooLarge(msg)
        try:
            state = await datasets.uploads.resume(
                caller.key, sha256, name, size, offset, request.stream()
            )
        except ClientDisconnect:
            # the client went away mid-body: what arrived is kept for its resume
            log.info("upload %s of %s stopped by the client", sha256, caller.key)
            return Response(status_code=400)
        if state.dataset is not None:
            response.status_code = 201
        return UploadInfo.of(state)

    @router.delete(
        "/uploads/{sha256}",
        status_code=204,
        response_class=Response,
        responses=problem_responses(
            *auth_failures("compute.modify"),
            (NotFound, "no unfinished upload of that file among yours"),
            (SpecError, "sha256 is not 64 lower-case hexadecimal digits"),
        ),
    )
    def discard_upload(sha256: str, caller: Principal = can_modify) -> Response:
        """Drop your unfinished upload of *sha256*."""
        datasets.uploads.discard(caller.key, sha256)
        return Response(status_code=204)

    @router.get(
        "/{dataset_id}",
        response_model=DatasetInfo,
        responses=problem_responses(
            *auth_failures("compute.read"), (NotFound, "no such dataset among yours")
        ),
    )
    def get_dataset(dataset_id: str, caller: Principal = can_read) -> DatasetInfo:
        """One dataset."""
        return DatasetInfo.of(datasets.get(dataset_id, owner_filter(caller)))

    @router.delete(
        "/{dataset_id}",
        status_code=204,
        response_class=Response,
        responses=problem_responses(
            *auth_failures("compute.modify"), (NotFound, "no such dataset among yours")
        ),
    )
    def delete_dataset(dataset_id: str, caller: Principal = can_modify) -> Response:
        """Delete a dataset and its file."""
        datasets.delete(dataset_id, owner_filter(caller))
        return Response(status_code=204)

    return router
