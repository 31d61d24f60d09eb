"""Sign-in and sign-out of the web UI.

* Local mode (the embedded issuer, loopback only): the login page has one explicit button
  that mints a token for the local single user from the local issuer and stores it in the
  session cookie. Nothing is issued without that POST (CSRF-checked).
* External issuer: authorization code + PKCE (:mod:`mlaas4hep.api.ui.oidc`); the access
  token the issuer returns is validated by the service's authenticator before it becomes
  the session.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from mlaas4hep.api.ui.oidc import LoginFlow, OidcClient
from mlaas4hep.api.ui.pages import Pages
from mlaas4hep.api.ui.peer import peer_uid
from mlaas4hep.api.ui.revocations import RevokedSessions
from mlaas4hep.api.ui.session import (
    FLOW_COOKIE,
    SESSION_COOKIE,
    UI_PREFIX,
    check_csrf,
    clear_session,
    is_https,
    safe_next,
    set_session,
)
from mlaas4hep.api.ui.settings import UiSettings
from mlaas4hep.auth.local_issuer import LocalIssuer
from mlaas4hep.auth.principal import Principal
from mlaas4hep.errors import AuthError, PermissionDenied

#: What the local single user may do: the CLI's ``mlaas4hep token`` default set.
LOCAL_SCOPES = (
    "compute.create",
    "compute.read",
    "compute.cancel",
    "compute.modify",
    "storage.read:/",
    "storage.create:/models",
    "storage.modify:/models",
)
_FLOW_MAX_AGE_S = 600


@dataclass(frozen=True)
class SignIn:
    """How this service signs browsers in."""

    settings: UiSettings
    local: LocalIssuer | None
    oidc: OidcClient | None
    validate: Callable[[str], Principal]  # the service's token validation
    revoked: RevokedSessions  # sign-out lists the session's token here

    @property
    def local_user(self) -> str:
        return self.settings.local_user or getpass.getuser()


def _same_account(request: Request) -> bool:
    """The client socket belongs to the service's own uid (see :mod:`.peer`)."""
    client, server = request.client, request.scope.get("server")
    if client is None or not server:
        return False
    try:
        uid = peer_uid((client.host, client.port), (str(server[0]), int(server[1])))
    except ValueError:
        # Not an IP address: an in-process ASGI transport (tests), no socket, no peer.
        return True
    return uid is not None and uid == os.geteuid()


def auth_router(pages: Pages, sign_in: SignIn, route_class: type[APIRoute]) -> APIRouter:
    """``/ui/login``, ``/ui/login/local``, ``/ui/login/oidc``, ``/ui/login/callback``,
    ``/ui/logout``."""
    router = APIRouter(prefix=UI_PREFIX, route_class=route_class, include_in_schema=False)

    @router.get("/login", response_class=HTMLResponse)
    def login_page(
        request: Request, next: Annotated[str | None, Query(max_length=2000)] = None
    ) -> Response:
        return pages.render(
            request,
            "login.html",
            next=safe_next(next),
            local_user=sign_in.local_user if sign_in.local else None,
            issuer=sign_in.oidc.settings.issuer if sign_in.oidc else None,
            lifetime=sign_in.settings.session_lifetime_s,
        )

    @router.post("/login/local")
    def login_local(
        request: Request,
        csrf_token: Annotated[str, Form(max_length=200)] = "",
        next: Annotated[str, Form(max_length=2000)] = "",
    ) -> Response:
        check_csrf(request, csrf_token)
        if sign_in.local is None:
            raise AuthError("local sign-in is off: this service uses an external issuer")
        if not _same_account(request):
            msg = (
                "local sign-in is only for the account running the service (its browser on "
                "this host); other accounts and sandboxed jobs sign in with a token: "
                "mlaas4hep token --user NAME"
            )
            raise PermissionDenied(msg)
        lifetime = sign_in.settings.session_lifetime_s
        token = sign_in.local.mint(sign_in.local_user, LOCAL_SCOPES, lifetime_s=lifetime)
        response = RedirectResponse(safe_next(next), status_code=303)
        set_session(response, request, token, lifetime)
        return response

    @router.get("/login/oidc")
    async def login_oidc(
        request: Request, next: Annotated[str | None, Query(max_length=2000)] = None
    ) -> Response:
        if sign_in.oidc is None:
            raise AuthError("no external issuer is configured for the UI (ui.oidc)")
        url, flow = await run_in_threadpool(
            sign_in.oidc.start, _redirect_uri(request, sign_in), safe_next(next)
        )
        response = RedirectResponse(url, status_code=302)
        # Lax, not Strict: the issuer's redirect back is a cross-site navigation.
        response.set_cookie(
            FLOW_COOKIE,
            flow.to_cookie(),
            max_age=_FLOW_MAX_AGE_S,
            path=f"{UI_PREFIX}/login",
            httponly=True,
            secure=is_https(request),
            samesite="lax",
        )
        return response

    @router.get("/login/callback", response_class=HTMLResponse)
    async def login_callback(
        request: Request,
        code: Annotated[str | None, Query(max_length=4096)] = None,
        state: Annotated[str | None, Query(max_length=512)] = None,
        error: Annotated[str | None, Query(max_length=200)] = None,
    ) -> Response:
        flow = LoginFlow.from_cookie(request.cookies.get(FLOW_COOKIE))
        if sign_in.oidc is None or flow is None:
            raise AuthError("no sign-in was started from this browser; start again")
        if error or not code or not state:
            msg = f"the token issuer did not sign you in ({error or 'no code'})"
            raise AuthError(msg)
        token = await run_in_threadpool(
            sign_in.oidc.exchange, code, flow, state, _redirect_uri(request, sign_in)
        )
        principal = await run_in_threadpool(sign_in.validate, token)
        # A page, not a redirect: a SameSite=Strict cookie set during a cross-site
        # redirect chain is not sent with the chain's next request.
        response = pages.render(
            request, "signed_in.html", caller=principal, next=safe_next(flow.next_path)
        )
        set_session(response, request, token, sign_in.settings.session_lifetime_s)
        response.delete_cookie(FLOW_COOKIE, path=f"{UI_PREFIX}/login")
        return response

    @router.post("/logout")
    def logout(request: Request, csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
        check_csrf(request, csrf_token)
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            # Server side too: the token stays refused until it expires, wherever it is.
            try:
                sign_in.validate(token)  # only a valid token is listed (no junk growth)
            except AuthError:
                pass  # already invalid: nothing to revoke
            else:
                sign_in.revoked.revoke(token)
        response = RedirectResponse(f"{UI_PREFIX}/login", status_code=303)
        clear_session(response, request)
        return response

    return router


def _redirect_uri(request: Request, sign_in: SignIn) -> str:
    assert sign_in.oidc is not None
    configured = sign_in.oidc.settings.redirect_uri
    return configured or str(request.url_for("login_callback"))
