"""UI pages for jobs: the list, one job (live), cancel, deploy, artifacts, and submission.

Every route calls the same :class:`~mlaas4hep.jobs.service.JobService` methods as the JSON
API in :mod:`mlaas4hep.api.routes_jobs`, with the same scope checks and the same owner
filter; only the rendering differs.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from mlaas4hep.api.artifacts import artifact_response
from mlaas4hep.api.errors import status_of
from mlaas4hep.api.routes_jobs import owner_filter
from mlaas4hep.api.schemas import Job
from mlaas4hep.api.ui import views
from mlaas4hep.api.ui.context import UiContext
from mlaas4hep.api.ui.routes_runs import json_for_script
from mlaas4hep.api.ui.session import UI_PREFIX, check_csrf
from mlaas4hep.auth.policy import has_scope, require_scope
from mlaas4hep.auth.principal import Principal
from mlaas4hep.errors import Mlaas4hepError, SpecError
from mlaas4hep.jobs.policy import authorize
from mlaas4hep.jobs.records import JobRecord, RunLabels
from mlaas4hep.jobs.run_compare import curves_of, editable_spec
from mlaas4hep.jobs.runs import MAX_RUN_NAME, check_labels, run_of
from mlaas4hep.jobs.service import parse_spec
from mlaas4hep.jobs.states import State
from mlaas4hep.jobs.tune_view import tune_view

_PAGE = 25
DEFAULT_EXAMPLE = "tth-vs-qcd.yaml"
_STATES = [s.value for s in State]


def jobs_ui_router(ctx: UiContext, caller_dep: Callable[..., Principal]) -> APIRouter:
    """The job pages, authenticated by *caller_dep* (the cookie-aware principal)."""
    router = APIRouter(prefix=UI_PREFIX, route_class=ctx.route_class, include_in_schema=False)
    caller_of = Depends(caller_dep)
    pages, service = ctx.pages, ctx.service

    @router.get("/", response_class=HTMLResponse)
    def home() -> Response:
        return RedirectResponse(f"{UI_PREFIX}/jobs", status_code=303)

    def listing(caller: Principal, state: list[State] | None, cursor: str | None) -> dict[str, Any]:
        require_scope(caller, "compute.read")
        jobs, nxt = service.list_jobs(owner_filter(caller), state or (), _PAGE, cursor)
        return {"jobs": [Job.of(j) for j in jobs], "next_cursor": nxt}

    @router.get("/jobs", response_class=HTMLResponse)
    def jobs_page(
        request: Request,
        caller: Principal = caller_of,
        state: Annotated[list[State] | None, Query()] = None,
        cursor: Annotated[str | None, Query(max_length=100)] = None,
    ) -> Response:
        chosen = [s.value for s in state or ()]
        return pages.render(
            request,
            "jobs.html",
            caller=caller,
            page="jobs",
            states=_STATES,
            chosen=chosen,
            **listing(caller, state, cursor),
        )

    @router.get("/jobs/rows", response_class=HTMLResponse)
    def job_rows(
        request: Request,
        caller: Principal = caller_of,
        state: Annotated[list[State] | None, Query()] = None,
        cursor: Annotated[str | None, Query(max_length=100)] = None,
    ) -> Response:
        """The table body alone, for the list's live refresh."""
        return pages.render(request, "_job_rows.html", **listing(caller, state, cursor))

    @router.get("/jobs/{job_id}", response_class=HTMLResponse)
    def job_page(request: Request, job_id: str, caller: Principal = caller_of) -> Response:
        require_scope(caller, "compute.read")
        record = service.get(job_id, owner_filter(caller))
        spec = views.spec_yaml(record)
        deploy_name = _deploy_name(record.spec, record.name)
        job = Job.of(record)
        curves = curves_of(service, run_of(service, record), charts=True)
        charts = {
            k for k in ("roc", "scores", "confusion", "regression", "importance") if curves.get(k)
        }
        if not curves["history"] and job.progress is not None:
            curves["history"] = job.progress.history  # while it runs: the epochs so far
        return pages.render(
            request,
            "job.html",
            caller=caller,
            page="jobs",
            job=job,
            spec=spec,
            curves=json_for_script(
                {"names": [record.title], "curves": [curves], "history": curves["history"]}
            ),
            charts=charts,
            has_curves=bool(charts),
            log=views.log_tail(service, record),
            results=views.job_results(service, record),
            deploy_name=deploy_name,
            can_cancel=has_scope(caller, "compute.cancel"),
            can_deploy=ctx.inference is not None,
            tune=tune_view(service, record),
        )

    @router.get("/jobs/{job_id}/status")
    def job_status(job_id: str, caller: Principal = caller_of) -> JSONResponse:
        """State, progress and log tail for the job page's live refresh."""
        require_scope(caller, "compute.read")
        record = service.get(job_id, owner_filter(caller))
        body = Job.of(record).model_dump(mode="json")
        body["log_tail"] = views.log_tail(service, record)
        body["terminal"] = record.state.terminal
        eta = body["progress"]["eta_seconds"] if body["progress"] else None
        body["eta_text"] = views.duration(eta)
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    @router.post("/jobs/{job_id}/cancel")
    async def cancel(request: Request, job_id: str, caller: Principal = caller_of) -> Response:
        form = await request.form(max_files=0, max_fields=4)
        check_csrf(request, _text(form.get("csrf_token")))
        require_scope(caller, "compute.cancel")
        await run_in_threadpool(service.cancel, job_id, owner_filter(caller))
        return RedirectResponse(f"{UI_PREFIX}/jobs/{job_id}", status_code=303)

    @router.post("/jobs/{job_id}/deploy")
    async def deploy(request: Request, job_id: str, caller: Principal = caller_of) -> Response:
        form = await request.form(max_files=0, max_fields=4)
        check_csrf(request, _text(form.get("csrf_token")))
        require_scope(caller, "compute.read")
        if ctx.inference is None:
            raise SpecError("this service runs without the inference routes; nothing to deploy to")
        record = await run_in_threadpool(service.get, job_id, owner_filter(caller))
        name = _text(form.get("name")).strip()
        model = await run_in_threadpool(service.artifact_path, record, "model.onnx")
        name, version = await ctx.inference.deployer.publish_directory(
            caller, name, model.parent, source_job=job_id
        )
        return RedirectResponse(
            f"{UI_PREFIX}/models/{name}?deployed={version}&job={job_id}", status_code=303
        )

    @router.get("/jobs/{job_id}/artifacts/{name:path}")
    def artifact(job_id: str, name: str, caller: Principal = caller_of) -> FileResponse:
        require_scope(caller, "compute.read")
        record = service.get(job_id, owner_filter(caller))
        # Hostile content: a download, inline only for checked raster images.
        return artifact_response(service.artifact_path(record, name), name)

    @router.get("/submit", response_class=HTMLResponse)
    def submit_page(
        request: Request,
        caller: Principal = caller_of,
        example: Annotated[str | None, Query(max_length=100)] = None,
        clone: Annotated[str | None, Query(max_length=32)] = None,
    ) -> Response:
        require_scope(caller, "compute.create")
        if clone is not None:
            # Clone and edit: the run's spec and labels, for the caller's own runs only.
            require_scope(caller, "compute.read")
            run = run_of(service, service.get(clone, owner_filter(caller)))
            text = editable_spec(service, run.job.owner, run)
            labels = RunLabels(f"{run.job.title}-clone"[:MAX_RUN_NAME], run.job.tags)
            return _submit_form(request, caller, text, None, labels=labels, cloned=run.job)
        examples = ctx.examples()
        if example is None and DEFAULT_EXAMPLE in examples:
            example = DEFAULT_EXAMPLE
        text = examples.get(example or "", "")
        return _submit_form(request, caller, text, example)

    def _submit_form(
        request: Request,
        caller: Principal,
        text: str,
        example: str | None,
        error: str | None = None,
        status: int = 200,
        *,
        labels: RunLabels | None = None,
        cloned: JobRecord | None = None,
        tag_text: str | None = None,
    ) -> Response:
        labels = labels or RunLabels()
        if tag_text is None:
            tag_text = ", ".join(f"{k}={v}" for k, v in labels.tags.items())
        return pages.render(
            request,
            "submit.html",
            caller=caller,
            page="submit",
            status=status,
            examples=sorted(ctx.examples()),
            example=example,
            text=text,
            error=error,
            idempotency_key=secrets.token_urlsafe(16),
            run_name=labels.name or "",
            tags=tag_text,
            cloned=cloned,
        )

    @router.post("/submit")
    async def submit(request: Request, caller: Principal = caller_of) -> Response:
        uploads = service.settings.uploads
        form = await request.form(max_files=1, max_fields=8, max_part_size=uploads.spec_bytes)
        try:
            check_csrf(request, _text(form.get("csrf_token")))
            require_scope(caller, "compute.create")
            text = _text(form.get("spec"))
            upload = form.get("spec_file")
            if isinstance(upload, UploadFile) and upload.filename:
                raw = await upload.read(uploads.spec_bytes + 1)
            else:
                raw = text.encode("utf-8")
            key = _text(form.get("idempotency_key"))[:256] or None
            run_name = _text(form.get("run_name"))[: MAX_RUN_NAME + 1]
            tag_text = _text(form.get("tags"))[:8192]
        finally:
            await form.close()
        shown_labels = RunLabels(run_name, {})
        try:
            tags = [t for t in (p.strip() for p in tag_text.split(",")) if t]
            labels = check_labels(run_name, tags)
            doc = parse_spec(raw, uploads.spec_bytes)
            # The one submission policy, as for the API (inputs, deploy rights, expressions).
            submission = await run_in_threadpool(authorize, service, caller, doc)
            job, _ = await run_in_threadpool(service.submit, submission, key, labels=labels)
        except Mlaas4hepError as exc:
            shown = raw.decode("utf-8", errors="replace")
            status, _slug = status_of(exc)  # the API's table: 403, 413, 422
            return _submit_form(
                request, caller, shown, None, str(exc), status, labels=shown_labels,
                tag_text=tag_text,
            )  # fmt: skip
        return RedirectResponse(f"{UI_PREFIX}/jobs/{job.id}", status_code=303)

    @router.post("/validate")
    async def validate(request: Request, caller: Principal = caller_of) -> JSONResponse:
        """Validate a spec as the user types: the API's 422 message, or ok."""
        check_csrf(request, None)
        require_scope(caller, "compute.create")
        limit = service.settings.uploads.spec_bytes
        body = await request.body()
        try:
            doc = parse_spec(body, limit)
            submission = await run_in_threadpool(authorize, service, caller, doc)
        except Mlaas4hepError as exc:
            return JSONResponse({"ok": False, "detail": str(exc)})
        name = submission.document.get("name")
        return JSONResponse({"ok": True, "detail": f"valid pipeline spec {name!r}"})

    return router


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _deploy_name(spec_json: str, job_name: str) -> str:
    spec = json.loads(spec_json)
    deploy = spec.get("deploy") if isinstance(spec, dict) else None
    if isinstance(deploy, dict) and isinstance(deploy.get("name"), str):
        return str(deploy["name"])
    cleaned = "".join(c if c.isalnum() or c in "_-." else "-" for c in job_name)
    return cleaned.strip("-.") or "model"
