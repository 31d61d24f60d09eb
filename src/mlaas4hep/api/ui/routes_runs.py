"""UI pages for runs: the runs table (sort, filter, search) and the compare view.

The same functions as the JSON API's ``/api/v1/runs`` (:mod:`mlaas4hep.jobs.runs`,
:mod:`mlaas4hep.jobs.run_compare`) with the same scope check and owner filter. The table
is sorted, filtered and searched by the server (the form's GET parameters); ``runs.js``
does the same in the page as the user types or clicks a column header.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup

from mlaas4hep.api.routes_jobs import owner_filter
from mlaas4hep.api.schemas import iso
from mlaas4hep.api.ui.context import UiContext
from mlaas4hep.api.ui.session import UI_PREFIX
from mlaas4hep.auth.policy import require_scope
from mlaas4hep.auth.principal import Principal
from mlaas4hep.jobs.run_compare import compare
from mlaas4hep.jobs.runs import Run, RunQuery, columns, list_runs, search_text
from mlaas4hep.jobs.states import State

_STATES = [s.value for s in State]


def runs_ui_router(ctx: UiContext, caller_dep: Callable[..., Principal]) -> APIRouter:
    """The run pages, authenticated by *caller_dep* (the cookie-aware principal)."""
    router = APIRouter(prefix=UI_PREFIX, route_class=ctx.route_class, include_in_schema=False)
    caller_of = Depends(caller_dep)
    pages, service = ctx.pages, ctx.service

    @router.get("/runs", response_class=HTMLResponse)
    def runs_page(
        request: Request,
        caller: Principal = caller_of,
        search: Annotated[str, Query(max_length=200)] = "",
        state: Annotated[State | Literal[""], Query()] = "",
        tag: Annotated[str, Query(max_length=300)] = "",
        sort: Annotated[str, Query(max_length=100)] = "created",
        order: Literal["asc", "desc"] = "desc",
    ) -> Response:
        require_scope(caller, "compute.read")
        states = (state,) if isinstance(state, State) else ()
        tags = tuple(t.strip() for t in tag.split(",") if t.strip())
        query = RunQuery(search, states, tags, None, sort, order, limit=500)
        runs = list_runs(service, owner_filter(caller), query)
        params, metrics = columns(runs)
        return pages.render(
            request,
            "runs.html",
            caller=caller,
            page="runs",
            runs=runs,
            rows=[_row(r, params) for r in runs],
            params=params,
            metrics=metrics,
            states=_STATES,
            query={"search": search, "state": state, "tag": tag, "sort": sort, "order": order},
        )

    @router.get("/runs/compare", response_class=HTMLResponse)
    def compare_page(
        request: Request,
        caller: Principal = caller_of,
        id: Annotated[list[str] | None, Query()] = None,
        only_differences: bool = False,
    ) -> Response:
        require_scope(caller, "compute.read")
        result = compare(service, owner_filter(caller), id or [])
        names = [r.job.title for r in result.runs]
        data = {"names": names, "curves": result.curves}
        return pages.render(
            request,
            "compare.html",
            caller=caller,
            page="runs",
            c=result,
            only_differences=only_differences,
            data=json_for_script(data),
        )

    return router


def _row(run: Run, params: list[str]) -> dict[str, Any]:
    """What the table's cells and ``runs.js`` need of one run, beyond the run itself."""
    return {
        "run": run,
        "search": search_text(run),
        "tags": json.dumps(run.job.tags, sort_keys=True),
        "created": iso(run.job.created_at).isoformat(),  # type: ignore[union-attr]
        # Sort values: numbers as numbers, anything else as its JSON text.
        "params": {p: _sort_value(run.params.get(p)) for p in params},
    }


def _sort_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    return json.dumps(value, sort_keys=True, default=str)


def json_for_script(value: Any) -> Markup:
    """*value* as JSON safe inside ``<script type="application/json">`` (``<``, ``>`` and
    ``&`` escaped, so a run name cannot close the element)."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False, default=str)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)  # noqa: S704 - escaped above for this one context
