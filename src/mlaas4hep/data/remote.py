"""Remote reading policy: XRootD client settings, proxies, transient errors and retries.

The physical reads go through uproot's fsspec source (``fsspec-xrootd`` for ``root://``,
``aiohttp`` for ``http(s)://``); this module holds what we add around them:

* ``configure_client`` sets the process-wide XRootD client knobs once (how often request
  timeouts are checked, how long a connection attempt may take), so ``read_timeout`` is
  honoured within a second instead of the client's default 15 s resolution;
* ``through_proxy`` rewrites ``root://origin//path`` for a forwarding proxy
  (``root://proxy//root://origin//path``) or a direct proxy / XCache (``root://proxy//path``);
* ``is_transient`` tells a failure worth retrying (expired request, reset or refused
  connection) from one that is not (no such file, permission denied, a damaged file);
* ``Retrier`` counts failures against a ``RemoteSpec`` budget, sleeps with exponential
  backoff and jitter, and builds the final ``DataSourceError`` that names the URL, the
  operation and the last error;
* ``forget_handles`` drops fsspec-xrootd's cached open handle of a URL, so that a retry
  opens a fresh connection instead of reusing the broken one.
"""

from __future__ import annotations

import contextlib
import importlib
import random
import time
import urllib.parse
from typing import Any

from mlaas4hep.errors import DataSourceError
from mlaas4hep.spec import RemoteSpec

XROOTD_SCHEMES = ("root", "xroot")
# Lower-cased fragments of error texts (XRootD client, sockets, aiohttp, our reachability
# probe) that mean "the server or the network had a hiccup", not "the request is wrong".
_TRANSIENT = (
    "operation expired",
    "connection reset",
    "connection refused",
    "connection error",
    "connection aborted",
    "broken pipe",
    "socket error",
    "stream error",
    "timed out",
    "timeout",
    "cannot reach",
    "server disconnected",
    "temporarily unavailable",
    # The XRootD bindings on a handle whose connection died and could not be recovered.
    "operation on closed file",
    "invalid operation",
)
_TRANSIENT_TYPES = (ConnectionError, TimeoutError)


def configure_client(spec: RemoteSpec) -> None:
    """Apply the XRootD client settings of ``spec`` (process-wide; a no-op without XRootD).

    The client checks request deadlines every ``TimeoutResolution`` seconds (default 15),
    which would stretch a 5 s ``read_timeout`` to 15 s; 1 s keeps timeouts honest. A
    connection attempt gets ``open_timeout`` seconds and is made once per request: our
    retries, not the client's, decide how long a dead server is waited for.
    """
    try:  # lazily, typed as Any: the bindings are an optional dependency without stubs
        client: Any = importlib.import_module("XRootD.client")
    except ImportError:  # root:// then fails at open time with the install hint
        return
    client.EnvPutInt("TimeoutResolution", 1)
    client.EnvPutInt("ConnectionWindow", spec.open_timeout)
    client.EnvPutInt("ConnectionRetry", 1)
    client.EnvPutInt("StreamErrorWindow", 1)  # after a dead connection, let a retry reconnect


def through_proxy(url: str, proxy: str, mode: str = "forward") -> str:
    """Route a ``root://`` URL through ``proxy`` (``forward`` or ``direct``); others unchanged.

    ``forward``: ``root://proxy//root://origin//path`` (an XRootD forwarding proxy reaches
    any permitted origin named in the URL). ``direct``: ``root://proxy//path`` (an XCache or
    a proxy configured with one origin serves the same paths).
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in XROOTD_SCHEMES:
        return url
    proxy = proxy.rstrip("/")
    if mode == "direct":
        return f"{proxy}//{parts.path.lstrip('/')}" + (f"?{parts.query}" if parts.query else "")
    return f"{proxy}//{url}"


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` (or an error it was raised from) looks like a passing failure."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _TRANSIENT_TYPES):
            return True
        text = str(current).lower()
        if any(marker in text for marker in _TRANSIENT):
            return True
        current = current.__cause__ or current.__context__
    return False


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The error text on one line, shortened to ``limit`` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


class Retrier:
    """Counts consecutive transient failures of one URL against the ``RemoteSpec`` budget.

    ``failed(exc, operation)`` either sleeps (backoff with jitter) and returns, so the caller
    retries, or raises the final ``DataSourceError``. ``succeeded()`` resets the count: a
    read that makes progress between failures keeps going.
    """

    def __init__(self, url: str, spec: RemoteSpec, rng: random.Random | None = None) -> None:
        self.url, self.spec = url, spec
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._failures = 0
        self._since = time.monotonic()

    def delay(self, failures: int) -> float:
        """Seconds to wait before retry number ``failures`` (1-based): full backoff, less
        a random jitter of up to half, so many clients do not retry in lock step."""
        base = min(self.spec.backoff * 2 ** (failures - 1), self.spec.max_backoff)
        return float(base * (1.0 - 0.5 * self._rng.random()))

    def succeeded(self) -> None:
        self._failures = 0
        self._since = time.monotonic()

    def failed(self, exc: BaseException, operation: str) -> None:
        """Wait before the next try, or raise ``DataSourceError`` when the budget is spent."""
        self._failures += 1
        if self._failures > self.spec.retries:
            elapsed = time.monotonic() - self._since
            msg = (
                f"{operation} {self.url!r} failed after {self._failures} attempt(s) in "
                f"{elapsed:.1f} s; last error: {one_line(exc)}; check that the server is up "
                "(or raise data.remote.retries / data.remote.read_timeout)"
            )
            raise DataSourceError(msg) from exc
        forget_handles(self.url, self.spec)
        time.sleep(self.delay(self._failures))


def forget_handles(url: str, spec: RemoteSpec) -> None:
    """Drop fsspec-xrootd's cached open handle of ``url`` (it may be broken)."""
    if urllib.parse.urlsplit(url).scheme not in XROOTD_SCHEMES:
        return
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(url, timeout=spec.read_timeout)
    except (ImportError, ValueError, OSError):
        return
    # invalidate_cache pops the handle before closing it; closing a handle whose
    # connection died fails, which is expected here.
    with contextlib.suppress(OSError, TimeoutError):
        fs.invalidate_cache(path)


def open_options(spec: RemoteSpec) -> dict[str, Any]:
    """Keyword arguments for ``uproot.open`` of a remote file (passed on to fsspec)."""
    return {"timeout": spec.read_timeout}
