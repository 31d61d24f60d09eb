"""Model registry routes, beside the V2 repository extension (thin: serve/model_registry.py).

==========================================================  ==========================
``GET    /v2/repository/models/{name}/registry``             versions, aliases, policy
``PUT    /v2/repository/models/{name}/aliases/{alias}``      ``{"version": N}``: promote
``POST   /v2/repository/models/{name}/aliases/{alias}/rollback``  back to the previous
``DELETE /v2/repository/models/{name}/aliases/{alias}``      remove the alias
``PUT    /v2/repository/models/{name}/policy``               ``{"policy": "latest:2"}``
==========================================================  ==========================

Reading needs the model's ``read`` right, every change its ``modify`` right (403 with the
reason otherwise, before anything is looked up). Errors are ``{"error": ...}`` like every
inference route.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from mlaas4hep.auth.principal import Principal
from mlaas4hep.documents import load_json
from mlaas4hep.errors import DocumentError, SpecError
from mlaas4hep.serve import openapi
from mlaas4hep.serve.dataplane import DataPlane
from mlaas4hep.serve.errors import InvalidInput
from mlaas4hep.serve.http import ErrorRoute, PrincipalDependency, json_response, read_body
from mlaas4hep.serve.model_registry import ModelRegistry
from mlaas4hep.serve.registry import parse_version

_MAX_BODY = 4096
_PREFIX = "/v2/repository/models/{name}"


def add_registry_routes(
    router: APIRouter, plane: DataPlane, principal: PrincipalDependency
) -> None:
    """Add the registry routes around *plane* to *router*."""
    registry = ModelRegistry(plane)
    caller = Depends(principal)

    async def view(name: str, user: Principal = caller) -> Response:
        return json_response(await registry.view(user, name))

    async def promote(
        request: Request, name: str, alias: str, user: Principal = caller
    ) -> Response:
        sent = (await _body(request)).get("version")
        text = str(sent) if isinstance(sent, int) and not isinstance(sent, bool) else sent
        try:
            version = parse_version(text) if isinstance(text, str) else None
        except SpecError:
            version = None
        if version is None:
            msg = f'send {{"version": N}} with a positive version number, got {sent!r}'
            raise InvalidInput(msg)
        return json_response(await registry.promote(user, name, version, alias))

    async def rollback(name: str, alias: str, user: Principal = caller) -> Response:
        return json_response(await registry.rollback(user, name, alias))

    async def remove(name: str, alias: str, user: Principal = caller) -> Response:
        return json_response(await registry.remove_alias(user, name, alias))

    async def policy(request: Request, name: str, user: Principal = caller) -> Response:
        text = (await _body(request)).get("policy")
        if not isinstance(text, str):
            choices = "latest[:N], all, aliased, versions:1,3"
            msg = f'send {{"policy": "latest:2"}} ({choices}), not {text!r}'
            raise InvalidInput(msg)
        return json_response(await registry.set_policy(user, name, text))

    routes: list[tuple[str, str, Callable[..., Any], openapi.Doc]] = [
        ("GET", "/registry", view, _VIEW),
        ("PUT", "/aliases/{alias}", promote, _PROMOTE),
        ("POST", "/aliases/{alias}/rollback", rollback, _ROLLBACK),
        ("DELETE", "/aliases/{alias}", remove, _REMOVE),
        ("PUT", "/policy", policy, _POLICY),
    ]
    for method, path, endpoint, doc in routes:
        router.add_api_route(
            _PREFIX + path,
            endpoint,
            methods=[method],
            route_class_override=ErrorRoute,
            tags=["registry"],
            response_class=Response,
            **doc,
        )


async def _body(request: Request) -> dict[str, Any]:
    body = await read_body(request, _MAX_BODY)
    try:
        doc = load_json(body or b"{}", what="the body", limit=_MAX_BODY)
    except DocumentError as exc:
        raise InvalidInput(str(exc)) from exc
    if not isinstance(doc, dict):
        msg = f"the body must be a JSON object, got {type(doc).__name__}"
        raise InvalidInput(msg)
    return doc


_VIEW = openapi.simple(
    "A model's registry view",
    "Every published version (state, aliases, source job, publisher, creation time, spec "
    "hash, test metrics), the aliases with their history and the serving policy. Needs "
    "the 'read' right.",
    "{name, owner, policy, aliases, history, versions}",
    401,
    403,
    404,
)
_PROMOTE = openapi.simple(
    "Promote a version to an alias",
    "Point the alias at the version: the version is loaded first, then the alias switches "
    "(requests naming the alias never reach an unloaded version). Needs the 'modify' right.",
    "{name, alias, previous, version, aliases}",
    400,
    401,
    403,
    404,
)
_ROLLBACK = openapi.simple(
    "Roll an alias back",
    "Point the alias at the version it pointed to before its last promotion.",
    "{name, alias, previous, version, aliases}",
    400,
    401,
    403,
    404,
)
_REMOVE = openapi.simple(
    "Remove an alias",
    "The version stays published; the serving policy decides whether it stays loaded.",
    "{name, alias, previous, version: null, aliases}",
    401,
    403,
    404,
)
_POLICY = openapi.simple(
    "Set the serving policy",
    "Which versions are loaded: latest, latest:N, all, aliased, versions:1,3 (aliased "
    "versions always are). Applied at once.",
    "{name, policy, loaded}",
    400,
    401,
    403,
    404,
)
