"""Signing keys of one issuer: OIDC discovery, JWKS fetch, cache and refresh.

``IssuerKeys.key_for(kid)`` returns a verification key. The cache is refreshed when its
TTL has passed and when a token names an unknown ``kid`` (a key rotation), under three
rules that keep a flood of made-up ``kid`` values cheap (the habit of go-oidc's remote key
set and of Microsoft.IdentityModel's configuration manager):

- single flight: one fetch at a time; callers that arrive while it runs wait for it (in
  their worker thread, never on the event loop, at most ``wait_s``) and share its answer;
- rate limit: at most one fetch per ``min_refresh_s``; a miss inside that window is
  answered at once from the cached keys (401 for the unknown ``kid``) -- nobody sleeps;
- negative cache: a ``kid`` still absent from a fetch that started after the token
  arrived is refused at once for ``unknown_kid_ttl_s`` (bounded to ``max_unknown`` kids).

A rotated key is therefore usable at most ``min_refresh_s`` after its first token (issuers
publish a key before signing with it, RFC 7517 s5 / OIDC Core s10.1.1).

When the issuer cannot be reached and no keys are cached, ``key_for`` raises
:class:`~mlaas4hep.errors.IssuerUnavailable` (503 + Retry-After) whose message names no
URL; the log gets the details. Cached keys outlive a failed refresh (stale beats none).
"""

from __future__ import annotations

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
from mlaas4hep.documents import load_json
from mlaas4hep.errors import (
    AuthError,
    IssuerUnavailable,
    Mlaas4hepError,
    PayloadTooLarge,
    SpecError,
)

log = logging.getLogger(__name__)

_RETRY_AFTER_FAILURE_S = 30.0  # stale keys are kept this long after a failed refresh
_BACKOFF_AFTER_FAILURE_S = 5.0  # no keys at all: the next fetch is tried after this
#: Key type and curve each allowed algorithm needs; a key of another type is never used.
_KEY_SHAPE = {"RS256": ("RSA", None), "ES256": ("EC", "P-256")}
_UNKNOWN_KEY = "token signed with an unknown key (kid)"
_UNAVAILABLE = "the token issuer cannot be reached to check the token's signing key; retry later"


class KeyFetchError(Mlaas4hepError):
    """The issuer's metadata or keys could not be fetched or made no sense.

    Internal: the message names URLs, so it is logged, and callers of ``key_for`` get an
    :class:`IssuerUnavailable` instead.
    """


class UnknownKeyError(AuthError):
    """The token names a ``kid`` the issuer does not publish (the caller adds the remedy)."""


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
        unknown_kid_ttl_s: how long a ``kid`` found missing by a fetch is refused without
            another fetch (at least ``min_refresh_s``).
        max_unknown: the most ``kid`` values the negative cache remembers.
        wait_s: the longest a caller waits for another caller's fetch.
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
        unknown_kid_ttl_s: float = 60.0,
        max_unknown: int = 4096,
        wait_s: float = 10.0,
        max_bytes: int = 256 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self._metadata_url = metadata_url
        self._client = client
        self._ttl = ttl_s
        self._min_refresh = min_refresh_s
        self._unknown_ttl = max(unknown_kid_ttl_s, min_refresh_s)
        self._max_unknown = max_unknown
        self._wait = wait_s
        self._max_bytes = max_bytes
        self._clock = clock
        self._fetch_lock = threading.Lock()  # single flight
        self._snapshot: _Snapshot | None = None
        self._last_attempt = float("-inf")
        self._unknown: dict[str, float] = {}  # kid -> refused until (monotonic)
        self._unknown_lock = threading.Lock()
        self.fetch_count = 0

    def key_for(self, kid: str, alg: str) -> PyJWK:
        """Return the verification key ``kid`` for algorithm ``alg``.

        Never sleeps; blocks only while another caller's fetch is in flight.

        Raises:
            UnknownKeyError: the key is unknown (now or recently).
            AuthError: the key does not fit ``alg``.
            IssuerUnavailable: no keys are cached and the issuer cannot be reached.
        """
        arrived = self._clock()
        snap = self._snapshot
        fresh = snap is not None and arrived - snap.fetched_at <= self._ttl
        if snap is not None and fresh and kid in snap.keys:
            return _to_key(snap.keys[kid], alg)
        if self._unknown.get(kid, float("-inf")) > arrived:
            raise UnknownKeyError(_UNKNOWN_KEY)
        snap = self._refresh(arrived)
        jwk = snap.keys.get(kid)
        if jwk is None:
            if snap.fetched_at >= arrived:  # checked against a fetch newer than the token
                self._remember_unknown(kid, snap.fetched_at + self._unknown_ttl)
            raise UnknownKeyError(_UNKNOWN_KEY)
        return _to_key(jwk, alg)

    def _refresh(self, arrived: float) -> _Snapshot:
        if not self._fetch_lock.acquire(timeout=self._wait):
            return self._cached_or_unavailable(self._wait)
        try:
            snap = self._snapshot
            # Single flight: a fetch that started after we arrived already answers us.
            if snap is not None and snap.fetched_at >= arrived:
                return snap
            now = self._clock()
            wait = self._last_attempt + self._min_refresh - now
            if wait > 0:  # rate limited: answer from the cache, never sleep
                return self._cached_or_unavailable(wait)
            self._last_attempt = now
            try:
                keys = self._fetch_keys()
            except KeyFetchError as exc:
                return self._after_failure(snap, exc)
            self._snapshot = _Snapshot(keys=keys, fetched_at=now)
            return self._snapshot
        finally:
            self._fetch_lock.release()

    def _cached_or_unavailable(self, retry_after: float) -> _Snapshot:
        snap = self._snapshot
        if snap is None:
            raise IssuerUnavailable(_UNAVAILABLE, retry_after=retry_after)
        return snap

    def _after_failure(self, snap: _Snapshot | None, exc: KeyFetchError) -> _Snapshot:
        log.warning("cannot refresh the signing keys of %s: %s", self.issuer, exc)
        if snap is None:
            # Back off a little: every request in the meantime gets an immediate 503.
            backoff = max(self._min_refresh, _BACKOFF_AFTER_FAILURE_S)
            self._last_attempt = self._clock() + backoff - self._min_refresh
            raise IssuerUnavailable(_UNAVAILABLE, retry_after=backoff) from exc
        # Stale keys beat no keys when the issuer is briefly unreachable; retry after a
        # short while rather than on every request.
        retry_at = self._clock() - self._ttl + min(self._ttl, _RETRY_AFTER_FAILURE_S)
        self._snapshot = _Snapshot(keys=snap.keys, fetched_at=max(snap.fetched_at, retry_at))
        return snap

    def _remember_unknown(self, kid: str, until: float) -> None:
        with self._unknown_lock:
            if len(self._unknown) >= self._max_unknown:
                now = self._clock()
                live = [(k, t) for k, t in self._unknown.items() if t > now]
                # Still full of live entries: forget the oldest half (insertion order).
                keep = live[len(live) // 2 :] if len(live) >= self._max_unknown // 2 else live
                self._unknown = dict(keep)
            self._unknown[kid] = until

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
            doc = load_json(resp.content, what=repr(url), limit=self._max_bytes)
        except (ValueError, PayloadTooLarge) as exc:  # DocumentError is a ValueError
            msg = f"{url!r} of issuer {self.issuer!r} is not JSON (or nested too deep)"
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
