"""Rendering: the Jinja2 environment (autoescaped), the page context, and ``UiRoute``.

``UiRoute`` is the route class of every UI route: errors raised by a route or by its
dependencies become pages (or ``{"error": ...}`` for the page scripts' ``fetch`` calls)
instead of problem+json, and a request without a valid session goes to the login page.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import jinja2
from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute

from mlaas4hep.api.errors import status_of
from mlaas4hep.api.ui import views
from mlaas4hep.api.ui.session import csrf_token, ensure_csrf_cookie, login_url
from mlaas4hep.auth.principal import Principal
from mlaas4hep.errors import Mlaas4hepError

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
NAV = (
    ("jobs", "Jobs", "/ui/jobs"),
    ("runs", "Runs", "/ui/runs"),
    ("submit", "Submit", "/ui/submit"),
    ("models", "Models", "/ui/models"),
    ("datasets", "Datasets", "/ui/datasets"),
)

#: Pages load only their own CSS, script and images; no framing; no code in a Referer.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate CSP 2
}


def environment() -> jinja2.Environment:
    """The template environment: autoescape on for everything, undefined names fail."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        duration=views.duration, size=views.size, number=views.number, yaml=views.highlight_yaml
    )
    return env


class Pages:
    """Renders templates with what every page needs (user, navigation, CSRF token)."""

    def __init__(self, env: jinja2.Environment) -> None:
        self.env = env

    def render(
        self,
        request: Request,
        template: str,
        *,
        caller: Principal | None = None,
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        page = self.env.get_template(template).render(
            request=request,
            user=None if caller is None else (caller.name or caller.subject),
            nav=NAV,
            csrf=csrf_token(request),
            **context,
        )
        response = HTMLResponse(page, status_code=status, headers=PAGE_HEADERS)
        ensure_csrf_cookie(response, request)
        return response

    def error(self, request: Request, status: int, detail: str) -> Response:
        """An error as a page, or as JSON for the pages' scripts."""
        if wants_json(request):
            return JSONResponse({"error": detail}, status_code=status)
        return self.render(request, "error.html", status=status, detail=detail, code=status)


def wants_json(request: Request) -> bool:
    """Whether the request comes from a page script (``fetch`` asks for JSON)."""
    return "application/json" in request.headers.get("accept", "")


def route_class(pages: Pages) -> type[APIRoute]:
    """An ``APIRoute`` subclass mapping errors to pages (see the module docstring)."""

    class UiRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def handle(request: Request) -> Response:
                try:
                    return await handler(request)
                except HTTPException as exc:
                    if exc.status_code == 401 and not wants_json(request):
                        # Back to the page after signing in (a form's action is no page).
                        target = request.url.path if request.method == "GET" else ""
                        if target and request.url.query:
                            target += "?" + request.url.query
                        return RedirectResponse(login_url(target), status_code=303)
                    detail = exc.detail if isinstance(exc.detail, str) else "request refused"
                    response = pages.error(request, exc.status_code, detail)
                    response.headers.update(exc.headers or {})  # 401: WWW-Authenticate
                    return response
                except RequestValidationError as exc:
                    # Name the fields only: their values may be secrets (a pasted token).
                    return pages.error(request, 422, _invalid_fields(exc))
                except Mlaas4hepError as exc:
                    return pages.error(request, status_of(exc)[0], str(exc))
                except Exception:
                    ref = uuid.uuid4().hex[:12]
                    log.exception("unhandled error %s on UI %s", ref, request.url.path)
                    detail = f"internal error (reference {ref}); the server log has the details"
                    return pages.error(request, 500, detail)

            return handle

    return UiRoute


def _invalid_fields(exc: RequestValidationError) -> str:
    names = sorted({str(e.get("loc", ("?",))[-1]) for e in exc.errors()})
    return (
        f"the form's {', '.join(names)} field is missing or too long; reload the page and try again"
    )
