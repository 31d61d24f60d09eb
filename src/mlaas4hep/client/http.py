"""The one HTTP client stack (CLI, ``mlaas4hep.Client``, ``Model.load(NAME)``): where the
service is, which token to send, how error answers become the project's exceptions.

Resolution order, first found wins:

* URL: ``--url``, ``$MLAAS4HEP_URL``, ``url:`` in the client config file, then
  ``http://127.0.0.1:8000`` (the embedded ``mlaas4hep serve``);
* token: ``--token``, ``$MLAAS4HEP_TOKEN``, ``token:``/``token_file:`` in the config file,
  then the token stored by ``mlaas4hep login`` / ``mlaas4hep token``.

The config file is ``$MLAAS4HEP_CLIENT_CONFIG`` or ``~/.config/mlaas4hep/client.yaml``.
Error answers (RFC 9457 problems on ``/api/v1``, ``{"error": ...}`` on the inference
routes) become the project's exceptions with the server's message, so ``mlaas4hep`` prints
one line and exits 2.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from mlaas4hep.documents import load_yaml
from mlaas4hep.errors import (
    AuthError,
    Conflict,
    Mlaas4hepError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    SpecError,
)

DEFAULT_URL = "http://127.0.0.1:8000"
API = "/api/v1"
_BY_STATUS: dict[int, type[Mlaas4hepError]] = {
    401: AuthError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: SpecError,
}


# What to do without a valid token (shown on every 401 the client receives).
HOW_TO_GET_ONE = (
    "Get one with `mlaas4hep token --user NAME --save` (the service's local issuer, on its "
    "machine) or `mlaas4hep login` (an OIDC issuer), or pass --token / $MLAAS4HEP_TOKEN"
)


class ServiceError(Mlaas4hepError):
    """The service cannot be reached or answered with an unexpected error."""


def config_path(environ: Mapping[str, str] = os.environ) -> Path:
    """Where the client config file is looked for."""
    explicit = environ.get("MLAAS4HEP_CLIENT_CONFIG")
    return Path(explicit) if explicit else Path.home() / ".config/mlaas4hep/client.yaml"


def resolve(
    url: str | None, token: str | None, environ: Mapping[str, str] = os.environ
) -> tuple[str, str | None]:
    """The URL and token to use (see the module docstring for the order)."""
    config = _read_config(config_path(environ))
    url = url or environ.get("MLAAS4HEP_URL") or config.get("url") or DEFAULT_URL
    token = token or environ.get("MLAAS4HEP_TOKEN") or config.get("token")
    if not token and config.get("token_file"):
        token = Path(str(config["token_file"])).expanduser().read_text().strip()
    if not token:
        token = _stored_token()
    return str(url).rstrip("/"), token


def _read_config(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = load_yaml(path.read_bytes(), what=repr(str(path)), limit=1024 * 1024)
    except (OSError, SpecError, PayloadTooLarge) as exc:
        msg = f"cannot read the client config {str(path)!r}: {exc}"
        raise SpecError(msg) from exc
    return data if isinstance(data, dict) else {}


def _stored_token() -> str | None:
    from mlaas4hep.auth.token_store import load_token

    try:
        return load_token()
    except Mlaas4hepError:
        return None


class Transport:
    """An authenticated ``httpx.Client`` on the service whose error answers raise."""

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url
        self._http = httpx.Client(
            base_url=url, headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request to the job API (*path* below ``/api/v1``); error answers raise."""
        return self.call(method, API + path, **kwargs)

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed answer (*path* absolute, e.g. ``/v2/...``); error answers raise."""
        try:
            with self._http.stream(method, path, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()
                    raise_for_problem(response)
                yield response
        except httpx.TransportError as exc:
            msg = f"lost the connection to {self.url}: {exc}; is `mlaas4hep serve` running?"
            raise ServiceError(msg) from exc

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Like :meth:`request` for a path outside ``/api/v1`` (the inference routes)."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            msg = f"cannot reach the service at {self.url}: {exc}; is `mlaas4hep serve` running?"
            raise ServiceError(msg) from exc
        raise_for_problem(response)
        return response


def raise_for_problem(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
        # RFC 9457 problems on the job API; ``{"error": ...}`` on the inference routes
        detail = str(body.get("detail") or body.get("error") or "")
    except (ValueError, AttributeError):
        detail = response.text[:300]
    detail = detail or f"the service answered {response.status_code}"
    if response.status_code == 401:
        detail = f"the service refused the token: {detail}. {HOW_TO_GET_ONE}"
    raise _BY_STATUS.get(response.status_code, ServiceError)(detail)
