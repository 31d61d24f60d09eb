"""The web UI: server-rendered pages for jobs, models and datasets, under ``/ui``.

``install_ui(app, ...)`` (called by :func:`mlaas4hep.api.app.create_app`) mounts:

* ``/ui/login`` …: sign-in (local issuer for a user name, a pasted access token, or
  authorization code + PKCE), sign-out;
* ``/ui/jobs``, ``/ui/jobs/{id}``, ``/ui/submit``: jobs, live progress, results, submission;
* ``/ui/runs``, ``/ui/runs/compare``: the runs table and the compare view;
* ``/ui/models``, ``/ui/models/{name}``, ``/ui/datasets``: models, predictions, datasets;
* ``/ui/static``: the page's own CSS and JavaScript (nothing from a CDN).

Pages call the same service objects as the JSON API and authenticate with the same
dependency (:func:`mlaas4hep.api.deps.principal_dependency`), which here also accepts the
session cookie. See docs/ui.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from mlaas4hep.api.deps import principal_dependency
from mlaas4hep.api.ui.context import Inference, UiContext
from mlaas4hep.api.ui.oidc import OidcClient
from mlaas4hep.api.ui.pages import HERE, Pages, environment, route_class
from mlaas4hep.api.ui.revocations import RevokedSessions
from mlaas4hep.api.ui.routes_auth import SignIn, auth_router
from mlaas4hep.api.ui.routes_jobs import jobs_ui_router
from mlaas4hep.api.ui.routes_models import models_ui_router
from mlaas4hep.api.ui.routes_runs import runs_ui_router
from mlaas4hep.api.ui.session import SESSION_COOKIE, UI_PREFIX
from mlaas4hep.api.ui.settings import UiSettings
from mlaas4hep.auth.local_issuer import LocalIssuer
from mlaas4hep.auth.principal import Principal
from mlaas4hep.auth.token_store import default_token_file
from mlaas4hep.auth.tokens import Authenticator
from mlaas4hep.errors import SpecError
from mlaas4hep.jobs.datasets import DatasetStore
from mlaas4hep.jobs.service import JobService

__all__ = ["UiSettings", "install_ui"]

#: The repository's examples/ (a source checkout); absent in an installed wheel.
EXAMPLES_DIR = HERE.parents[3] / "examples"


def install_ui(
    app: FastAPI,
    *,
    raw_settings: Mapping[str, Any],
    authenticator: Authenticator,
    trusted_issuers: tuple[str, ...],
    service: JobService,
    datasets: DatasetStore,
    local_issuer: LocalIssuer | None,
    inference: Inference | None,
    revoked: RevokedSessions | None = None,
    examples_dir: Path | None = EXAMPLES_DIR,
    oidc_transport: httpx.BaseTransport | None = None,
    cli_token_file: Path | None = None,
) -> None:
    """Mount the UI on *app*.

    Args:
        raw_settings: the ``ui:`` settings section (see :mod:`mlaas4hep.api.ui.settings`).
        authenticator: the service's authenticator (the API's).
        trusted_issuers: the issuers the authenticator accepts; ``ui.oidc.issuer`` must be
            one of them.
        local_issuer: enables the local sign-in button (loopback deployments).
        inference: the inference service (models page, predictions, deploy), or None.
        revoked: where sign-out lists the session token; the authenticator must refuse
            what it lists (:class:`~mlaas4hep.api.ui.revocations.RevokingAuthenticator`).
            None: an in-memory list (tests).
        oidc_transport: for tests, answers the external issuer's URLs in-process.
        cli_token_file: where ``mlaas4hep token --save`` keeps the CLI's token; the local
            sign-in suggests the user it names (default: the CLI's default token file).

    Raises:
        SpecError: invalid ``ui`` settings.
    """
    settings = UiSettings.from_mapping(raw_settings)
    oidc = None
    if settings.oidc is not None:
        if settings.oidc.issuer not in trusted_issuers:
            msg = (
                f"ui.oidc.issuer {settings.oidc.issuer!r} is not among the trusted issuers "
                f"{list(trusted_issuers)}; add it to auth.issuers"
            )
            raise SpecError(msg)
        oidc = OidcClient(settings.oidc, transport=oidc_transport)
    pages = Pages(environment())
    ui_route = route_class(pages)
    ctx = UiContext(pages, ui_route, service, datasets, inference, examples_dir)
    caller = principal_dependency(authenticator, cookie=SESSION_COOKIE)
    revoked = revoked if revoked is not None else RevokedSessions(None)
    token_file = cli_token_file or default_token_file()
    sign_in = SignIn(settings, local_issuer, oidc, _validator(authenticator), revoked, token_file)
    app.include_router(auth_router(pages, sign_in, ui_route))
    app.include_router(jobs_ui_router(ctx, caller))
    app.include_router(models_ui_router(ctx, caller))
    app.include_router(runs_ui_router(ctx, caller))
    app.mount(f"{UI_PREFIX}/static", StaticFiles(directory=HERE / "static"), name="ui-static")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(f"{UI_PREFIX}/jobs", status_code=303)


def _validator(authenticator: Authenticator) -> Callable[[str], Principal]:
    def validate(token: str) -> Principal:
        return authenticator.authenticate(f"Bearer {token}")

    return validate
