"""``/healthz`` (the process answers) and ``/readyz`` (database reachable, executor alive,
job sandbox usable).

No authentication: probes of load balancers and Kubernetes call these.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from mlaas4hep.api.schemas import Health
from mlaas4hep.jobs.executor_local import LocalExecutor
from mlaas4hep.jobs.store import JobStore


def health_router(store: JobStore, executor: LocalExecutor | None) -> APIRouter:
    """Liveness and readiness; *executor* None when this process runs no jobs."""
    router = APIRouter(tags=["health"])

    @router.get("/healthz", response_model=Health)
    def healthz() -> Health:
        """200 while the process serves requests."""
        return Health(status="ok")

    @router.get(
        "/readyz",
        response_model=Health,
        responses={503: {"model": Health, "description": "not ready"}},
    )
    def readyz() -> JSONResponse:
        """200 when the database answers and the executor (if any) runs with a usable
        sandbox (or the explicit unsafe ``none``); else 503 with the reason."""
        checks = {"database": "ok"}
        try:
            store.ping()
        except SQLAlchemyError as exc:
            checks["database"] = f"unreachable: {type(exc).__name__}"
        sandbox_ok = True
        if executor is not None:
            checks["executor"] = "ok" if executor.alive else "stopped"
            # Unavailable: jobs stay queued; the text says why and how to fix it.
            checks["sandbox"] = executor.sandbox.describe()
            sandbox_ok = executor.sandbox.ready
        ready = checks["database"] == "ok" and checks.get("executor", "ok") == "ok" and sandbox_ok
        body = Health(status="ok" if ready else "unavailable", checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    return router
