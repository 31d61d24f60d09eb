"""Open Inference Protocol V2 routes (REST), with the binary and repository extensions.

Thin: each route validates HTTP details, calls one ``DataPlane`` method and maps the
result. Health endpoints are unauthenticated (orchestrators probe them without tokens
and they reveal nothing); every other route depends on the authenticated principal.
``GET /v2/models/NAME[/versions/VERSION]/bundle`` (not part of the protocol) streams a
published version's bundle files as ``NAME-VERSION.tar.gz`` (read rights, like the
metadata; ``latest`` or no version: the newest in service), for ``mlaas4hep apply NAME``.
The model configuration and statistics extensions answer ``…/config`` and ``…/stats``.
A version segment may be an alias (``/v2/models/NAME/versions/production``), and so may
the model name (``NAME@production``): serve/registry.py.
Inference bodies may be gzip/deflate compressed (capped on their decompressed size) and
large answers are compressed on ``Accept-Encoding`` (serve/compression.py). The OpenAPI
description of each route is in serve/openapi.py (documentation only: no per-request
validation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse

from mlaas4hep.auth.principal import Principal
from mlaas4hep.serve import openapi
from mlaas4hep.serve.bundle_export import MODEL_VERSION_HEADER
from mlaas4hep.serve.dataplane import DataPlane
from mlaas4hep.serve.errors import InvalidInput
from mlaas4hep.serve.http import (
    ErrorRoute,
    PrincipalDependency,
    direct_route,
    encoded,
    json_response,
    read_body,
)
from mlaas4hep.serve.registry_routes import add_registry_routes

HEADER_LENGTH = "Inference-Header-Content-Length"


def add_v2_routes(
    router: APIRouter,
    plane: DataPlane,
    principal: PrincipalDependency,
    max_body: int,
    compress_min: int = 1024,
) -> None:
    """Add the ``/v2`` routes around *plane* to *router* (the inference routes first).

    *max_body* caps an inference body (decompressed size included); responses of at
    least *compress_min* bytes are compressed when the client's Accept-Encoding asks.
    """
    # The one auth dependency (a variable, not an Annotated alias: with postponed
    # annotations FastAPI resolves names in module globals, not in this closure).
    caller = Depends(principal)

    async def live() -> Response:
        return json_response({"live": plane.live()})

    async def ready() -> Response:
        is_ready = plane.ready()
        return json_response({"ready": is_ready}, 200 if is_ready else 503)

    async def server_metadata(user: Principal = caller) -> Response:
        return json_response(plane.server_metadata())

    async def model_metadata(
        name: str, version: str | None = None, user: Principal = caller
    ) -> Response:
        return json_response(plane.model_metadata(user, name, version))

    async def model_ready(
        name: str, version: str | None = None, user: Principal = caller
    ) -> Response:
        return json_response(plane.model_ready(user, name, version))

    async def infer(
        request: Request, name: str, version: str | None = None, user: Principal = caller
    ) -> Response:  # the declared signature, for the OpenAPI description only
        return await infer_direct(request)

    async def infer_direct(request: Request) -> Response:
        # The hot path, without FastAPI's parameter solving (http.direct_route): the same
        # parameters (``version`` from the path, or the query on the unversioned route),
        # authenticated first, as the dependency would be.
        params = request.path_params
        version = params.get("version")
        if version is None and request.scope.get("query_string"):
            version = request.query_params.get("version")
        user = await principal(request)
        body = await read_body(request, max_body)
        content, header_length = await plane.infer(
            user, params["name"], version, body, _header_length(request)
        )
        if header_length is None:
            headers, media = {}, "application/json"
        else:  # the JSON length in the uncompressed body, as tritonclient reads it
            headers, media = {HEADER_LENGTH: str(header_length)}, "application/octet-stream"
        content = await encoded(request, content, headers, compress_min)
        return Response(content, media_type=media, headers=headers)

    async def model_config(
        name: str, version: str | None = None, user: Principal = caller
    ) -> Response:
        return json_response(plane.model_config(user, name, version))

    async def statistics(
        name: str, version: str | None = None, user: Principal = caller
    ) -> Response:
        return json_response(plane.model_statistics(user, name, version))

    async def all_statistics(user: Principal = caller) -> Response:
        return json_response(plane.model_statistics(user, None, None))

    async def bundle(name: str, version: str | None = None, user: Principal = caller) -> Response:
        archive = plane.bundle(user, name, version)
        disposition = f'attachment; filename="{archive.filename}"'
        headers = {"Content-Disposition": disposition, MODEL_VERSION_HEADER: str(archive.version)}
        # A sync iterator: Starlette reads the files in a worker thread, off the loop.
        return StreamingResponse(archive, media_type="application/gzip", headers=headers)

    async def repository_index(user: Principal = caller) -> Response:
        return json_response(await plane.repository_index(user))

    async def load(name: str, user: Principal = caller) -> Response:
        await plane.load(user, name)
        return json_response({})

    async def unload(name: str, user: Principal = caller) -> Response:
        await plane.unload(user, name)
        return json_response({})

    routes: list[tuple[str, str, Callable[..., Any], openapi.Doc]] = [
        ("POST", "/models/{name}/infer", infer, openapi.INFER),
        ("POST", "/models/{name}/versions/{version}/infer", infer, openapi.INFER),
        ("GET", "/health/live", live, openapi.LIVE),
        ("GET", "/health/ready", ready, openapi.READY),
        ("GET", "", server_metadata, openapi.SERVER_METADATA),
        # before /models/{name}: "stats" is this route, not a model's metadata
        ("GET", "/models/stats", all_statistics, openapi.STATISTICS),
        ("GET", "/models/{name}", model_metadata, openapi.MODEL_METADATA),
        ("GET", "/models/{name}/versions/{version}", model_metadata, openapi.MODEL_METADATA),
        ("GET", "/models/{name}/ready", model_ready, openapi.MODEL_READY),
        ("GET", "/models/{name}/versions/{version}/ready", model_ready, openapi.MODEL_READY),
        ("GET", "/models/{name}/config", model_config, openapi.MODEL_CONFIG),
        ("GET", "/models/{name}/versions/{version}/config", model_config, openapi.MODEL_CONFIG),
        ("GET", "/models/{name}/stats", statistics, openapi.STATISTICS),
        ("GET", "/models/{name}/versions/{version}/stats", statistics, openapi.STATISTICS),
        ("GET", "/models/{name}/bundle", bundle, openapi.BUNDLE),
        ("GET", "/models/{name}/versions/{version}/bundle", bundle, openapi.BUNDLE),
        ("POST", "/repository/index", repository_index, openapi.REPOSITORY_INDEX),
        ("POST", "/repository/models/{name}/load", load, openapi.LOAD),
        ("POST", "/repository/models/{name}/unload", unload, openapi.UNLOAD),
    ]
    direct = direct_route(infer_direct)
    for method, path, endpoint, doc in routes:
        router.add_api_route(
            "/v2" + path,
            endpoint,
            methods=[method],
            route_class_override=direct if endpoint is infer else ErrorRoute,
            tags=["v2"],
            response_class=Response,
            **doc,
        )
    # Aliases and serving policy, beside the repository extension (serve/registry_routes.py).
    add_registry_routes(router, plane, principal)


def _header_length(request: Request) -> int | None:
    value = request.headers.get(HEADER_LENGTH)
    if value is None:
        return None
    if not value.isdigit():
        msg = f"{HEADER_LENGTH} must be a byte count, got {value!r}"
        raise InvalidInput(msg)
    return int(value)
