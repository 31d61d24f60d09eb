"""The FastAPI application factory: everything is built here, once, from the settings.

``create_app(settings)`` wires the job store, the dataset store, the job service, the
local executor (started and stopped with the app), the authenticator and the routers
(one per resource, under ``/api/v1``). Nothing lives at module level, so several apps
(tests, replicas in one process) never share state.

The OpenAPI document (``/openapi.json``) and its offline pages (``/docs``, ``/redoc``:
:mod:`mlaas4hep.api.docs`) describe what the routes really do: the ``bearer`` scheme on
every route that authenticates (:mod:`mlaas4hep.api.deps`), and on each route the error
answers it can give, as RFC 9457 problems (:func:`mlaas4hep.api.errors.problem_responses`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from fastapi import APIRouter, FastAPI

from mlaas4hep import __version__
from mlaas4hep.api import errors
from mlaas4hep.api.deps import local_issuer_router, principal_dependency
from mlaas4hep.api.docs import install_docs
from mlaas4hep.api.hosts import AllowedHosts, HostGuard
from mlaas4hep.api.routes_datasets import datasets_router
from mlaas4hep.api.routes_health import health_router
from mlaas4hep.api.routes_jobs import jobs_router
from mlaas4hep.api.routes_runs import runs_router
from mlaas4hep.api.schemas import API_PREFIX, Problem
from mlaas4hep.api.ui import install_ui
from mlaas4hep.api.ui.revocations import RevokedSessions, RevokingAuthenticator
from mlaas4hep.auth.factory import create_authenticator
from mlaas4hep.auth.policy import INFERENCE_SCOPE, METRICS_SCOPE, has_scope, model_scope
from mlaas4hep.auth.principal import Principal
from mlaas4hep.auth.tokens import Authenticator
from mlaas4hep.config import Settings
from mlaas4hep.jobs.datasets import DatasetStore
from mlaas4hep.jobs.executor_local import LocalExecutor
from mlaas4hep.jobs.executors import make_executor
from mlaas4hep.jobs.service import JobService, SpecValidator, pipeline_validator
from mlaas4hep.jobs.store import JobStore

if TYPE_CHECKING:
    from mlaas4hep.serve.app import InferenceService

log = logging.getLogger(__name__)


class SupportsAuthenticate(Protocol):
    """What the app needs from an authenticator (tests may pass a simple one)."""

    def authenticate(
        self,
        authorization_header: str | None,
        peer: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> Principal: ...


def create_app(
    settings: Settings,
    *,
    authenticator: SupportsAuthenticate | None = None,
    spec_validator: SpecValidator = pipeline_validator,
    run_executor: bool = True,
    with_inference: bool = False,
    with_ui: bool = True,
    extra_routers: Iterable[APIRouter] = (),
) -> FastAPI:
    """Build the service.

    Args:
        settings: see :mod:`mlaas4hep.config`.
        authenticator: defaults to the one the ``auth`` settings describe (the local
            issuer on loopback when nothing else is configured).
        spec_validator: checks a submitted spec (default: the pipeline spec).
        run_executor: start the local executor with the app (when ``executor.workers``
            > 0); False for an API-only replica.
        with_inference: also serve the model inference routes (V2 and TFaaS) from
            ``settings.inference``, authenticated by the same authenticator.
        with_ui: also serve the web UI under ``/ui`` (settings ``ui:``, docs/ui.md).
        extra_routers: more routers mounted as they are.

    Raises:
        SpecError: invalid settings (database URL, auth, sandbox mode).
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = JobStore(settings.db_url)
    datasets = DatasetStore(store, settings)
    service = JobService(store, datasets, settings, spec_validator)
    executor = None
    if run_executor and settings.executor.workers > 0:
        executor = make_executor(store, settings)

    routers: list[APIRouter] = list(extra_routers)
    local_issuer = None
    if authenticator is None:
        setup = create_authenticator(
            settings.auth, data_dir=settings.data_dir, listen_host=settings.host
        )
        authenticator, local_issuer = setup.authenticator, setup.local_issuer
        if setup.local_issuer is not None:
            routers.append(local_issuer_router(setup.local_issuer))
    trusted_issuers = tuple(getattr(authenticator, "issuers", ()))
    # Signed-out UI sessions are refused on every route (API, UI, inference).
    revoked = RevokedSessions(revoked_sessions_path(settings))
    authenticator = RevokingAuthenticator(authenticator, revoked)
    # principal_dependency only calls .authenticate(); a test double fits the same slot.
    principal = principal_dependency(cast(Authenticator, authenticator))
    services: list[Service] = []
    inference = None
    if with_inference:
        inference = _inference(settings, authenticator)
        routers.append(inference.router)
        services.append(inference)

    app = FastAPI(
        title="mlaas4hep",
        version=__version__,
        summary="Machine Learning as a Service for HEP: submit pipelines, follow, download.",
        description=API_DESCRIPTION,
        lifespan=_lifespan(store, executor, services),
        # FastAPI's pages load Swagger UI and ReDoc from a CDN; ours are served offline.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    errors.install(app)
    install_docs(app)
    # Outermost check: a request naming a foreign host (DNS rebinding) reaches no route.
    app.add_middleware(HostGuard, allowed=AllowedHosts.build(settings.allowed_hosts, settings.host))
    app.include_router(health_router(store, executor))
    app.include_router(jobs_router(service, principal), prefix=API_PREFIX)
    app.include_router(datasets_router(datasets, principal), prefix=API_PREFIX)
    app.include_router(runs_router(service, principal), prefix=API_PREFIX)
    for router in routers:
        app.include_router(router)
    if with_ui:
        install_ui(
            app,
            raw_settings=settings.ui,
            authenticator=cast(Authenticator, authenticator),
            trusted_issuers=trusted_issuers,
            revoked=revoked,
            service=service,
            datasets=datasets,
            local_issuer=local_issuer,
            inference=inference,
        )
    _finish_openapi(app)
    app.state.settings, app.state.service, app.state.executor = settings, service, executor
    return app


def revoked_sessions_path(settings: Settings) -> Path:
    """Where signed-out session tokens are listed (beside the local issuer's key)."""
    return settings.data_dir / "auth" / "revoked-sessions"


class Service(Protocol):
    """Something started and stopped with the app (the inference service)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def _inference(settings: Settings, authenticator: SupportsAuthenticate) -> InferenceService:
    from mlaas4hep.apply.serving import load_raw_preprocessor
    from mlaas4hep.serve.app import create_inference_service
    from mlaas4hep.serve.settings import InferenceSettings

    def authenticate(header: str | None, peer: str | None) -> Principal:
        return authenticator.authenticate(header, peer)

    inference_settings = InferenceSettings.from_mapping(settings.inference, settings.data_dir)
    return create_inference_service(
        inference_settings,
        authenticate=authenticate,
        authorize=model_policy,
        raw_loader=load_raw_preprocessor,  # raw event columns: the bundle's preprocessing
    )


def model_policy(principal: Principal, action: str, model: str) -> bool:
    """Model actions by WLCG storage scopes: ``infer`` needs ``storage.read:/models/NAME``
    or the service scope ``mlaas.infer``; read/create/modify the matching storage scope;
    ``metrics`` (all models) the service scope ``mlaas.metrics`` or the admin group."""
    if action == "metrics":  # every model's name is in the labels: operators only
        return principal.is_admin or has_scope(principal, METRICS_SCOPE)
    if action == "infer":
        return has_scope(principal, INFERENCE_SCOPE) or has_scope(
            principal, model_scope("read", model)
        )
    return has_scope(principal, model_scope(action, model))


def _lifespan(
    store: JobStore, executor: LocalExecutor | None, services: list[Service]
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        for service in services:
            await service.start()
        if executor is not None:
            executor.start()  # logs the sandbox it probed (or why jobs cannot run)
        try:
            yield
        finally:
            if executor is not None:
                executor.stop()
            for service in reversed(services):
                await service.stop()
            store.close()

    return lifespan


API_DESCRIPTION = """\
Authenticate with **Authorize**: paste an access token (`mlaas4hep token --user NAME` with
the local issuer, `mlaas4hep login` with an external one); "Try it out" then sends it as
`Authorization: Bearer <token>`. Each route lists the scope it needs under 403 and the
errors it can answer, all as RFC 9457 `application/problem+json`. Besides those, any route
answers 421 to a request naming a foreign `Host`, 403 to a state-changing request from a
foreign `Origin`, and 500 (with a reference id the server log carries) for a bug.
See docs/service.md and docs/security.md.
"""


def _finish_openapi(app: FastAPI) -> None:
    # The routers' error responses point at #/components/schemas/Problem. FastAPI adds a
    # 422 "HTTPValidationError" to every route with parameters; this app never answers
    # that shape (errors.install: problem+json), and a route whose parameters can fail
    # validation documents its own 422, so the generic one is dropped from our routes.
    original = app.openapi

    def openapi() -> dict[str, object]:
        if app.openapi_schema is None:
            schema = original()
            paths = cast(dict[str, dict[str, dict[str, Any]]], schema.get("paths", {}))
            for path, operations in paths.items():
                if path.startswith(API_PREFIX) or path in ("/healthz", "/readyz"):
                    for operation in operations.values():
                        _drop_generic_422(operation.get("responses", {}))
            components = cast(dict[str, dict[str, object]], schema.setdefault("components", {}))
            schemas = components.setdefault("schemas", {})
            schemas["Problem"] = Problem.model_json_schema()
            if "#/components/schemas/HTTPValidationError" not in json.dumps(paths):
                schemas.pop("HTTPValidationError", None)
                schemas.pop("ValidationError", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _drop_generic_422(responses: dict[str, Any]) -> None:
    answer = responses.get("422", {})
    schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
    if schema.get("$ref") == "#/components/schemas/HTTPValidationError":
        del responses["422"]
