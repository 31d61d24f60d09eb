"""The interactive API documentation, ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), offline.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so they are blank on a machine
without internet (a batch node, a laptop on a train) and tell the browser to run code
from a third party. Here the app serves both itself:

* the JavaScript and CSS come from the ``fastapi-offline`` package (a dependency of the
  ``service`` extra: Swagger UI's ``swagger-ui-bundle.js`` and ``swagger-ui.css``, ReDoc's
  ``redoc.standalone.js``), under ``/docs/assets/<digest>/<name>``: the digest is the
  content's, so a new version gets a new URL and each can be cached for a year;
* the pages reference nothing else: no CDN, no web fonts. Swagger UI is started by a small
  script file of ours (``swagger-init.js``), not an inline script, so the pages' CSP
  allows scripts from the service only; ReDoc starts itself from its ``<redoc>`` element.

ReDoc's sidebar shows the Redocly logo from Redocly's CDN, and the page's ``img-src``
alone would still make the browser try (and refuse) that request: the served bundle names
an empty inline image there instead (:data:`OFFLINE_PATCHES`), so the pages never ask for
anything beyond the service.
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, HTMLResponse

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
ASSETS_URL = "/docs/assets"
_VENDOR_PACKAGE = "fastapi_offline"
_INSTALL_HINT = "pip install 'mlaas4hep[service]' (it brings fastapi-offline)"
_ASSET_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
}
#: Asset URLs change with their content, so a browser may keep each one for a year.
ASSET_HEADERS = {
    "Cache-Control": "public, max-age=31536000, immutable",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",  # the asset digests in it change with an upgrade
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
_CSP_COMMON = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
#: Swagger UI styles through its stylesheet and the DOM's style properties (not markup).
SWAGGER_CSP = f"{_CSP_COMMON}; style-src 'self'"
#: ReDoc (styled-components) adds ``<style>`` elements, and builds its search index in a
#: worker made from a blob: ``'unsafe-inline'`` for styles only, never for scripts.
REDOC_CSP = f"{_CSP_COMMON}; style-src 'self' 'unsafe-inline'; worker-src blob:"

#: Byte replacements in vendored files (tests/e2e/test_api_docs.py checks that the pages
#: ask for nothing beyond the service, so a new version's new URL shows up there).
OFFLINE_PATCHES: dict[str, tuple[tuple[bytes, bytes], ...]] = {
    "redoc.standalone.js": (
        (
            b'"https://cdn.redoc.ly/redoc/logo-mini.svg"',
            b"\"data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E\"",
        ),
    ),
}

SWAGGER_INIT_JS = """\
// Starts Swagger UI on /docs. A file, not an inline script: the page's CSP runs only
// scripts served by this service.
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-openapi-url"),
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    presets: [SwaggerUIBundle.presets.apis],
    deepLinking: true,
    displayRequestDuration: true,
    persistAuthorization: false,
    validatorUrl: null
  });
})();
"""


@dataclass(frozen=True)
class Asset:
    """One file under ``/docs/assets``: a vendored file or our own bytes."""

    name: str
    digest: str
    media_type: str
    path: Path | None = None
    content: bytes = b""

    @property
    def url(self) -> str:
        return f"{ASSETS_URL}/{self.digest}/{self.name}"


def vendor_dir() -> Path:
    """The directory of the packaged Swagger UI and ReDoc files.

    Raises:
        ModuleNotFoundError: ``fastapi-offline`` is not installed (with the install command).
    """
    try:
        root = resources.files(_VENDOR_PACKAGE) / "static"
    except ModuleNotFoundError as exc:
        msg = f"the API documentation pages need the package fastapi-offline: {_INSTALL_HINT}"
        raise ModuleNotFoundError(msg, name=_VENDOR_PACKAGE) from exc
    return Path(str(root))


def load_assets(directory: Path | None = None) -> dict[str, Asset]:
    """The assets the pages use, by name, each with the digest of its content.

    Raises:
        FileNotFoundError: a file is missing from the vendored package (a broken install).
    """
    directory = vendor_dir() if directory is None else directory
    assets: dict[str, Asset] = {}
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png"):
        path = directory / name
        if not path.is_file():
            msg = f"{path} is missing: the fastapi-offline installation is broken; {_INSTALL_HINT}"
            raise FileNotFoundError(msg)
        data = path.read_bytes()
        if name in OFFLINE_PATCHES:
            data = _patched(data, OFFLINE_PATCHES[name])
            assets[name] = Asset(name, _digest(data), _media_type(name), content=data)
        else:
            assets[name] = Asset(name, _digest(data), _media_type(name), path=path)
    init = SWAGGER_INIT_JS.encode()
    assets["swagger-init.js"] = Asset(
        "swagger-init.js", _digest(init), _media_type("swagger-init.js"), content=init
    )
    return assets


def install_docs(app: FastAPI, *, openapi_url: str = "/openapi.json") -> None:
    """Serve ``/docs``, ``/redoc`` and their assets on *app* (created with
    ``docs_url=None, redoc_url=None``); none of them needs a token."""
    assets = load_assets()
    title = html.escape(app.title)

    @app.get(DOCS_URL, include_in_schema=False)
    def swagger_page(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return _page(
            f"{title} API: Swagger UI",
            head=_stylesheet(root, assets["swagger-ui.css"]),
            body=(
                f'<div id="swagger-ui" data-openapi-url="{html.escape(root + openapi_url)}">'
                "</div>\n"
                f"{_script(root, assets['swagger-ui-bundle.js'])}\n"
                f"{_script(root, assets['swagger-init.js'])}"
            ),
            favicon=root + assets["favicon.png"].url,
            csp=SWAGGER_CSP,
        )

    @app.get(REDOC_URL, include_in_schema=False)
    def redoc_page(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return _page(
            f"{title} API: ReDoc",
            head="",
            body=(
                f'<redoc spec-url="{html.escape(root + openapi_url)}"></redoc>\n'
                f"{_script(root, assets['redoc.standalone.js'])}"
            ),
            favicon=root + assets["favicon.png"].url,
            csp=REDOC_CSP,
        )

    @app.get(ASSETS_URL + "/{digest}/{name}", include_in_schema=False)
    def asset(digest: str, name: str) -> Response:
        found = assets.get(name)
        if found is None or found.digest != digest:
            # An old page's URL after an upgrade, or a guess: nothing else is served here.
            raise HTTPException(404, f"no documentation asset {name!r} of this version")
        if found.path is not None:
            return FileResponse(found.path, media_type=found.media_type, headers=ASSET_HEADERS)
        return Response(found.content, media_type=found.media_type, headers=ASSET_HEADERS)


def _page(title: str, *, head: str, body: str, favicon: str, csp: str) -> HTMLResponse:
    page = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" type="image/png" href="{html.escape(favicon)}">
{head}
</head>
<body>
{body}
</body>
</html>
"""
    return HTMLResponse(page, headers={**_PAGE_HEADERS, "Content-Security-Policy": csp})


def _stylesheet(root: str, asset: Asset) -> str:
    return f'<link rel="stylesheet" href="{html.escape(root + asset.url)}">'


def _script(root: str, asset: Asset) -> str:
    return f'<script src="{html.escape(root + asset.url)}"></script>'


def _patched(data: bytes, patches: tuple[tuple[bytes, bytes], ...]) -> bytes:
    # A version without the text needs no patch; the browser test would see a new one.
    for old, new in patches:
        data = data.replace(old, new)
    return data


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _media_type(name: str) -> str:
    return _ASSET_TYPES[Path(name).suffix]
