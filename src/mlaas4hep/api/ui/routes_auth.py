"""Sign-in and sign-out of the web UI.

* Local mode (the embedded issuer, loopback only): the login page asks for a user name,
  suggesting the one the CLI's saved token names (:mod:`mlaas4hep.api.ui.identity`), and
  its explicit POST (CSRF-checked, only from the service's own account on loopback) mints
  a token for that name from the local issuer and stores it in the session cookie.
* Any mode: an access token pasted into the login page (the one ``mlaas4hep token --save``
  or ``mlaas4hep login`` stored) is validated exactly like an API bearer token and becomes
  the session; it is never logged or shown again.
* External issuer: authorization code + PKCE (:mod:`mlaas4hep.api.ui.oidc`); the access
  token the issuer returns is validated by the service's authenticator before it becomes
  the session.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from mlaas4hep.api.ui.identity import check_user_name, default_user, same_account
from mlaas4hep.api.ui.oidc import LoginFlow, OidcClient
from mlaas4hep.api.ui.pages import Pages
from mlaas4hep.api.ui.revocations import RevokedSessions, token_key
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
from mlaas4hep.errors import AuthError, InvalidInput, PermissionDenied

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
#: A pasted token longer than this is refused before it is parsed (the authenticator's
#: own limit, ``auth.max_token_bytes``, is lower by default).
_MAX_PASTED_TOKEN = 64 * 1024
#: Where the CLI keeps its token, as told to a browser that is not the service's account
#: (the service's own path, its home directory included, is shown to that account only).
_TOKEN_FILE_HINT = "~/.config/mlaas4hep/token"  # noqa: S105 - a path, not a secret


@dataclass(frozen=True)
class SignIn:
    """How this service signs browsers in."""

    settings: UiSettings
    local: LocalIssuer | None
    oidc: OidcClient | None
    validate: Callable[[str], Principal]  # the service's token validation
    revoked: RevokedSessions  # sign-out lists the session's token here
    token_file: Path  # where the CLI saves its token (``mlaas4hep token --save``)

    def local_user(self) -> str:
        """The name the local sign-in suggests (see :func:`.identity.default_user`)."""
        assert self.local is not None
        return default_user(self.settings.local_user, self.local, self.token_file)


def auth_router(pages: Pages, sign_in: SignIn, route_class: type[APIRoute]) -> APIRouter:
    """``/ui/login``, ``/ui/login/local``, ``/ui/login/token``, ``/ui/login/oidc``,
    ``/ui/login/callback``, ``/ui/logout``."""
    router = APIRouter(prefix=UI_PREFIX, route_class=route_class, include_in_schema=False)

    def login_page(
        request: Request, next_path: str, *, error: str | None = None, status: int = 200
    ) -> HTMLResponse:
        # The name form only for the account that may use it; anyone else is offered the
        # token form (and does not learn the suggested name).
        local_here = sign_in.local is not None and same_account(request)
        return pages.render(
            request,
            "login.html",
            status=status,
            next=safe_next(next_path),
            local_user=sign_in.local_user() if local_here else None,
            local_elsewhere=sign_in.local is not None and not local_here,
            token_file=str(sign_in.token_file) if local_here else _TOKEN_FILE_HINT,
            issuer=sign_in.oidc.settings.issuer if sign_in.oidc else None,
            lifetime=sign_in.settings.session_lifetime_s,
            error=error,
        )

    @router.get("/login", response_class=HTMLResponse)
    def login(
        request: Request, next: Annotated[str | None, Query(max_length=2000)] = None
    ) -> Response:
        return login_page(request, next or "")

    @router.post("/login/local")
    def login_local(
        request: Request,
        csrf_token: Annotated[str, Form(max_length=200)] = "",
        next: Annotated[str, Form(max_length=2000)] = "",
        user: Annotated[str, Form()] = "",
    ) -> Response:
        check_csrf(request, csrf_token)
        if sign_in.local is None:
            raise AuthError("local sign-in is off: this service uses an external issuer")
        if not same_account(request):
            msg = (
                "local sign-in is only for the account running the service (its browser on "
                "this host); other accounts and sandboxed jobs sign in with a token "
                "(paste it on the sign-in page): mlaas4hep token --user NAME"
            )
            raise PermissionDenied(msg)
        try:
            name = check_user_name(user.strip() or sign_in.local_user())
        except InvalidInput as exc:
            return login_page(request, next, error=str(exc), status=422)
        lifetime = sign_in.settings.session_lifetime_s
        token = sign_in.local.mint(name, LOCAL_SCOPES, lifetime_s=lifetime)
        response = RedirectResponse(safe_next(next), status_code=303)
        set_session(response, request, token, lifetime)
        return response

    @router.post("/login/token")
    def login_token(
        request: Request,
        csrf_token: Annotated[str, Form(max_length=200)] = "",
        next: Annotated[str, Form(max_length=2000)] = "",
        # No declared limit: a refused field would be echoed back in the error.
        token: Annotated[str, Form()] = "",
    ) -> Response:
        check_csrf(request, csrf_token)
        pasted = token.strip()  # a copy from a terminal or a file ends with a newline
        try:
            if not pasted:
                raise AuthError("no token was pasted")
            if len(pasted) > _MAX_PASTED_TOKEN:
                raise AuthError("token too large")
            sign_in.validate(pasted)  # the API's validation: issuer, signature, aud, exp, revoked
        except AuthError as exc:
            msg = (
                f"that token was refused: {exc}. Paste the whole token the CLI saved "
                f"(cat {_TOKEN_FILE_HINT}); if it expired, mint a new one: "
                "mlaas4hep token --user NAME --save (or mlaas4hep login)"
            )
            page = login_page(request, next, error=msg, status=401)
            page.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
            return page
        _, expiry = token_key(pasted)
        lifetime = max(1, min(sign_in.settings.session_lifetime_s, int(expiry - time.time())))
        response = RedirectResponse(safe_next(next), status_code=303)
        set_session(response, request, pasted, lifetime)
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
