"""What the inference routes share: error responses, the auth dependency, capped bodies.

Errors on these routes are ``{"error": "..."}`` (the V2 protocol's shape) whatever app
includes the router: ``ErrorRoute`` maps them itself instead of relying on app-wide
exception handlers. The status of each error comes from the one table both APIs use
(:mod:`mlaas4hep.http_status`), except ``UnsupportedEncoding``, a 415 on these routes
only. Token checks that are not a cache hit run in a worker thread, so a slow issuer never
stalls the event loop, and concurrent misses for the same credentials share one check.
Bodies are read capped and decoded per ``Content-Encoding``, and large answers
compressed per ``Accept-Encoding`` (the codings: serve/compression.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio.to_thread
import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from mlaas4hep.auth.principal import Principal
from mlaas4hep.errors import Mlaas4hepError, PayloadTooLarge
from mlaas4hep.http_status import http_status
from mlaas4hep.serve.compression import Inflater, compress, request_coding, response_coding
from mlaas4hep.serve.errors import UnsupportedEncoding

log = logging.getLogger(__name__)
#: What nginx logs for a client that closed the connection before the answer (never sent).
CLIENT_CLOSED = 499

#: Compressed chunks up to this size inflate on the event loop (at most ~16 MB of output
#: at deflate's ~1030:1 peak, a few ms); larger ones in a worker thread.
_INLINE_INFLATE_BYTES = 16 << 10
#: Responses up to this size are compressed on the event loop (~100 us at level 1).
_INLINE_DEFLATE_BYTES = 256 << 10

Authenticate = Callable[[str | None, str | None], Principal]
PrincipalDependency = Callable[[Request], Awaitable[Principal]]


class JSONBytes(Response):
    """A JSON response from already-encoded bytes (orjson), skipping re-encoding."""

    media_type = "application/json"


def json_response(content: Any, status_code: int = 200) -> JSONBytes:
    return JSONBytes(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), status_code)


def error_response(exc: Exception) -> Response:
    """Map an exception to ``{"error": message}`` with the right status and headers."""
    if isinstance(exc, RequestValidationError):
        return json_response({"error": f"invalid request: {exc.errors()}"}, 400)
    if isinstance(exc, ClientDisconnect):
        # The client left mid-body (a load generator stopping, a cancelled call): nobody
        # reads the answer, and it is not the server's error to log with a traceback.
        log.debug("client disconnected before its request body was read")
        return json_response({"error": "the client disconnected"}, CLIENT_CLOSED)
    if not isinstance(exc, Mlaas4hepError):
        log.exception("unexpected error in an inference route", exc_info=exc)
        return json_response({"error": "internal error; see the server log"}, 500)
    if isinstance(exc, UnsupportedEncoding):  # not in the shared table: inference only
        return json_response({"error": str(exc)}, 415)
    # The job API's table, so both APIs answer a domain error with the same status.
    answer = http_status(exc)
    response = json_response({"error": str(exc)}, answer.status)
    response.headers.update(answer.headers)
    return response


class ErrorRoute(APIRoute):
    """An APIRoute whose errors (dependencies included) become ``{"error": ...}``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # every error gets the protocol's shape, none leaks
                return error_response(exc)

        return handle


DirectEndpoint = Callable[[Request], Awaitable[Response]]


