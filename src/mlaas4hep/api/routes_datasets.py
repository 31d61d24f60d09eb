"""``/api/v1/datasets``: upload a ROOT file (streamed to disk, size-limited), list, delete.

The upload is the raw request body (``curl --data-binary @f.root``), so it is written to
disk as it arrives and refused with 413 as soon as it passes the limit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from mlaas4hep.api.deps import require_scope
from mlaas4hep.api.errors import PROBLEM_RESPONSES
from mlaas4hep.api.routes_jobs import owner_filter
from mlaas4hep.api.schemas import DatasetInfo, DatasetList
from mlaas4hep.auth.principal import Principal
from mlaas4hep.errors import PayloadTooLarge
from mlaas4hep.jobs.datasets import DatasetStore
from mlaas4hep.jobs.limits import fmt_bytes

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "the ROOT file's bytes",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def datasets_router(datasets: DatasetStore, principal: Callable[..., Principal]) -> APIRouter:
    """The dataset routes, authenticated by the *principal* dependency."""
    router = APIRouter(prefix="/datasets", tags=["datasets"], responses=PROBLEM_RESPONSES)
    # Dependencies as defaults, not Annotated aliases: aliases local to this factory
    # cannot be resolved from the postponed (string) annotations.
    can_create = Depends(require_scope(principal, "compute.create"))
    can_read = Depends(require_scope(principal, "compute.read"))
    can_modify = Depends(require_scope(principal, "compute.modify"))

    @router.post("", status_code=201, response_model=DatasetInfo, openapi_extra=_UPLOAD_BODY)
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

    @router.get("", response_model=DatasetList)
    def list_datasets(caller: Principal = can_read) -> DatasetList:
        """Your datasets, newest first."""
        return DatasetList(
            items=[DatasetInfo.of(d) for d in datasets.list_datasets(owner_filter(caller))]
        )

    @router.get("/{dataset_id}", response_model=DatasetInfo)
    def get_dataset(dataset_id: str, caller: Principal = can_read) -> DatasetInfo:
        """One dataset."""
        return DatasetInfo.of(datasets.get(dataset_id, owner_filter(caller)))

    @router.delete("/{dataset_id}", status_code=204, response_class=Response)
    def delete_dataset(dataset_id: str, caller: Principal = can_modify) -> Response:
        """Delete a dataset and its file."""
        datasets.delete(dataset_id, owner_filter(caller))
        return Response(status_code=204)

    return router
