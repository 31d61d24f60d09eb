"""Open Inference Protocol V2 routes (REST), with the binary and repository extensions.

Thin: each route validates HTTP details, calls one ``DataPlane`` method and maps the
result. Health endpoints are unauthenticated (orchestrators probe them without tokens
and they reveal nothing); every other route depends on the authenticated principal.
``GET /v2/models/NAME[/versions/VERSION]/bundle`` (not part of the protocol) streams a
published version's bundle files as ``NAME-VERSION.tar.gz`` (read rights, like the
metadata; ``latest`` or no version: the newest in service), for ``mlaas4hep apply NAME``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse

from mlaas4hep.auth.principal import Principal
from mlaas4hep.serve.bundle_export import MODEL_VERSION_HEADER
from mlaas4hep.serve.dataplane import DataPlane
from mlaas4hep.serve.errors import InvalidInput
from mlaas4hep.serve.http import ErrorRoute, PrincipalDependency, json_response, read_body

HEADER_LENGTH = "Inference-Header-Content-Length"


def add_v2_routes(
    router: APIRouter, plane: DataPlane, principal: PrincipalDependency, max_body: int
) -> None:
    """Add the ``/v2`` routes around *plane* to *router* (the inference routes first)."""
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
    ) -> Response:
        body = await read_body(request, max_body)
        content, header_length = await plane.infer(
            user, name, version, body, _header_length(request)
        )
        if header_length is None:
            return Response(content, media_type="application/json")
        return Response(
            content,
            media_type="application/octet-stream",
            headers={HEADER_LENGTH: str(header_length)},
        )

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

    routes: list[tuple[str, str, Callable[..., Any]]] = [
        ("POST", "/models/{name}/infer", infer),
        ("POST", "/models/{name}/versions/{version}/infer", infer),
        ("GET", "/health/live", live),
        ("GET", "/health/ready", ready),
        ("GET", "", server_metadata),
        ("GET", "/models/{name}", model_metadata),
        ("GET", "/models/{name}/versions/{version}", model_metadata),
        ("GET", "/models/{name}/ready", model_ready),
        ("GET", "/models/{name}/versions/{version}/ready", model_ready),
        ("GET", "/models/{name}/bundle", bundle),
        ("GET", "/models/{name}/versions/{version}/bundle", bundle),
        ("POST", "/repository/index", repository_index),
        ("POST", "/repository/models/{name}/load", load),
        ("POST", "/repository/models/{name}/unload", unload),
    ]
    for method, path, endpoint in routes:
        router.add_api_route(
            "/v2" + path,
            endpoint,
            methods=[method],
            route_class_override=ErrorRoute,
            tags=["v2"],
            response_class=Response,
        )


def _header_length(request: Request) -> int | None:
    value = request.headers.get(HEADER_LENGTH)
    if value is None:
        return None
    if not value.isdigit():
        msg = f"{HEADER_LENGTH} must be a byte count, got {value!r}"
        raise InvalidInput(msg)
    return int(value)
