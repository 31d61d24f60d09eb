"""One published model version's bundle as a streamed ``tar.gz`` (the download route's body).

Only the allow-listed bundle files (:data:`mlaas4hep.artifact.PUBLISHED_FILES`) are sent,
each opened without following a link, relative to a descriptor of the version directory
reached from the repository root one component at a time (:mod:`mlaas4hep.serve.intake`):
a link, FIFO, hard link or oversized file in a version directory is refused, never sent.
Every file is opened (and checked) before the first byte goes out, so a refusal is an
error answer, not a truncated archive. Memory is one read chunk plus gzip's window.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import IO

from mlaas4hep.artifact import MODEL_FILE, PUBLISHED_FILES
from mlaas4hep.serve.intake import IntakeLimits, UnsafeModelFiles, open_directory, open_plain

_CHUNK = 1 << 20
#: The response header naming the version a download holds (its URL may say ``latest``).
MODEL_VERSION_HEADER = "Mlaas4hep-Model-Version"


@dataclass
class BundleArchive:
    """The opened files of one model version; iterate once for the ``tar.gz`` bytes."""

    name: str
    version: int
    files: list[tuple[str, IO[bytes], int]] = field(default_factory=list)

    @property
    def filename(self) -> str:
        """``NAME-VERSION.tar.gz`` (model names are ``[A-Za-z0-9_.-]``: safe in a header)."""
        return f"{self.name}-{self.version}.tar.gz"

    def __iter__(self) -> Iterator[bytes]:
        # The tar stream is written by hand (header, data in chunks, padding) so that no
        # more than one chunk is ever held: tarfile.addfile copies a whole member at once.
        sink = _Sink()
        try:
            with gzip.GzipFile(fileobj=sink, mode="wb", mtime=0) as gz:
                for member, source, size in self.files:
                    info = tarfile.TarInfo(member)
                    info.size, info.mode, info.mtime = size, 0o644, 0
                    gz.write(info.tobuf(format=tarfile.USTAR_FORMAT))
                    for chunk in _exact_chunks(source, size, member):
                        gz.write(chunk)
                        yield sink.take()
                    gz.write(b"\0" * (-size % tarfile.BLOCKSIZE))
                gz.write(b"\0" * (2 * tarfile.BLOCKSIZE))  # the end-of-archive marker
            yield sink.take()
        finally:
            self.close()

    def close(self) -> None:
        """Close every opened file (iterating closes them too)."""
        for _, source, _ in self.files:
            source.close()
        self.files = []


def open_bundle(
    root: Path, name: str, version: int, limits: IntakeLimits | None = None
) -> BundleArchive:
    """Open the allow-listed files of ``root/name/version``; UnsafeModelFiles if one is not
    a plain file within the caps (the caller checked the name, version and rights)."""
    limits = limits or IntakeLimits()
    archive = BundleArchive(name, version)
    dir_fd = open_directory(root, PurePath(name, str(version)))
    try:
        total = 0
        for member in PUBLISHED_FILES:
            cap = limits.max_model_bytes if member == MODEL_FILE else limits.max_file_bytes
            try:
                fd = open_plain(dir_fd, member, min(cap, limits.max_total_bytes - total))
            except FileNotFoundError:
                continue
            source = os.fdopen(fd, "rb")
            size = os.fstat(fd).st_size
            archive.files.append((member, source, size))
            total += size
    except BaseException:
        archive.close()
        raise
    finally:
        os.close(dir_fd)
    return archive


class _Sink(io.RawIOBase):
    """A write-only stream whose bytes are taken out as they are produced."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]  # bytes only here
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


def _exact_chunks(source: IO[bytes], size: int, name: str) -> Iterator[bytes]:
    """*size* bytes of *source* in chunks; a file that shrank or grew is refused."""
    left = size
    while left > 0:
        data = source.read(min(left, _CHUNK))
        if not data:
            msg = f"{name} changed while it was being sent; download it again"
            raise UnsafeModelFiles(msg)
        left -= len(data)
        yield data
    if source.read(1):
        msg = f"{name} changed while it was being sent; download it again"
        raise UnsafeModelFiles(msg)
