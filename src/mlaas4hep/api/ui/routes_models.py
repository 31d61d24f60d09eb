"""UI pages for models (metadata, registry, try-a-prediction, snippets) and datasets.

The model page itself is :mod:`mlaas4hep.api.ui.model_page`; promoting, rolling back and
the serving policy are :mod:`mlaas4hep.api.ui.routes_registry`.

Models go through the inference service's data plane (the same permission checks and the
same batcher as ``/v2`` and ``/json``); datasets through the :class:`DatasetStore`, whose
schemas come from the bounded upload inspection (:mod:`mlaas4hep.jobs.dataset_inspect`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from mlaas4hep.api.routes_jobs import owner_filter
from mlaas4hep.api.schemas import DatasetInfo
from mlaas4hep.api.ui.context import UiContext
from mlaas4hep.api.ui.model_page import (
    MAX_FEATURES,
    event_values,
    feature_labels,
    render_model,
    row_of,
)
from mlaas4hep.api.ui.routes_registry import add_registry_ui_routes
from mlaas4hep.api.ui.session import UI_PREFIX, check_csrf
from mlaas4hep.auth.policy import require_scope
from mlaas4hep.auth.principal import Principal
from mlaas4hep.errors import Mlaas4hepError, PayloadTooLarge, PermissionDenied, SpecError
from mlaas4hep.jobs.limits import fmt_bytes


def models_ui_router(ctx: UiContext, caller_dep: Callable[..., Principal]) -> APIRouter:
    """The model and dataset pages, authenticated by *caller_dep*."""
    router = APIRouter(prefix=UI_PREFIX, route_class=ctx.route_class, include_in_schema=False)
    caller_of = Depends(caller_dep)
    pages = ctx.pages

    @router.get("/models", response_class=HTMLResponse)
    async def models_page(request: Request, caller: Principal = caller_of) -> Response:
        models: dict[str, list[dict[str, Any]]] = {}
        if ctx.inference is not None:
            for entry in await ctx.inference.plane.repository_index(caller):
                models.setdefault(entry["name"], []).append(entry)
        return pages.render(
            request,
            "models.html",
            caller=caller,
            page="models",
            models=models,
            enabled=ctx.inference is not None,
        )

    @router.get("/models/{name}", response_class=HTMLResponse)
    async def model_page(request: Request, name: str, caller: Principal = caller_of) -> Response:
        return await render_model(ctx, request, caller, name)

    @router.post("/models/{name}/predict", response_class=HTMLResponse)
    async def predict(request: Request, name: str, caller: Principal = caller_of) -> Response:
        form = await request.form(max_files=0, max_fields=MAX_FEATURES + 3)
        check_csrf(request, _text(form.get("csrf_token")))
        values = [_text(v) for v in form.getlist("value")]
        event = _text(form.get("event")).strip()
        if ctx.inference is None:
            raise SpecError("this service runs without the inference routes")
        try:
            ctx.inference.plane.check(caller, "infer", name)
            if event:  # a pasted event fills the fields (shown as sent)
                meta = ctx.inference.plane.model_metadata(caller, name, None)
                values = event_values(event, feature_labels(meta), values)
            row = row_of(values, [])
            scores = await ctx.inference.plane.predict_rows(caller, name, row)
            result = np.asarray(scores).reshape(len(row), -1)[0].tolist()
        except Mlaas4hepError as exc:
            if isinstance(exc, PermissionDenied):
                raise
            return await render_model(
                ctx, request, caller, name, values=values, event=event, error=str(exc), status=422
            )
        return await render_model(ctx, request, caller, name, values=values, result=result)

    add_registry_ui_routes(router, ctx, caller_of)

    @router.get("/datasets", response_class=HTMLResponse)
    async def datasets_page(request: Request, caller: Principal = caller_of) -> Response:
        require_scope(caller, "compute.read")
        items = await run_in_threadpool(ctx.datasets.list_datasets, owner_filter(caller))
        rows = []
        for ds in items:
            schema, problem = None, None
            try:  # recorded at upload by the bounded worker; never parsed in this process
                schema = await run_in_threadpool(ctx.datasets.schema, ds)
            except Mlaas4hepError as exc:
                problem = str(exc)
            rows.append({"info": DatasetInfo.of(ds), "schema": schema, "problem": problem})
        return pages.render(
            request,
            "datasets.html",
            caller=caller,
            page="datasets",
            datasets=rows,
            limit=fmt_bytes(ctx.datasets.limit),
        )

    @router.post("/datasets")
    async def upload(
        request: Request,
        name: Annotated[str, Query(min_length=1, max_length=128)],
        caller: Principal = caller_of,
    ) -> JSONResponse:
        """The upload form's script sends the file's bytes as the body (streamed to disk)."""
        check_csrf(request, None)
        require_scope(caller, "compute.create")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > ctx.datasets.limit:
            msg = f"the upload is {declared} bytes; the limit is {fmt_bytes(ctx.datasets.limit)}"
            raise PayloadTooLarge(msg)
        ds = await ctx.datasets.upload(caller.key, name, request.stream())
        return JSONResponse(DatasetInfo.of(ds).model_dump(mode="json"), status_code=201)

    return router


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
