"""OAuth 2.0 Device Authorization Grant (RFC 8628), as used by ``mlaas4hep login``.

The caller prints the verification URL and user code; this module polls the token
endpoint at the pace the issuer asks for. The HTTP client is injected so tests can point
it at a real provider or a mock transport.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from mlaas4hep.auth.settings import check_url
from mlaas4hep.errors import AuthError

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@dataclass(frozen=True)
class DeviceCode:
    """What the user must do, and what the poller needs."""

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    interval: float
    expires_in: float
    token_endpoint: str


@dataclass(frozen=True)
class DeviceFlow:
    """A device flow against ``issuer`` for a public client ``client_id``."""

    client: httpx.Client
    issuer: str
    client_id: str
    scopes: Sequence[str] = ()
    resource: str | None = None
    client_secret: str | None = None

    def start(self) -> DeviceCode:
        """Discover the endpoints and request a device code.

        Raises:
            AuthError: the issuer does not support the device grant or refused.
        """
        check_url(self.issuer, what="issuer")
        meta = _json(
            self._send("GET", self.issuer.rstrip("/") + "/.well-known/openid-configuration")
        )
        if meta.get("issuer") != self.issuer:
            msg = f"discovery document of {self.issuer!r} names issuer {meta.get('issuer')!r}"
            raise AuthError(msg)
        endpoint = meta.get("device_authorization_endpoint")
        if not isinstance(endpoint, str):
            msg = f"issuer {self.issuer!r} does not offer the device flow; use --token instead"
            raise AuthError(msg)
        data = self._form({"scope": " ".join(self.scopes)} if self.scopes else {})
        got = _json(self._send("POST", endpoint, data))
        try:
            return self._code(got, str(meta["token_endpoint"]))
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"issuer {self.issuer!r} sent an incomplete device authorization response"
            raise AuthError(msg) from exc

    @staticmethod
    def _code(got: dict[str, Any], token_endpoint: str) -> DeviceCode:
        return DeviceCode(
            device_code=str(got["device_code"]),
            user_code=str(got["user_code"]),
            verification_uri=str(got["verification_uri"]),
            verification_uri_complete=got.get("verification_uri_complete"),
            interval=float(got.get("interval", 5)),
            expires_in=float(got.get("expires_in", 600)),
            token_endpoint=token_endpoint,
        )

    def poll(
        self,
        code: DeviceCode,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> str:
        """Wait for the user to approve; return the access token.

        Raises:
            AuthError: the user denied, the code expired, or the issuer failed.
        """
        deadline = clock() + code.expires_in
        interval = code.interval
        while clock() < deadline:
            sleep(interval)
            form = self._form({"grant_type": DEVICE_GRANT, "device_code": code.device_code})
            resp = self._send("POST", code.token_endpoint, form)
            if resp.status_code == 200:
                token = _json(resp).get("access_token")
                if not isinstance(token, str):
                    raise AuthError("issuer answered without an access_token")
                return token
            error = _error_code(resp)
            if error == "authorization_pending":
                continue
            if error == "slow_down":
                interval += 5  # RFC 8628 s3.5
                continue
            msg = f"device login failed: {error} (start again with `mlaas4hep login`)"
            raise AuthError(msg)
        raise AuthError("device code expired before it was approved; run login again")

    def _send(self, method: str, url: str, data: dict[str, str] | None = None) -> httpx.Response:
        try:
            return self.client.request(method, url, data=data)
        except httpx.HTTPError as exc:
            msg = f"cannot reach {url!r}: {type(exc).__name__}; check --issuer and the network"
            raise AuthError(msg) from exc

    def _form(self, data: dict[str, str]) -> dict[str, str]:
        form = {"client_id": self.client_id, **data}
        if self.client_secret:
            form["client_secret"] = self.client_secret
        if self.resource:
            form["resource"] = self.resource
        return form


def _json(resp: httpx.Response) -> dict[str, Any]:
    if resp.status_code != 200:
        msg = f"{resp.request.url} answered HTTP {resp.status_code}: {_error_code(resp)}"
        raise AuthError(msg)
    try:
        doc = resp.json()
    except ValueError as exc:
        msg = f"{resp.request.url} did not answer JSON"
        raise AuthError(msg) from exc
    if not isinstance(doc, dict):
        msg = f"{resp.request.url} did not answer a JSON object"
        raise AuthError(msg)
    return doc


def _error_code(resp: httpx.Response) -> str:
    try:
        doc = resp.json()
    except ValueError:
        return f"HTTP {resp.status_code}"
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return str(doc["error"])
    return f"HTTP {resp.status_code}"
