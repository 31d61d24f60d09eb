"""Reading over http(s):// from a real HTTP server (with Range support) on 127.0.0.1."""

from __future__ import annotations

import http.server
import io
import os
import re
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import awkward as ak
import pytest

from mlaas4hep.data.schema import inspect_tree
from mlaas4hep.data.sources import file_identity
from mlaas4hep.data.stream import iterate_file
from mlaas4hep.errors import MissingFileError


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """The standard static file handler plus single byte ranges (what uproot asks for)."""

    def send_head(self):  # type: ignore[no-untyped-def]
        path = self.translate_path(self.path)
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match is None or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        start = int(match.group(1))
        stop = min(int(match.group(2) or size - 1), size - 1)
        with open(path, "rb") as fh:
            fh.seek(start)
            body = fh.read(stop - start + 1)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{stop}/{size}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return io.BytesIO(body)

    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass


@pytest.fixture(scope="module")
def http_url(sample_dir: Path) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(RangeHandler, directory=str(sample_dir))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_http_read_equals_local(http_url: str, sample_files: dict[str, Path]) -> None:
    url = f"{http_url}/background.root"
    names = ["event", "nJet", "Jet_pt", "MET_pt"]
    remote = ak.concatenate([c.arrays for c in iterate_file(url, None, names, 1000)])
    local = ak.concatenate(
        [c.arrays for c in iterate_file(str(sample_files["background"]), None, names, 1000)]
    )
    assert len(remote) == 3000
    assert ak.array_equal(remote, local)
    assert inspect_tree(url).names() == inspect_tree(str(sample_files["background"])).names()
    ident = file_identity(url)
    assert ident["content-length"] == str(sample_files["background"].stat().st_size)
    assert ident["last-modified"]


def test_http_missing_file(http_url: str) -> None:
    with pytest.raises(MissingFileError, match=r"nothing\.root"):
        inspect_tree(f"{http_url}/nothing.root")
