"""Browser sessions: the session cookie, CSRF protection and the login redirect.

The session cookie carries the same bearer token the API takes in ``Authorization``
(minted by the local issuer, or obtained from the external issuer by authorization code +
PKCE); :func:`mlaas4hep.api.deps.principal_dependency` validates it the same way. The
cookie is ``HttpOnly`` (scripts cannot read it), ``SameSite=Strict`` (other sites cannot
make the browser send it) and ``Secure`` on HTTPS, and it is scoped to ``/ui``.

CSRF: every state-changing UI request (POST) must carry the value of the ``csrf`` cookie
(random, ``HttpOnly``, ``SameSite=Strict``) in a form field or an ``X-CSRF-Token`` header
(double submit: another site can neither read nor set it), and must not come from another
site by the browser's ``Sec-Fetch-Site`` header.
"""

from __future__ import annotations

import secrets
from urllib.parse import quote, urlsplit

from fastapi import Request, Response

from mlaas4hep.errors import PermissionDenied

UI_PREFIX = "/ui"
SESSION_COOKIE = "mlaas4hep_session"
CSRF_COOKIE = "mlaas4hep_csrf"
FLOW_COOKIE = "mlaas4hep_login"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


def is_https(request: Request) -> bool:
    """Whether the browser talks HTTPS to us (then cookies are ``Secure``)."""
    return request.url.scheme == "https"


def set_session(response: Response, request: Request, token: str, max_age: int) -> None:
    """Store *token* in the session cookie."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age,
        path=UI_PREFIX,
        httponly=True,
        secure=is_https(request),
        samesite="strict",
    )


def clear_session(response: Response, request: Request) -> None:
    """Remove the session cookie."""
    response.delete_cookie(
        SESSION_COOKIE, path=UI_PREFIX, httponly=True, secure=is_https(request), samesite="strict"
    )


def csrf_token(request: Request) -> str:
    """The request's CSRF token (the cookie's), or a fresh one that
    :func:`ensure_csrf_cookie` will set on the response."""
    token = request.cookies.get(CSRF_COOKIE)
    if token and 20 <= len(token) <= 100:
        return token
    fresh: str = getattr(request.state, "new_csrf", "") or secrets.token_urlsafe(32)
    request.state.new_csrf = fresh
    return fresh


def ensure_csrf_cookie(response: Response, request: Request) -> None:
    """Set the CSRF cookie when :func:`csrf_token` made a fresh one for this request."""
    fresh = getattr(request.state, "new_csrf", None)
    if fresh:
        response.set_cookie(
            CSRF_COOKIE,
            fresh,
            path=UI_PREFIX,
            httponly=True,
            secure=is_https(request),
            samesite="strict",
        )


def check_csrf(request: Request, submitted: str | None) -> None:
    """Refuse a state-changing request that lacks the CSRF token or comes from elsewhere.

    Besides the token, the browser's own word is checked when it gives it: a
    ``Sec-Fetch-Site`` other than ``same-origin``, or an ``Origin`` naming another host or
    port, is refused. That also stops a page on another port of the same host, which could
    otherwise plant its own CSRF cookie (cookies are not isolated by port).

    Raises:
        PermissionDenied: 403, with a message telling the user to reload the page.
    """
    expected = request.cookies.get(CSRF_COOKIE)
    sent = submitted or request.headers.get(CSRF_HEADER)
    if not _from_this_origin(request):
        raise PermissionDenied("this form was sent from another site; use the service's pages")
    if not expected or not sent or not secrets.compare_digest(expected, sent):
        msg = "the form's security token is missing or stale; reload the page and try again"
        raise PermissionDenied(msg)


def _from_this_origin(request: Request) -> bool:
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    # Host and port only: a TLS proxy in front changes the scheme, not the host.
    return origin != "null" and urlsplit(origin).netloc == request.headers.get("host", "")


def safe_next(value: str | None) -> str:
    """A local UI path to go to after signing in (never another site: no open redirect)."""
    if (
        value
        and value.startswith(UI_PREFIX + "/")
        and not value.startswith("//")
        and "\\" not in value
        and not value.startswith(UI_PREFIX + "/login")
    ):
        return value
    return UI_PREFIX + "/jobs"


def login_url(next_path: str) -> str:
    """The login page that returns to *next_path*."""
    return f"{UI_PREFIX}/login?next={quote(safe_next(next_path), safe='/')}"
