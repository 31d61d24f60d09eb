"""FastAPI dependencies for authentication and scope checks.

The app factory builds one :class:`~mlaas4hep.auth.tokens.Authenticator` and one
dependency from it, then every route asks for the caller::

    principal = principal_dependency(authenticator)
    can_submit = require_scope(principal, "compute.create")

    @router.post("/jobs")
    def submit(spec: Spec, caller: Principal = Depends(can_submit)) -> Job: ...

Write the dependency as a parameter default (B008 is a FastAPI false positive): with
``from __future__ import annotations``, ``Annotated[Principal, Depends(principal)]`` is a
string that FastAPI evaluates in module globals, where a closure's ``principal`` is not
found, and the parameter silently becomes a query parameter (422).

Failures become HTTP errors here, so routes never see an unauthenticated request:
``AuthError`` -> 401 with ``WWW-Authenticate: Bearer``, ``PermissionDenied`` -> 403, an
unreachable issuer (``IssuerUnavailable``) -> 503 with ``Retry-After``, as on every route.
Bodies carry a short reason only (never the token, never validation internals).

The dependency also declares the ``bearer`` security scheme (:func:`bearer_scheme`), so the
OpenAPI document marks exactly the routes that authenticate, and Swagger UI's "Authorize"
button sends the token with "Try it out". It reads the header itself: the scheme object
only documents, it never answers a request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mlaas4hep.api.errors import Cause
from mlaas4hep.auth.local_issuer import LocalIssuer
from mlaas4hep.auth.policy import require_scope as _require_scope
from mlaas4hep.auth.principal import Principal
from mlaas4hep.auth.tokens import Authenticator
from mlaas4hep.errors import AuthError, IssuerUnavailable, PermissionDenied
from mlaas4hep.http_status import http_status

log = logging.getLogger(__name__)
#: The name of the security scheme in the OpenAPI document (``components.securitySchemes``).
BEARER_SCHEME = "bearer"


def bearer_scheme() -> HTTPBearer:
    """The documented scheme: a bearer JWT (``Authorization: Bearer <token>``)."""
    return HTTPBearer(
        scheme_name=BEARER_SCHEME,
        bearerFormat="JWT",
        description=(
            "An access token of a trusted issuer (OIDC / WLCG JWT), sent as "
            "`Authorization: Bearer <token>`. With the local issuer: `mlaas4hep token --user "
            "NAME`; with an external one: `mlaas4hep login`. The scopes each route needs are "
            "in its 403 description and docs/security.md."
        ),
        auto_error=False,  # documents only; principal() reads and judges the header
    )


def auth_failures(scope: str) -> tuple[Cause, ...]:
    """The error answers of a route guarded by ``require_scope(principal, scope)``."""
    return (
        (AuthError, "no bearer token, or one that is not valid (expired, another issuer)"),
        (PermissionDenied, f"the token lacks the scope {scope!r} (the detail names it)"),
        (IssuerUnavailable, "the token issuer cannot be reached; retry after Retry-After"),
    )


def unauthorized(reason: str, *, token_sent: bool = True) -> HTTPException:
    """A 401 with the RFC 6750 challenge (``error="invalid_token"`` when one was sent)."""
    challenge = 'Bearer realm="mlaas4hep"'
    if token_sent:
        challenge += f', error="invalid_token", error_description="{reason}"'
    return HTTPException(status_code=401, detail=reason, headers={"WWW-Authenticate": challenge})


def forbidden(reason: str) -> HTTPException:
    """A 403 for an authenticated caller lacking a scope or ownership."""
    return HTTPException(status_code=403, detail=reason)


def principal_dependency(
    authenticator: Authenticator, *, cookie: str | None = None
) -> Callable[..., Principal]:
    """The dependency that authenticates a request and returns its :class:`Principal`.

    It reads the ``Authorization`` header, the TCP peer (``request.client.host``) and, for
    the oauth2-proxy mode, the forwarded identity headers. It is a sync function on
    purpose: FastAPI runs it in a worker thread, so a JWKS fetch never blocks the loop.

    With *cookie* (the web UI's session cookie name), a request without an
    ``Authorization`` header may carry the same bearer token in that cookie instead; it is
    validated exactly like the header. The JSON API does not pass *cookie*: only the UI,
    whose POST forms are CSRF-protected, accepts it.
    """

    bearer = bearer_scheme()

    def principal(
        request: Request,
        _documented: HTTPAuthorizationCredentials | None = Security(bearer),  # noqa: B008
    ) -> Principal:
        peer = request.client.host if request.client else None
        header = request.headers.get("authorization")
        if header is None and cookie is not None and request.cookies.get(cookie):
            header = f"Bearer {request.cookies[cookie]}"
        try:
            return authenticator.authenticate(header, peer, request.headers.items())
        except PermissionDenied as exc:
            raise forbidden(str(exc)) from exc
        except IssuerUnavailable as exc:
            # The issuer is down or misconfigured: not the caller's fault, so no 401 that
            # would send them to log in again. The message names no URL (auth.jwks).
            headers = http_status(exc).headers
            raise HTTPException(status_code=503, detail=str(exc), headers=headers) from exc
        except AuthError as exc:
            # The reason is one of the fixed, client-safe phrases of auth.tokens.
            log.info("rejected credentials from %s: %s", peer, exc)
            sent = bool(header)
            raise unauthorized(_safe_reason(exc), token_sent=sent) from exc

    return principal


def require_scope(principal: Callable[..., Principal], needed: str) -> Callable[..., Principal]:
    """A dependency that authenticates and then demands scope ``needed`` (403 naming it)."""

    # A default, not ``Annotated[..., Depends(principal)]``: with postponed annotations
    # FastAPI would evaluate that string in module globals, where ``principal`` is unknown.
    def checked(caller: Principal = Depends(principal)) -> Principal:  # noqa: B008
        try:
            _require_scope(caller, needed)
        except PermissionDenied as exc:
            raise forbidden(str(exc)) from exc
        return caller

    return checked


def local_issuer_router(local: LocalIssuer) -> APIRouter:
    """Routes publishing the local issuer's discovery document and JWKS (no auth).

    Mounted at the issuer URL's path, so ``<service>/mlaas4hep/local-issuer/jwks`` shows
    the key the service itself uses (validation reads it in-process).
    """
    router = APIRouter(prefix=urlsplit(local.issuer).path.rstrip("/"), tags=["auth"])

    @router.get("/.well-known/openid-configuration")
    def discovery() -> dict[str, Any]:
        return local.discovery_document()

    @router.get("/jwks")
    def jwks() -> dict[str, Any]:
        return local.jwks()

    return router


def _safe_reason(exc: AuthError) -> str:
    # Messages of key-fetch failures name URLs; clients only learn that validation failed.
    text = str(exc)
    if len(text) > 100 or '"' in text or "http" in text:
        return "token could not be validated"
    return text
