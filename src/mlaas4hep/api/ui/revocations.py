"""Signed-out sessions: a revocation list of session tokens, kept until they expire.

A session is a bearer token (a JWT) in a cookie, valid by itself until its ``exp``.
Clearing the cookie on sign-out does not end it: a copy (a stolen cookie, a shared
computer's disk) would still work for hours. So sign-out records the token's ``jti`` (or,
for a token without one, its SHA-256) with its expiry, and every request through the
service's authenticator (API, UI, inference) is refused when its token is listed. This is
the OAuth 2.0 token revocation model (RFC 7009) applied at the resource server.

The list lives in ``data_dir/auth/revoked-sessions`` (one ``key expiry`` line per token,
appended with fsync), so a sign-out survives a restart exactly as the sessions do (the
local issuer's key lives in ``data_dir`` too). Replicas sharing ``data_dir`` see each
other's sign-outs: the file is re-read when its size or mtime changes. Expired entries are
dropped when the file is rewritten at start-up.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mlaas4hep.auth.principal import Principal
from mlaas4hep.errors import AuthError

_MAX_ENTRIES = 1_000_000  # ~60 MB: more sign-outs than that within a session lifetime is abuse


def token_key(token: str) -> tuple[str, float]:
    """The revocation key of a *validated* compact JWT and its expiry (epoch seconds).

    Only call it on a token the authenticator accepted: the claims are read, not checked.
    """
    claims: dict[str, Any] = {}
    parts = token.split(".")
    if len(parts) == 3:
        try:
            padded = parts[1] + "=" * (-len(parts[1]) % 4)
            loaded = json.loads(base64.urlsafe_b64decode(padded))
            claims = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            claims = {}
    jti = claims.get("jti")
    key = f"jti:{jti}" if isinstance(jti, str) and jti else "sha256:" + _digest(token)
    exp = claims.get("exp")
    expiry = float(exp) if isinstance(exp, int | float) else time.time() + 7 * 24 * 3600
    return key, expiry


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class RevokedSessions:
    """The revocation list (in memory only when *path* is None)."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._entries: dict[str, float] = {}
        self._seen: tuple[int, int] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._compact()

    def revoke(self, token: str) -> None:
        """List a validated token until its expiry."""
        key, expiry = token_key(token)
        with self._lock:
            self._entries[key] = expiry
            if self._path is not None and len(self._entries) <= _MAX_ENTRIES:
                with self._file_lock():  # not while another replica compacts
                    fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                    with os.fdopen(fd, "a") as fh:
                        fh.write(f"{key} {expiry:.0f}\n")
                        fh.flush()
                        os.fsync(fh.fileno())

    def is_revoked(self, token: str) -> bool:
        """Whether *token* was signed out (and has not expired since)."""
        key, _ = token_key(token)
        with self._lock:
            self._refresh()
            expiry = self._entries.get(key)
        return expiry is not None and expiry > time.time()

    def _refresh(self) -> None:
        if self._path is None:
            return
        try:
            st = self._path.stat()
        except FileNotFoundError:
            return
        if (st.st_size, st.st_mtime_ns) != self._seen:
            self._entries.update(_read(self._path))
            self._seen = (st.st_size, st.st_mtime_ns)

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        """An exclusive lock shared by every replica on this data directory."""
        assert self._path is not None
        lock = self._path.with_name(f".{self._path.name}.lock")
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _compact(self) -> None:
        assert self._path is not None
        now = time.time()
        # Replicas start at once (a roll-out): each compacts under the lock, through its
        # own temporary file, so none loses another's entries or renames a file away.
        with self._file_lock():
            live = {k: e for k, e in _read(self._path).items() if e > now}
            fd, tmp = tempfile.mkstemp(prefix=f".{self._path.name}.", dir=self._path.parent)
            try:
                with os.fdopen(fd, "w") as fh:
                    fh.writelines(f"{k} {e:.0f}\n" for k, e in live.items())
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self._path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        self._entries = live
        self._refresh()


def _read(path: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        lines: Iterable[str] = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        key, _, expiry = line.partition(" ")
        try:
            out[key] = float(expiry)
        except ValueError:
            continue  # a torn last line after a crash
    return out


class RevokingAuthenticator:
    """Wraps an authenticator: a signed-out token is refused like an expired one."""

    def __init__(self, inner: Any, revoked: RevokedSessions) -> None:
        self._inner = inner
        self.revoked = revoked
        self.issuers = tuple(getattr(inner, "issuers", ()))

    def authenticate(
        self,
        authorization_header: str | None,
        peer: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> Principal:
        """The inner authenticator's principal, unless the bearer token was signed out.

        Raises:
            AuthError: as the inner one, or "session signed out" (-> 401).
        """
        principal: Principal = self._inner.authenticate(authorization_header, peer, headers)
        scheme, _, token = (authorization_header or "").partition(" ")
        if scheme.lower() == "bearer" and token and self.revoked.is_revoked(token.strip()):
            raise AuthError("session signed out; sign in again")
        return principal

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
