"""Browser sign-in against an external issuer: OAuth 2.0 authorization code + PKCE.

::

    /ui/login/oidc ─► 302 issuer authorization_endpoint?response_type=code&client_id&
                      redirect_uri&scope&state&code_challenge(S256)[&resource]
    issuer ─► /ui/login/callback?code&state ─► state == the flow cookie's ─► POST
              token_endpoint (code, code_verifier) ─► access token ─► validated by the
              service's Authenticator ─► session cookie

The flow state (``state``, the PKCE verifier, where to go afterwards) lives in a short-lived
``HttpOnly`` cookie of the browser that started it, so a callback from any other browser
(login CSRF) or a replayed code without the verifier fails. No framework imports: the
routes in :mod:`mlaas4hep.api.ui.routes_auth` do the HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from mlaas4hep.api.ui.settings import OidcClientSettings
from mlaas4hep.auth.settings import check_url
from mlaas4hep.errors import AuthError, SpecError

_DISCOVERY_TTL_S = 300.0
_MAX_DOC_BYTES = 256 * 1024


@dataclass(frozen=True)
class LoginFlow:
    """One started sign-in: what the browser keeps until the callback."""

    state: str
    verifier: str
    next_path: str

    def to_cookie(self) -> str:
        return f"{self.state}.{self.verifier}.{self.next_path}"

    @classmethod
    def from_cookie(cls, value: str | None) -> LoginFlow | None:
        if not value:
            return None
        state, _, rest = value.partition(".")
        verifier, _, next_path = rest.partition(".")
        if not state or not verifier:
            return None
        return cls(state, verifier, next_path)


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 S256 code challenge of *verifier*."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class OidcClient:
    """The UI's client of one issuer: discovery (cached), authorization URL, code exchange.

    Thread-safe; *transport* lets tests answer the issuer's URLs in-process.
    """

    def __init__(
        self,
        settings: OidcClientSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.settings = settings
        self._http = httpx.Client(transport=transport, timeout=timeout_s, follow_redirects=False)
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._fetched = 0.0

    def close(self) -> None:
        self._http.close()

    def start(self, redirect_uri: str, next_path: str) -> tuple[str, LoginFlow]:
        """A new flow: the issuer URL to send the browser to, and what to remember.

        Raises:
            AuthError: the issuer's discovery document cannot be read or is inconsistent.
        """
        flow = LoginFlow(secrets.token_urlsafe(24), secrets.token_urlsafe(48), next_path)
        params = {
            "response_type": "code",
            "client_id": self.settings.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(self.settings.scopes),
            "state": flow.state,
            "code_challenge": pkce_challenge(flow.verifier),
            "code_challenge_method": "S256",
        }
        if self.settings.resource:
            params["resource"] = self.settings.resource
        endpoint = self._endpoint("authorization_endpoint")
        sep = "&" if "?" in endpoint else "?"
        return f"{endpoint}{sep}{urlencode(params)}", flow

    def exchange(self, code: str, flow: LoginFlow, state: str, redirect_uri: str) -> str:
        """Check *state* against the flow and trade the code for an access token.

        Raises:
            AuthError: state mismatch, or the issuer refused the code.
        """
        if not secrets.compare_digest(state, flow.state):
            raise AuthError("the sign-in response does not match the sign-in you started")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": self.settings.client_id,
            "code_verifier": flow.verifier,
        }
        if self.settings.resource:
            form["resource"] = self.settings.resource
        headers = {}
        if self.settings.client_secret:  # a confidential client: HTTP Basic (RFC 6749 2.3.1)
            pair = f"{quote(self.settings.client_id)}:{quote(self.settings.client_secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        try:
            reply = self._http.post(self._endpoint("token_endpoint"), data=form, headers=headers)
        except httpx.HTTPError as exc:
            raise AuthError("the token issuer could not be reached") from exc
        body = _json(reply)
        token = body.get("access_token") if reply.status_code == 200 else None
        if not isinstance(token, str) or not token:
            error = str(body.get("error", f"HTTP {reply.status_code}"))[:80]
            msg = f"the token issuer refused the sign-in ({error})"
            raise AuthError(msg)
        return token

    def _endpoint(self, key: str) -> str:
        url = self._discovery().get(key)
        if not isinstance(url, str):
            msg = f"the issuer's discovery document has no {key}"
            raise AuthError(msg)
        try:
            check_url(url, what=key)
        except SpecError as exc:
            raise AuthError(str(exc)) from exc
        return url

    def _discovery(self) -> dict[str, Any]:
        with self._lock:
            now = time.monotonic()
            if self._metadata is None or now - self._fetched > _DISCOVERY_TTL_S:
                try:
                    reply = self._http.get(self.settings.metadata_url)
                except httpx.HTTPError as exc:
                    raise AuthError("the token issuer could not be reached") from exc
                doc = _json(reply)
                if reply.status_code != 200 or doc.get("issuer") != self.settings.issuer:
                    raise AuthError("the issuer's discovery document does not name it")
                self._metadata, self._fetched = doc, now
            return self._metadata


def _json(reply: httpx.Response) -> dict[str, Any]:
    if len(reply.content) > _MAX_DOC_BYTES:
        return {}
    try:
        doc = reply.json()
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}
