"""``/api/v1/runs``: your jobs as runs, listed with parameters and metrics, and compared.

A run is a job (the same id, the same owner check): another user's run is a 404 exactly
like one that does not exist. The functions behind these routes are in
:mod:`mlaas4hep.jobs.runs` and :mod:`mlaas4hep.jobs.run_compare`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse

from mlaas4hep.api.deps import auth_failures, require_scope
from mlaas4hep.api.errors import problem_responses
from mlaas4hep.api.routes_jobs import owner_filter
from mlaas4hep.api.schemas import RunComparison, RunList, RunSummary
from mlaas4hep.auth.principal import Principal
from mlaas4hep.errors import NotFound, SpecError
from mlaas4hep.jobs.run_compare import MAX_COMPARED, compare, editable_spec
from mlaas4hep.jobs.runs import RunQuery, columns, list_runs, run_of
from mlaas4hep.jobs.service import JobService
from mlaas4hep.jobs.states import State


def runs_router(service: JobService, principal: Callable[..., Principal]) -> APIRouter:
    """The run routes, authenticated by the *principal* dependency."""
    router = APIRouter(prefix="/runs", tags=["runs"])
    reading = auth_failures("compute.read")
    can_read = Depends(require_scope(principal, "compute.read"))

    @router.get(
        "",
        response_model=RunList,
        responses=problem_responses(
            *reading,
            (SpecError, "an unknown sort key"),
            (RequestValidationError, "a parameter out of range"),
        ),
    )
    def list_(
        caller: Principal = can_read,
        search: Annotated[str, Query(max_length=200, description="words to find")] = "",
        state: Annotated[list[State] | None, Query(description="repeatable")] = None,
        tag: Annotated[
            list[str] | None, Query(description="KEY=VALUE or KEY; repeatable, all must match")
        ] = None,
        parent: Annotated[str | None, Query(max_length=32)] = None,
        sort: Annotated[
            str,
            Query(
                max_length=100,
                description="created, name, state, duration, param:KEY or metric:KEY",
            ),
        ] = "created",
        order: Literal["asc", "desc"] = "desc",
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> RunList:
        """Your runs (among your newest 500 jobs): run name, tags, state, duration, key
        parameters and test metrics; filtered by state, tag and parent, searched, sorted."""
        query = RunQuery(search, tuple(state or ()), tuple(tag or ()), parent, sort, order, limit)
        runs = list_runs(service, owner_filter(caller), query)
        params, metrics = columns(runs)
        return RunList(
            items=[RunSummary.of(r, params) for r in runs],
            param_columns=params,
            metric_columns=metrics,
        )

    @router.get(
        "/compare",
        response_model=RunComparison,
        responses=problem_responses(
            *reading,
            (NotFound, "one of the runs is not among yours"),
            (SpecError, f"fewer than 2 or more than {MAX_COMPARED} distinct runs"),
        ),
    )
    def compare_(
        caller: Principal = can_read,
        id: Annotated[list[str], Query(description="a run (job) id; 2 to 10 of them")] = [],  # noqa: B006
    ) -> RunComparison:
        """Runs side by side: every parameter (flattened spec) and test metric with
        whether they differ, and each run's ROC, score and per-epoch curves."""
        return RunComparison.of(compare(service, owner_filter(caller), id))

    @router.get(
        "/{job_id}/spec",
        response_class=PlainTextResponse,
        responses={
            200: {"content": {"application/yaml": {"schema": {"type": "string"}}}},
            **problem_responses(*reading, (NotFound, "no such run among yours")),
        },
    )
    def spec(job_id: str, caller: Principal = can_read) -> PlainTextResponse:
        """The run's spec as YAML, its uploaded inputs as ``dataset:NAME``: edit it and
        submit it again (clone and resubmit)."""
        run = run_of(service, service.get(job_id, owner_filter(caller)))
        text = editable_spec(service, run.job.owner, run)
        return PlainTextResponse(text, media_type="application/yaml")

    return router
