"""UI forms of the model registry: promote a version to an alias, roll an alias back, set
the serving policy (:mod:`mlaas4hep.serve.model_registry`, the same calls as the API).

Promote and roll back ask first: the first POST renders the model page with a dialog
saying which version the alias serves now and which it will serve; its "Confirm" button
posts again with ``confirm=yes``, which changes the alias (the version is loaded before
the alias switches) and redirects to the model page. The modify right is checked before
the dialog is shown.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData

from mlaas4hep.api.ui.context import UiContext
from mlaas4hep.api.ui.model_page import registry_of, render_model
from mlaas4hep.api.ui.session import UI_PREFIX, check_csrf
from mlaas4hep.auth.principal import Principal
from mlaas4hep.errors import Mlaas4hepError, PermissionDenied, SpecError
from mlaas4hep.serve.registry import check_alias, parse_version


def add_registry_ui_routes(router: APIRouter, ctx: UiContext, caller_of: Any) -> None:
    """Add ``/ui/models/{name}/promote``, ``…/rollback`` and ``…/policy`` to *router*."""

    @router.post("/models/{name}/promote")
    async def promote(request: Request, name: str, caller: Principal = caller_of) -> Response:
        form = await _form(request)
        alias, version = _text(form, "alias").strip(), _text(form, "version").strip()
        return await _change(ctx, request, caller, name, form, "promote", alias, version)

    @router.post("/models/{name}/rollback")
    async def rollback(request: Request, name: str, caller: Principal = caller_of) -> Response:
        form = await _form(request)
        alias = _text(form, "alias").strip()
        return await _change(ctx, request, caller, name, form, "rollback", alias, "")

    @router.post("/models/{name}/policy")
    async def policy(request: Request, name: str, caller: Principal = caller_of) -> Response:
        form = await _form(request)
        registry = registry_of(ctx)
        try:
            await registry.set_policy(caller, name, _text(form, "policy"))
        except Mlaas4hepError as exc:
            if isinstance(exc, PermissionDenied):
                raise
            return await render_model(ctx, request, caller, name, error=str(exc), status=422)
        return _back(name, "policy")


async def _change(
    ctx: UiContext,
    request: Request,
    caller: Principal,
    name: str,
    form: FormData,
    action: str,
    alias: str,
    version: str,
) -> Response:
    registry = registry_of(ctx)
    assert ctx.inference is not None  # registry_of checked it
    ctx.inference.plane.check(caller, "modify", name)  # before any dialog
    try:
        check_alias(alias)
        view = await registry.view(caller, name)
        current = view["aliases"].get(alias)
        target = _target(view, action, alias, version)
        if form.get("confirm") != "yes" and current != target:
            ask = {"action": action, "alias": alias, "version": target, "current": current}
            return await render_model(ctx, request, caller, name, confirm=ask)
        if action == "promote":
            await registry.promote(caller, name, target, alias)
        else:
            await registry.rollback(caller, name, alias)
    except Mlaas4hepError as exc:
        if isinstance(exc, PermissionDenied):
            raise
        return await render_model(ctx, request, caller, name, error=str(exc), status=422)
    return _back(name, alias)


def _target(view: dict[str, Any], action: str, alias: str, version: str) -> int:
    if action == "rollback":
        history = view["history"].get(alias) or []
        if alias not in view["aliases"] or not history:
            msg = (
                f"alias {alias!r} of model {view['name']!r} has no earlier version to roll back to"
            )
            raise SpecError(msg)
        return int(history[-1])
    try:
        return parse_version(version)
    except SpecError as exc:
        msg = f"choose the version to promote (a positive number): {exc}"
        raise SpecError(msg) from None


async def _form(request: Request) -> FormData:
    form = await request.form(max_files=0, max_fields=8)
    check_csrf(request, _text(form, "csrf_token"))
    return form


def _text(form: FormData, key: str) -> str:
    value = form.get(key)
    return value if isinstance(value, str) else ""


def _back(name: str, changed: str) -> Response:
    url = f"{UI_PREFIX}/models/{quote(name)}?changed={quote(changed)}#registry-h"
    return RedirectResponse(url, status_code=303)
