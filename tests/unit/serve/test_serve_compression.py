"""The content codings of inference bodies: capped inflation, coding negotiation."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlaas4hep.errors import PayloadTooLarge
from mlaas4hep.serve.compression import (
    Inflater,
    compress,
    inflate,
    request_coding,
    response_coding,
)
from mlaas4hep.serve.errors import InvalidInput, UnsupportedEncoding


def _pack(coding: str, data: bytes) -> bytes:
    return gzip.compress(data) if coding == "gzip" else zlib.compress(data)


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


@given(
    data=st.binary(max_size=20_000),
    coding=st.sampled_from(["gzip", "deflate"]),
    chunk=st.integers(1, 5000),
)
@settings(max_examples=60, deadline=None)
def test_inflate_round_trips_in_any_chunking(data: bytes, coding: str, chunk: int) -> None:
    packed = _pack(coding, data)
    assert inflate(coding, _chunks(packed, chunk), limit=len(data)) == data


def test_exactly_the_cap_passes_one_byte_more_does_not() -> None:
    data = b"x" * 10_000
    assert inflate("gzip", [gzip.compress(data)], limit=10_000) == data
    with pytest.raises(PayloadTooLarge, match="inflates past 9999 bytes"):
        inflate("gzip", [gzip.compress(data)], limit=9_999)


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_a_bomb_stops_at_the_cap_with_flat_memory(coding: str) -> None:
    bomb = _pack(coding, bytes(200 << 20))  # 200 MB of zeros, ~200 kB compressed
    assert len(bomb) < 400_000
    cap = 1 << 20
    inflater = Inflater(coding, cap)

    def feed_all() -> None:
        for chunk in _chunks(bomb, 65536):
            inflater.feed(chunk)

    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge):
            feed_all()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert inflater.size <= cap + 1
    assert peak < 3 * cap  # the capped output and a chunk, never the 200 MB


def test_gzip_members_are_concatenated() -> None:
    packed = gzip.compress(b"first ") + gzip.compress(b"second")
    assert inflate("gzip", _chunks(packed, 7), limit=100) == b"first second"


def test_raw_deflate_is_accepted_as_deflate() -> None:
    encoder = zlib.compressobj(6, zlib.DEFLATED, -15)
    raw = encoder.compress(b"raw deflate stream" * 10) + encoder.flush()
    assert inflate("deflate", _chunks(raw, 1), limit=1000) == b"raw deflate stream" * 10


@pytest.mark.parametrize(
    ("coding", "body", "words"),
    [
        ("gzip", gzip.compress(b"abc" * 1000)[:-10], "ends before the end of the stream"),
        ("deflate", zlib.compress(b"abc" * 1000)[:-2], "ends before the end of the stream"),
        ("gzip", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03garbage", "not valid gzip"),
        ("gzip", b"not gzip at all", "not valid gzip"),
        ("deflate", zlib.compress(b"abc") + b"tail", "bytes follow the end"),
        ("gzip", gzip.compress(b"abc") + b"tail-not-a-member", "not valid gzip"),
        ("deflate", b"x", "ends after 1 byte"),
    ],
)
def test_truncated_or_corrupt_streams_are_invalid_input(
    coding: str, body: bytes, words: str
) -> None:
    with pytest.raises(InvalidInput, match=words) as caught:
        inflate(coding, _chunks(body, 3), limit=1 << 20)
    assert "Content-Encoding" in str(caught.value)
    assert not isinstance(caught.value, UnsupportedEncoding)


def test_an_empty_body_stays_empty() -> None:
    assert inflate("gzip", [], limit=10) == b""
    assert inflate("deflate", [b""], limit=10) == b""


@pytest.mark.parametrize(
    ("header", "coding"),
    [
        (None, None),
        ("", None),
        ("identity", None),
        ("gzip", "gzip"),
        ("GZip", "gzip"),
        ("x-gzip", "gzip"),
        (" deflate ", "deflate"),
        ("identity, gzip", "gzip"),
    ],
)
def test_request_coding(header: str | None, coding: str | None) -> None:
    assert request_coding(header) == coding


@pytest.mark.parametrize("header", ["br", "zstd", "compress", "gzip, deflate", "gzip, gzip"])
def test_unknown_or_stacked_codings_are_unsupported(header: str) -> None:
    with pytest.raises(UnsupportedEncoding, match="one of: gzip, deflate"):
        request_coding(header)
    with pytest.raises(UnsupportedEncoding):
        Inflater("br", 10)


@pytest.mark.parametrize(
    ("header", "coding"),
    [
        (None, None),
        ("", None),
        ("identity", None),
        ("br", None),
        ("gzip", "gzip"),
        ("deflate", "deflate"),
        ("deflate, gzip", "gzip"),  # a tie: gzip
        ("gzip;q=0.5, deflate", "deflate"),
        ("gzip;q=0, deflate;q=0", None),
        ("*", "gzip"),
        ("*;q=0.2, gzip;q=0", "deflate"),
        ("x-gzip", "gzip"),
        ("gzip;q=nonsense", None),
        ("gzip;q=7", None),
        ("br;q=1.0, gzip;q=0.8, *;q=0.1", "gzip"),
    ],
)
def test_response_coding_follows_accept_encoding(header: str | None, coding: str | None) -> None:
    assert response_coding(header) == coding


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_compress_is_what_clients_decode(coding: str) -> None:
    body = b'{"outputs": [1, 2, 3]}' * 100
    packed = compress(coding, body)
    assert len(packed) < len(body)
    assert (gzip.decompress(packed) if coding == "gzip" else zlib.decompress(packed)) == body
