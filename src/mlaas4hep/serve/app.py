"""The inference service factory: everything built once, passed down, nothing global.

``create_inference_service(settings, authenticate=..., authorize=...)`` builds the
repository, manager, data plane, metrics and routes; the job API app includes
``service.router``, whose lifespan loads the repository and starts polling.
``create_inference_app`` wraps the same service in a stand-alone FastAPI app
(``mlaas4hep serve --only inference``, the tests and the benchmark use it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, FastAPI, Response

from mlaas4hep.auth.policy import METRICS_SCOPE
from mlaas4hep.auth.principal import Principal
from mlaas4hep.errors import PermissionDenied
from mlaas4hep.serve.archive import ArchiveLimits
from mlaas4hep.serve.dataplane import Authorize, DataPlane, allow_all
from mlaas4hep.serve.deploy import Deployer
from mlaas4hep.serve.http import (
    AuthCache,
    Authenticate,
    ErrorRoute,
    PrincipalDependency,
    principal_dependency,
)
from mlaas4hep.serve.manager import ModelManager
from mlaas4hep.serve.metrics import InferenceMetrics
from mlaas4hep.serve.raw import RawLoader
from mlaas4hep.serve.repository import ModelRepository, VersionPolicy
from mlaas4hep.serve.settings import InferenceSettings
from mlaas4hep.serve.tfaas import add_tfaas_routes
from mlaas4hep.serve.v2 import add_v2_routes

if TYPE_CHECKING:
    from mlaas4hep.serve.grpc_v2 import GrpcServer


@dataclass
class InferenceService:
    """The running parts of the inference service and its lifecycle."""

    settings: InferenceSettings
    plane: DataPlane
    deployer: Deployer
    router: APIRouter
    executor: ThreadPoolExecutor
    authenticate: Authenticate
    _poller: asyncio.Task[None] | None = field(default=None, repr=False)
    grpc: GrpcServer | None = field(default=None, repr=False)
    _users: int = field(default=0, repr=False)

    async def start(self) -> None:
        """Load the repository (ready afterwards), start polling it and, when a port is
        set, the V2 gRPC server. Counted: an app that starts it through its own lifespan
        and through the included router's starts it once (the last ``stop`` stops it)."""
        self._users += 1
        if self._users > 1:
            return
        await self.plane.manager.sync()
        if self.settings.poll_interval_s > 0:
            poll = self.plane.manager.poll_forever(self.settings.poll_interval_s)
            self._poller = asyncio.get_running_loop().create_task(poll)
        if self.settings.grpc_port is not None:
            from mlaas4hep.serve.grpc_v2 import GrpcServer  # grpcio only when asked for

            self.grpc = GrpcServer(self.plane, self.authenticate, self.settings)
            await self.grpc.start()

    async def stop(self) -> None:
        """Stop the gRPC server and polling, and release the inference threads."""
        self._users -= 1
        if self._users > 0:
            return
        if self.grpc is not None:
            await self.grpc.stop()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        self.executor.shutdown(wait=False, cancel_futures=True)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """``start`` … ``stop`` as a lifespan (the router carries it into any app)."""
        await self.start()
        try:
            yield
        finally:
            await self.stop()


def create_inference_service(
    settings: InferenceSettings,
    *,
    authenticate: Authenticate,
    authorize: Authorize = allow_all,
    raw_loader: RawLoader | None = None,
) -> InferenceService:
    """Build the service. *authenticate* ``(authorization_header, peer) -> Principal``
    raises AuthError (401) / PermissionDenied (403); *authorize* ``(principal, action,
    model) -> bool`` decides per model (actions: infer, read, create, modify);
    *raw_loader* lets bundles with preprocessing take raw event columns (serve/raw.py).
    """
    metrics = InferenceMetrics()
    policy = VersionPolicy(latest=settings.default_latest_versions)
    repository = ModelRepository(settings.repository, policy, settings.batching)
    # Batches of one model version run one at a time (ORT parallelises inside a batch);
    # a second thread lets another model, or a version being retired, proceed meanwhile.
    executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="inference")
    manager = ModelManager(
        repository,
        executor,
        metrics,
        settings.threads,
        settings.inline_budget_us * 1e-6,
        raw_loader=raw_loader,
    )
    plane = DataPlane(manager, metrics, authorize, settings.server_name)
    limits = ArchiveLimits(
        max_members=settings.max_archive_members,
        max_member_bytes=settings.max_archive_member_bytes,
        max_total_bytes=settings.max_upload_bytes * 4,
    )
    deployer = Deployer(plane, limits, threads=1)
    if settings.auth_cache_s > 0:
        authenticate = AuthCache(authenticate, settings.auth_cache_s)
    principal = principal_dependency(authenticate)
    service = InferenceService(settings, plane, deployer, APIRouter(), executor, authenticate)
    # One flat router, hottest routes first: nested routers cost a recursive match per
    # request in FastAPI, a measurable share of a single-row request. Its lifespan starts
    # and stops the service in whatever app includes it.
    router = service.router = APIRouter(lifespan=service.lifespan)
    body_limits = (settings.max_request_bytes, settings.max_upload_bytes)
    compress_min = settings.response_compression_min_bytes
    add_tfaas_routes(router, plane, deployer, principal, body_limits, compress_min)
    add_v2_routes(router, plane, principal, settings.max_request_bytes, compress_min)
    _add_metrics_route(router, metrics, principal, authorize, settings.metrics_require_auth)
    return service


def create_inference_app(
    settings: InferenceSettings,
    *,
    authenticate: Authenticate,
    authorize: Authorize = allow_all,
    raw_loader: RawLoader | None = None,
) -> FastAPI:
    """A stand-alone FastAPI app serving only the inference routes."""
    service = create_inference_service(
        settings, authenticate=authenticate, authorize=authorize, raw_loader=raw_loader
    )
    app = FastAPI(
        title="mlaas4hep inference", lifespan=service.lifespan, docs_url=None, redoc_url=None
    )
    # The routes go straight onto the app's router: no include level to match through.
    app.router.routes.extend(service.router.routes)
    app.state.inference = service
    return app


def _add_metrics_route(
    router: APIRouter,
    metrics: InferenceMetrics,
    principal: PrincipalDependency,
    authorize: Authorize,
    require_auth: bool,
) -> None:
    async def anonymous() -> None:
        return None

    caller = Depends(principal if require_auth else anonymous)

    async def render(user: Principal | None = caller) -> Response:
        if user is not None and not authorize(user, "metrics", ""):
            who = user.name or user.subject
            msg = f"{who!r} may not read the metrics: missing scope {METRICS_SCOPE!r}"
            raise PermissionDenied(msg)
        return Response(metrics.render(), media_type=metrics.content_type)

    router.add_api_route(
        "/metrics", render, methods=["GET"], route_class_override=ErrorRoute, tags=["metrics"]
    )
