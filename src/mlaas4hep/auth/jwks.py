"""Signing keys of one issuer: OIDC discovery, JWKS fetch, cache and refresh.

``IssuerKeys.key_for(kid)`` returns a verification key. The cache is refreshed when its
TTL has passed and when a token names an unknown ``kid`` (a key rotation). Unknown-kid
refreshes are rate-limited *without* a blind spot: a request that arrives while a refresh
is not yet allowed waits for the next permitted fetch (at most ``min_refresh_s``) instead
of failing, and every request waiting for the lock is served by a fetch that started after
it arrived (single flight), so a flood of random ``kid`` values costs one fetch per
``min_refresh_s`` and never locks out a freshly rotated key.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from mlaas4hep.auth.settings import ALLOWED_ALGORITHMS, check_url
from mlaas4hep.errors import AuthError, SpecError

log = logging.getLogger(__name__)

#: Key type and curve each allowed algorithm needs; a key of another type is never used.
_RETRY_AFTER_FAILURE_S = 30.0
_KEY_SHAPE = {"RS256": ("RSA", None), "ES256": ("EC", "P-256")}


class KeyFetchError(AuthError):
    """The issuer's metadata or keys could not be fetched or made no sense."""


@dataclass(frozen=True)
class _Snapshot:
    keys: dict[str, dict[str, Any]]
    fetched_at: float  # when the fetch started: keys published later may be missing


class IssuerKeys:
    """Discovery + JWKS cache for one issuer; thread-safe, one instance per issuer.

    Args:
        issuer: the exact issuer identifier; the discovery document must repeat it.
        metadata_url: where the discovery document is.
        client: the HTTP client (its transport decides where requests go; the embedded
            local issuer plugs an in-process transport here).
        ttl_s: how long a fetched key set is used before it is fetched again.
        min_refresh_s: the shortest interval between two fetches.
        max_bytes: documents larger than this are rejected.
        clock: ``time.monotonic`` unless a test injects one.
    """

    def __init__(
        self,
        issuer: str,
        metadata_url: str,
        client: httpx.Client,
        *,
        ttl_s: float = 300.0,
        min_refresh_s: float = 1.0,
        max_bytes: int = 256 * 1024,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.issuer = issuer
        self._metadata_url = metadata_url
        self._client = client
        self._ttl = ttl_s
        self._min_refresh = min_refresh_s
        self._max_bytes = max_bytes
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None
        self._last_attempt = float("-inf")
        self.fetch_count = 0

    def key_for(self, kid: str, alg: str) -> PyJWK:
        """Return the verification key ``kid`` for algorithm ``alg``.

        Raises:
            AuthError: the key is unknown even after a refresh, or does not fit ``alg``.
            KeyFetchError: the issuer's documents cannot be fetched.
        """
        arrived = self._clock()
        snap = self._snapshot
        if snap is None or arrived - snap.fetched_at > self._ttl or kid not in snap.keys:
            snap = self._refresh(arrived, force=snap is not None and kid not in snap.keys)
        jwk = snap.keys.get(kid)
        if jwk is None:
            raise AuthError("token signed with an unknown key (kid)")
        return _to_key(jwk, alg)

    def _refresh(self, arrived: float, *, force: bool) -> _Snapshot:
        with self._lock:
            snap = self._snapshot
            # Single flight: a fetch that started after we arrived already answers us.
            if snap is not None and snap.fetched_at > arrived:
                return snap
            if snap is not None and not force and self._clock() - snap.fetched_at <= self._ttl:
                return snap
            wait = self._last_attempt + self._min_refresh - self._clock()
            if wait > 0:
                self._sleep(wait)
            started = self._last_attempt = self._clock()
            try:
                keys = self._fetch_keys()
            except KeyFetchError:
                if snap is None:
                    raise
                # Stale keys beat no keys when the issuer is briefly unreachable; retry
                # after a short while rather than on every request.
                log.warning("keeping cached keys of %s: refresh failed", self.issuer)
                retry_at = self._clock() - self._ttl + min(self._ttl, _RETRY_AFTER_FAILURE_S)
                self._snapshot = _Snapshot(keys=snap.keys, fetched_at=retry_at)
                return snap
            self._snapshot = _Snapshot(keys=keys, fetched_at=started)
            return self._snapshot

    def _fetch_keys(self) -> dict[str, dict[str, Any]]:
        self.fetch_count += 1
        meta = self._get_json(self._metadata_url)
        if meta.get("issuer") != self.issuer:
            # OIDC Discovery 1.0 s4.3: a mismatch means the document is not this issuer's.
            msg = f"discovery document of {self.issuer!r} names another issuer"
            raise KeyFetchError(msg)
        jwks_uri = meta.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            msg = f"discovery document of {self.issuer!r} has no jwks_uri"
            raise KeyFetchError(msg)
        try:
            check_url(jwks_uri, what="jwks_uri")
        except SpecError as exc:
            raise KeyFetchError(str(exc)) from exc
        raw = self._get_json(jwks_uri).get("keys")
        if not isinstance(raw, list):
            msg = f"JWKS of {self.issuer!r} has no 'keys' list"
            raise KeyFetchError(msg)
        keys = {k["kid"]: k for k in raw if isinstance(k, dict) and isinstance(k.get("kid"), str)}
        log.info("fetched %d signing keys of %s", len(keys), self.issuer)
        return keys

    def _get_json(self, url: str) -> dict[str, Any]:
        try:
            resp = self._client.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            msg = f"cannot fetch {url!r} of issuer {self.issuer!r}: {type(exc).__name__}"
            raise KeyFetchError(msg) from exc
        if resp.status_code != 200:
            msg = f"fetching {url!r} of issuer {self.issuer!r} gave HTTP {resp.status_code}"
            raise KeyFetchError(msg)
        if len(resp.content) > self._max_bytes:
            msg = f"{url!r} of issuer {self.issuer!r} is larger than {self._max_bytes} bytes"
            raise KeyFetchError(msg)
        try:
            doc = json.loads(resp.content)
        except ValueError as exc:
            msg = f"{url!r} of issuer {self.issuer!r} is not JSON"
            raise KeyFetchError(msg) from exc
        if not isinstance(doc, dict):
            msg = f"{url!r} of issuer {self.issuer!r} is not a JSON object"
            raise KeyFetchError(msg)
        return doc


def _to_key(jwk: dict[str, Any], alg: str) -> PyJWK:
    """Build the key, refusing keys whose type, curve, ``alg`` or ``use`` do not fit."""
    if alg not in ALLOWED_ALGORITHMS:
        raise AuthError("token algorithm not allowed")
    kty, crv = _KEY_SHAPE[alg]
    fits = (
        jwk.get("kty") == kty
        and (crv is None or jwk.get("crv") == crv)
        and jwk.get("alg", alg) == alg
        and jwk.get("use", "sig") == "sig"
    )
    if not fits:
        raise AuthError("token algorithm does not match the signing key")
    try:
        return PyJWK(jwk, algorithm=alg)
    except PyJWTError as exc:
        raise AuthError("issuer published an unusable signing key") from exc
