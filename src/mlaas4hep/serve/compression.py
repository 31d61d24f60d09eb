"""HTTP content codings of inference bodies: capped request inflation, response deflation.

Pure functions and one small class over bytes (no HTTP framework), used by the routes.

A compressed request body is hostile input: a few kilobytes of gzip inflate to
gigabytes (deflate reaches ~1030:1). ``Inflater`` therefore never asks zlib for more
output than is still allowed: the cap applies to the **decompressed** size, is checked
while the body streams in, and a body over it is refused after at most ``limit + 1``
inflated bytes, whatever its compressed size (which the caller caps as well). A
truncated or corrupt stream is an ``InvalidInput`` naming the coding; a coding other
than ``gzip``, ``x-gzip``, ``deflate`` or ``identity`` is ``UnsupportedEncoding`` (415).

``deflate`` is the zlib format (RFC 9110 s8.4.1.2, what ``tritonclient`` sends); a raw
deflate stream, which some clients send under that name, is recognised by its missing
zlib header and accepted too. A gzip body may hold several members (RFC 1952), as
``cat a.gz b.gz`` makes.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from mlaas4hep.errors import PayloadTooLarge
from mlaas4hep.serve.errors import InvalidInput, UnsupportedEncoding

GZIP, DEFLATE = "gzip", "deflate"
SUPPORTED = (GZIP, DEFLATE)
_ALIASES = {"gzip": GZIP, "x-gzip": GZIP, "deflate": DEFLATE}
_NAMES = {GZIP: ("gzip", "x-gzip"), DEFLATE: ("deflate",)}
_GZIP_WBITS = 16 + zlib.MAX_WBITS
#: Fast: responses are mostly float tensors, which compress little whatever the level,
#: and the event loop (or a worker thread) pays for every level above this.
RESPONSE_LEVEL = 1


def request_coding(header: str | None) -> str | None:
    """The coding named by a ``Content-Encoding`` header: ``gzip``, ``deflate`` or None.

    None for no header or ``identity``; UnsupportedEncoding for anything else, or for
    several codings stacked (``gzip, deflate``), which no inference client sends.
    """
    if header is None:
        return None
    codings = [c.strip().lower() for c in header.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in _ALIASES:
        return _ALIASES[codings[0]]
    msg = (
        f"Content-Encoding {header!r} is not supported; send the body uncompressed or "
        f"with one of: gzip, deflate"
    )
    raise UnsupportedEncoding(msg)


class Inflater:
    """Decompress a request body fed in chunks, refusing it once it inflates past *limit*.

    ``feed`` each chunk as it arrives, then ``finish`` for the whole body. Memory is the
    output so far (at most *limit* bytes) plus one chunk: zlib is never asked for more
    output than the cap still allows, so a bomb stops inflating at the cap.
    """

    def __init__(self, coding: str, limit: int) -> None:
        if coding not in SUPPORTED:
            msg = f"unknown content coding {coding!r}; known: {', '.join(SUPPORTED)}"
            raise UnsupportedEncoding(msg)
        self.coding = coding
        self._limit = limit
        self._out: list[bytes] = []
        self._size = 0
        self._read = 0
        self._decoder: zlib._Decompress | None = None  # None between gzip members
        self._head = b""  # the first bytes of a deflate body, until its format is known

    @property
    def size(self) -> int:
        """Decompressed bytes produced so far."""
        return self._size

    def feed(self, chunk: bytes) -> None:
        """Inflate one compressed chunk; PayloadTooLarge past the cap, InvalidInput if corrupt."""
        self._read += len(chunk)
        if self.coding == DEFLATE and self._decoder is None:
            self._head += chunk
            if len(self._head) < 2:
                return
            chunk, self._head = self._head, b""
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS if _zlib_header(chunk) else -15)
        while chunk:
            chunk = self._inflate(chunk)

    def _inflate(self, data: bytes) -> bytes:
        """Inflate *data* up to the cap; return what is left for a next gzip member."""
        decoder = self._decoder
        if decoder is None:
            decoder = self._decoder = zlib.decompressobj(_GZIP_WBITS)
        room = self._limit - self._size + 1  # one byte more than allowed proves the excess
        try:
            while data:
                out = decoder.decompress(data, room)
                self._take(out)
                room -= len(out)
                data = decoder.unconsumed_tail
                if decoder.eof:
                    break
        except zlib.error as exc:
            raise InvalidInput(self._corrupt(str(exc))) from exc
        if not decoder.eof:
            return b""
        rest = decoder.unused_data
        if self.coding == DEFLATE:
            if rest:
                msg = f"{len(rest)} bytes follow the end of the deflate stream"
                raise InvalidInput(self._corrupt(msg))
            return b""
        self._decoder = None  # a next gzip member, if any
        return rest

    def _take(self, out: bytes) -> None:
        if not out:
            return
        self._size += len(out)
        if self._size > self._limit:
            msg = (
                f"the request body inflates past {self._limit} bytes (from {self._read} "
                f"{self.coding} bytes read so far), over the limit; send fewer rows"
            )
            raise PayloadTooLarge(msg)
        self._out.append(out)

    def finish(self) -> bytes:
        """The whole decompressed body; InvalidInput if the stream stopped short."""
        if self.coding == DEFLATE and self._decoder is None:
            if self._head:  # one byte: too short for any deflate stream
                raise InvalidInput(self._corrupt("the body ends after 1 byte"))
            return b""
        decoder = self._decoder
        if decoder is not None and not decoder.eof:
            raise InvalidInput(self._corrupt("the body ends before the end of the stream"))
        return b"".join(self._out)

    def _corrupt(self, detail: str) -> str:
        return (
            f"the request body is not valid {self.coding} data ({detail}); check the "
            f"Content-Encoding header, or send the body uncompressed"
        )


def _zlib_header(data: bytes) -> bool:
    """Whether *data* starts with a zlib header (CM 8, check bits), not raw deflate."""
    return data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0


def inflate(coding: str, chunks: Iterable[bytes], limit: int) -> bytes:
    """Decompress a whole body given as *chunks*, capped at *limit* inflated bytes."""
    inflater = Inflater(coding, limit)
    for chunk in chunks:
        inflater.feed(chunk)
    return inflater.finish()


def response_coding(accept_encoding: str | None) -> str | None:
    """The coding to answer with, from an ``Accept-Encoding`` header: gzip, deflate or None.

    The highest ``q`` wins; gzip on a tie; ``*`` stands for any coding not named;
    ``q=0`` refuses a coding. None when neither is acceptable (answer uncompressed).
    """
    if not accept_encoding:
        return None
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        weights[coding.strip().lower()] = _quality(params)
    best, best_q = None, 0.0
    for coding in SUPPORTED:
        named = [weights[c] for c in _NAMES[coding] if c in weights]
        q = max(named) if named else weights.get("*", 0.0)
        if q > best_q:
            best, best_q = coding, q
    return best


def _quality(params: str) -> float:
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0  # a malformed weight refuses rather than guesses
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def compress(coding: str, body: bytes) -> bytes:
    """*body* encoded as *coding* (gzip or deflate = zlib format) at a fast level."""
    wbits = _GZIP_WBITS if coding == GZIP else zlib.MAX_WBITS
    encoder = zlib.compressobj(RESPONSE_LEVEL, zlib.DEFLATED, wbits)
    return encoder.compress(body) + encoder.flush()
