"""The HTTP client the CLI commands share: where the service is and which token to send.

Resolution order, first found wins:

* URL: ``--url``, ``$MLAAS4HEP_URL``, ``url:`` in the client config file, then
  ``http://127.0.0.1:8000`` (the embedded ``mlaas4hep serve``);
* token: ``--token``, ``$MLAAS4HEP_TOKEN``, ``token:``/``token_file:`` in the config file,
  then the token stored by ``mlaas4hep login`` / ``mlaas4hep token``.

The config file is ``$MLAAS4HEP_CLIENT_CONFIG`` or ``~/.config/mlaas4hep/client.yaml``.
Error answers (RFC 9457 problems) become the project's exceptions with the server's
``detail`` as message, so ``mlaas4hep`` prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Mapping
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
from mlaas4hep.serve.bundle_export import MODEL_VERSION_HEADER

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


class ServiceError(Mlaas4hepError):
    """The service cannot be reached or answered with an unexpected error."""


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    """``--url`` and ``--token``, for every command that talks to the service."""
    parser.add_argument("--url", help=f"service URL (env MLAAS4HEP_URL; default {DEFAULT_URL})")
    parser.add_argument("--token", help="bearer token (env MLAAS4HEP_TOKEN; default: stored)")


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


class ApiClient:
    """Thin typed wrapper over the job API."""

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

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ApiClient:
        """A client configured from ``--url``/``--token`` and the fallbacks."""
        url, token = resolve(getattr(args, "url", None), getattr(args, "token", None))
        return cls(url, token)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; error answers raise the matching project exception."""
        try:
            response = self._http.request(method, API + path, **kwargs)
        except httpx.TransportError as exc:
            msg = f"cannot reach the service at {self.url}: {exc}; is `mlaas4hep serve` running?"
            raise ServiceError(msg) from exc
        _raise_for_problem(response)
        return response

    # ---- jobs ----------------------------------------------------------------------------

    def submit(
        self, spec: bytes, files: list[Path], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        if files:
            parts = [("spec", ("pipeline.yaml", spec, "application/yaml"))]
            parts += [
                ("files", (f.name, f.read_bytes(), "application/octet-stream")) for f in files
            ]
            r = self.request("POST", "/jobs", files=parts, headers=headers)
        else:
            headers["Content-Type"] = "application/yaml"
            r = self.request("POST", "/jobs", content=spec, headers=headers)
        return dict(r.json())

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/jobs/{job_id}").json())

    def jobs(self, states: list[str], limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, "state": states}
        if cursor:
            params["cursor"] = cursor
        return dict(self.request("GET", "/jobs", params=params).json())

    def cancel(self, job_id: str) -> dict[str, Any]:
        return dict(self.request("POST", f"/jobs/{job_id}/cancel").json())

    def logs(self, job_id: str, follow: bool = False) -> Iterator[bytes]:
        """The log bytes as they arrive (``follow`` streams until the job ends)."""
        params = {"follow": "true" if follow else "false"}
        try:
            with self._http.stream(
                "GET", f"{API}/jobs/{job_id}/logs", params=params, timeout=None
            ) as r:
                if r.status_code >= 400:
                    r.read()
                    _raise_for_problem(r)
                yield from r.iter_bytes()
        except httpx.TransportError as exc:
            msg = f"lost the connection to {self.url} while reading logs: {exc}"
            raise ServiceError(msg) from exc

    def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        return list(self.request("GET", f"/jobs/{job_id}/artifacts").json()["items"])

    def download(self, job_id: str, name: str, dest: Path) -> Path:
        """Save artifact *name* to *dest* (temp file + rename: never half-written)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        with self._http.stream("GET", f"{API}/jobs/{job_id}/artifacts/{name}") as r:
            if r.status_code >= 400:
                r.read()
                _raise_for_problem(r)
            with tmp.open("wb") as out:
                for chunk in r.iter_bytes():
                    out.write(chunk)
        os.replace(tmp, dest)
        return dest

    # ---- models (the inference routes, outside /api/v1) -----------------------------------

    def model_bundle(self, name: str, version: str | None, dest: Path) -> int:
        """Save a published model version's bundle (``tar.gz``) to *dest*; return its
        version number (*version* None: the newest in service)."""
        path = f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + "/bundle"
        try:
            with self._http.stream("GET", path, timeout=None) as r:
                if r.status_code >= 400:
                    r.read()
                    _raise_for_problem(r)
                number = r.headers.get(MODEL_VERSION_HEADER, "")
                if not number.isdigit():
                    msg = f"the service sent no model version for {name!r}; is it mlaas4hep?"
                    raise ServiceError(msg)
                with dest.open("xb") as out:
                    for chunk in r.iter_bytes():
                        out.write(chunk)
        except httpx.TransportError as exc:
            msg = f"cannot fetch model {name!r} from {self.url}: {exc}; is the service running?"
            raise ServiceError(msg) from exc
        return int(number)


def _raise_for_problem(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
        # RFC 9457 problems on the job API; ``{"error": ...}`` on the inference routes
        detail = str(body.get("detail") or body.get("error") or "")
    except (ValueError, AttributeError):
        detail = response.text[:300]
    cls = _BY_STATUS.get(response.status_code, ServiceError)
    raise cls(detail or f"the service answered {response.status_code}")