def direct_route(endpoint: DirectEndpoint) -> type[APIRoute]:
    """An ``APIRoute`` class whose requests go straight to ``endpoint(request)``.

    The route keeps its declared endpoint for the OpenAPI description only; requests skip
    FastAPI's dependency and parameter solving (about half of a single-row request's time
    in the framework) and its per-request exit stacks. *endpoint* reads the path
    parameters and authenticates itself; its errors become ``{"error": ...}`` as on
    ``ErrorRoute``.
    """

    async def handle(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Exception as exc:  # every error gets the protocol's shape, none leaks
            return error_response(exc)

    class DirectRoute(APIRoute):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.app = self._serve  # on its own router: not even FastAPI's exit stacks

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            return handle  # what a router that includes this one wraps and calls

        async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
            response = await handle(Request(scope, receive, send))
            await response(scope, receive, send)

    return DirectRoute


class AuthCache:
    """Remember successful authentications for a few seconds.

    Verifying a signed token costs ~0.2 ms (ES256), more than serving a small model;
    clients send the same token for many requests. Only successes are cached, keyed by
    the exact Authorization header and peer, for ``ttl_s`` at most (keep it well under the
    token lifetime and the 60 s ``exp`` leeway the validator allows anyway). Bounded: the
    oldest entries are dropped past ``max_entries``.
    """

    def __init__(self, authenticate: Authenticate, ttl_s: float, max_entries: int = 4096) -> None:
        self._authenticate = authenticate
        self._ttl = ttl_s
        self._max = max_entries
        self._entries: dict[tuple[str | None, str | None], tuple[float, Principal]] = {}

    def cached(self, header: str | None, peer: str | None) -> Principal | None:
        """The cached principal for these credentials, or None (never authenticates)."""
        hit = self._entries.get((header, peer))
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def __call__(self, header: str | None, peer: str | None) -> Principal:
        key = (header, peer)
        now = time.monotonic()
        hit = self._entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        principal = self._authenticate(header, peer)
        if len(self._entries) >= self._max:
            for old in list(self._entries)[: self._max // 4]:
                self._entries.pop(old, None)  # another thread may have dropped it
        self._entries[key] = (now + self._ttl, principal)
        return principal


def principal_dependency(authenticate: Authenticate) -> PrincipalDependency:
    """The one FastAPI dependency that turns the Authorization header into a Principal."""

    # With a cache, concurrent misses for the same credentials share one verification:
    # when a busy client's entry expires, every request it has in flight misses at once,
    # and a thread per request would verify the same token dozens of times (a latency
    # spike for all of them). Keyed like the cache; an entry lives while it runs.
    running: dict[tuple[str | None, str | None], asyncio.Task[Principal]] = {}

    async def verify(header: str | None, peer: str | None) -> Principal:
        # A miss may verify a signature or wait for the issuer's keys: never on the loop.
        return await anyio.to_thread.run_sync(authenticate, header, peer)

    def shared(header: str | None, peer: str | None) -> asyncio.Task[Principal]:
        key = (header, peer)
        task = running.get(key)
        if task is None:
            task = running[key] = asyncio.get_running_loop().create_task(verify(header, peer))

            def done(finished: asyncio.Task[Principal]) -> None:
                running.pop(key, None)
                if not finished.cancelled():
                    finished.exception()  # retrieved: every waiter may have gone

            task.add_done_callback(done)
        return task

    async def current_principal(request: Request) -> Principal:
        client = request.client
        header, peer = request.headers.get("authorization"), client.host if client else None
        if not isinstance(authenticate, AuthCache):
            return await verify(header, peer)
        hit = authenticate.cached(header, peer)
        if hit is not None:  # the hot path: a dict lookup, fine on the event loop
            return hit
        # Shielded: a caller that goes away does not cancel the others' verification.
        return await asyncio.shield(shared(header, peer))

    return current_principal


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, decoded per ``Content-Encoding``, refused past *limit* bytes.

    The cap applies to the body as sent and, for a gzip/deflate body, to its inflated
    size, checked while it streams in (serve/compression.py): a compression bomb is
    refused with PayloadTooLarge after inflating at most *limit* + 1 bytes. An unknown
    coding is UnsupportedEncoding (415), a corrupt stream InvalidInput (400).
    """
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(_too_large(int(length), limit))
    coding = request_coding(request.headers.get("content-encoding"))
    if coding is not None:
        return await _inflate_body(request, coding, limit)
    if length is not None and length.isdigit():
        return await request.body()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(_too_large(size, limit))
        chunks.append(chunk)
    return b"".join(chunks)


async def _inflate_body(request: Request, coding: str, limit: int) -> bytes:
    inflater, size = Inflater(coding, limit), 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(_too_large(size, limit))
        if len(chunk) <= _INLINE_INFLATE_BYTES:
            inflater.feed(chunk)
        else:  # a large chunk may inflate ~1000x: not on the event loop
            await anyio.to_thread.run_sync(inflater.feed, chunk)
    return inflater.finish()


def _too_large(size: int, limit: int) -> str:
    return f"the request body has {size}+ bytes, over the limit of {limit}; send fewer rows"


async def encoded(
    request: Request, content: bytes, headers: dict[str, str], min_bytes: int
) -> bytes:
    """*content*, compressed when the client accepts gzip/deflate and it is worth it.

    Bodies under *min_bytes* go out as they are, without looking at the request (the
    single-row path pays one comparison). Otherwise ``Content-Encoding`` and ``Vary``
    are added to *headers*; large bodies are compressed in a worker thread.
    """
    if len(content) < min_bytes:
        return content
    headers["Vary"] = "Accept-Encoding"
    coding = response_coding(request.headers.get("accept-encoding"))
    if coding is None:
        return content
    headers["Content-Encoding"] = coding
    if len(content) <= _INLINE_DEFLATE_BYTES:
        return compress(coding, content)
    return await anyio.to_thread.run_sync(compress, coding, content)
