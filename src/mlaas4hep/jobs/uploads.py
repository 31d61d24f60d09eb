"""Resumable, content-addressed dataset uploads.

The client names the file's sha256 and size; the bytes arrive in one or more requests, each
continuing at the offset the service already holds (``received``), and are kept meanwhile
in a partial file per (owner, sha256) under ``<data_dir>/uploads/<owner hash>/`` (outside
the owner's dataset directory, so a job never sees a partial). One writer per partial
(``flock``), across requests, threads and replicas on one host. When the last byte arrives
the whole file is hashed: a mismatch discards the partial (422); otherwise the
:class:`~mlaas4hep.jobs.datasets.DatasetStore` adopts it (inspected in the sandbox like any
upload, then renamed into place). A file the owner already has (same sha256) is never
stored twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlaas4hep.errors import Conflict, NotFound, PayloadTooLarge, SpecError
from mlaas4hep.jobs.layout import owner_dir, safe_name
from mlaas4hep.jobs.limits import fmt_bytes

if TYPE_CHECKING:
    from mlaas4hep.jobs.datasets import Dataset, DatasetStore

ROOT_MAGIC = b"root"
SHA256 = re.compile(r"[0-9a-f]{64}")
#: Unfinished uploads one owner may keep at once (each at most ``uploads.dataset_bytes``).
MAX_PENDING = 8
#: An unfinished upload untouched for this long is discarded.
PENDING_TTL_S = 7 * 24 * 3600
_LOCK_WAIT_S = 10.0
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class UploadState:
    """A resumable upload: ``received`` of ``size`` bytes; ``dataset`` once complete."""

    sha256: str
    size: int
    received: int
    name: str
    dataset: Dataset | None = None


class ResumableUploads:
    """The partial files of resumable uploads, finished into *store*."""

    def __init__(self, store: DatasetStore, data_dir: Path, limit: int) -> None:
        self._store = store
        self._data_dir = data_dir
        self._limit = limit

    def state(self, owner: str, sha256: str) -> UploadState:
        """How much of *owner*'s upload of *sha256* the service holds.

        Raises:
            SpecError: *sha256* is not 64 lower-case hexadecimal digits.
            NotFound: no unfinished upload of that hash (the file is not started, or done:
                look it up among the datasets).
        """
        _check_sha(sha256)
        part, meta = self._part_paths(owner, sha256)
        info = _read_meta(meta)
        if info is None or not part.is_file():
            msg = f"no unfinished upload of sha256 {sha256} among yours; start it at offset 0"
            raise NotFound(msg)
        return UploadState(sha256, info[1], part.stat().st_size, info[0])

    def discard(self, owner: str, sha256: str) -> None:
        """Forget *owner*'s unfinished upload of *sha256* (NotFound when there is none)."""
        self.state(owner, sha256)
        part, meta = self._part_paths(owner, sha256)
        lock = part.with_suffix(".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                msg = "an upload of this file is running; discard it when it stops"
                raise Conflict(msg) from None
            part.unlink(missing_ok=True)
            meta.unlink(missing_ok=True)
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)

    async def resume(
        self,
        owner: str,
        sha256: str,
        name: str,
        size: int,
        offset: int,
        chunks: AsyncIterator[bytes],
    ) -> UploadState:
        """Write *chunks* at *offset* of *owner*'s upload of a *size*-byte file *sha256*.

        Returns the state: ``dataset`` set once the file is complete, verified, inspected
        and stored (or when *owner* already had that content: nothing is read then). If the
        body stops early (a dropped connection) the bytes received are kept for a resume.

        Raises:
            SpecError: a malformed hash or name; not a ROOT file; the content does not hash
                to *sha256* (the partial is discarded).
            PayloadTooLarge: *size* above ``uploads.dataset_bytes``, or more bytes than *size*.
            Conflict: *offset* is not what the service holds (the message says which), the
                name is taken by another file, an upload of this file is running, or too
                many unfinished uploads.
        """
        _check_sha(sha256)
        safe_name(name, "dataset name")
        self._check_size(size, offset)
        existing = self._store.by_hash(sha256, owner)
        if existing is not None:
            return UploadState(sha256, existing.size, existing.size, existing.name, existing)
        self._store.check_name_free(owner, name)
        part, meta = self._part_paths(owner, sha256)
        part.parent.mkdir(parents=True, exist_ok=True)
        async with self._locked(part):
            self._prepare_part(part, meta, name, size, offset)
            try:
                received, digest = await self._append(part, offset, size, chunks)
            except (SpecError, PayloadTooLarge):
                meta.unlink(missing_ok=True)
                part.unlink(missing_ok=True)
                raise
            if received < size:
                return UploadState(sha256, size, received, name)
            try:
                ds = await self._finish(owner, sha256, name, size, part, digest)
            finally:
                meta.unlink(missing_ok=True)
                part.unlink(missing_ok=True)
        return UploadState(sha256, size, size, ds.name, ds)

    def _check_size(self, size: int, offset: int) -> None:
        if size > self._limit:
            msg = (
                f"the file is {fmt_bytes(size)}; the dataset limit is {fmt_bytes(self._limit)}: "
                "split it or ask the operator to raise uploads.dataset_bytes"
            )
            raise PayloadTooLarge(msg)
        if size <= 0 or not 0 <= offset <= size:
            msg = f"size {size} and offset {offset}: need 0 <= offset <= size and size > 0"
            raise SpecError(msg)

    def _part_paths(self, owner: str, sha256: str) -> tuple[Path, Path]:
        top = self._data_dir / "uploads" / owner_dir(self._data_dir, owner).name
        return top / f"{sha256}.part", top / f"{sha256}.json"

    @contextlib.asynccontextmanager
    async def _locked(self, part: Path) -> AsyncIterator[None]:
        """One writer per partial file, across requests, threads and replicas on one host.

        The lock file goes away with the partial; a waiter that locked a file removed
        meanwhile opens the new one and tries again.
        """
        lock = part.with_suffix(".lock")
        deadline = time.monotonic() + _LOCK_WAIT_S
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            if await _flock(fd, deadline) and _same_file(fd, lock):
                break
            os.close(fd)
            if time.monotonic() > deadline:
                msg = "an upload of this file is already running; retry when it ends"
                raise Conflict(msg)
        try:
            yield
        finally:
            if not part.exists():
                lock.unlink(missing_ok=True)
            os.close(fd)  # releases the lock

    def _prepare_part(self, part: Path, meta: Path, name: str, size: int, offset: int) -> None:
        """Check *offset* against the partial file (created if new); return its size."""
        info = _read_meta(meta)
        if info is not None and info[1] != size:
            part.unlink(missing_ok=True)  # the same content cannot have two sizes
            info = None
        if info is None or not part.is_file():
            if offset != 0:
                msg = "the service holds 0 bytes of this upload; resume at offset 0"
                raise Conflict(msg)
            self._expire_and_count(part.parent)
            part.unlink(missing_ok=True)
            with _open_new(part):
                pass
        _write_meta(meta, name, size)
        received = part.stat().st_size
        if offset != received:
            msg = f"the service holds {received} bytes of this upload; resume at offset {received}"
            raise Conflict(msg)

    def _expire_and_count(self, top: Path) -> None:
        now, pending = time.time(), 0
        for meta in top.glob("*.json"):
            with contextlib.suppress(OSError):
                if now - meta.stat().st_mtime > PENDING_TTL_S:
                    meta.with_suffix(".part").unlink(missing_ok=True)
                    meta.unlink()
                else:
                    pending += 1
        if pending >= MAX_PENDING:
            msg = (
                f"you have {pending} unfinished uploads (at most {MAX_PENDING}); resume one "
                "or discard it (DELETE /api/v1/datasets/uploads/SHA256)"
            )
            raise Conflict(msg)

    async def _append(
        self, part: Path, offset: int, size: int, chunks: AsyncIterator[bytes]
    ) -> tuple[int, str | None]:
        """Append the body; return the bytes held and, when one request brought the whole
        file, its SHA-256 (a resumed file is hashed again from disk at the end)."""
        received, sha = offset, (hashlib.sha256() if offset == 0 else None)
        out = os.fdopen(os.open(part, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW), "ab")
        try:
            async for chunk in chunks:
                if received + len(chunk) > size:
                    msg = f"more bytes than the declared size {size}; the upload was discarded"
                    raise PayloadTooLarge(msg)
                if received < len(ROOT_MAGIC):
                    _check_magic(part, received, chunk)
                out.write(chunk)
                if sha is not None:
                    sha.update(chunk)
                received += len(chunk)
        finally:
            # Whatever stopped the body (a dropped connection included), what arrived stays.
            out.flush()
            os.fsync(out.fileno())
            out.close()
        return received, (sha.hexdigest() if sha is not None and received == size else None)

    async def _finish(
        self, owner: str, sha256: str, name: str, size: int, part: Path, digest: str | None
    ) -> Dataset:
        digest = digest or await asyncio.to_thread(_sha256_of, part)
        if digest != sha256:
            msg = (
                f"the {size} bytes received hash to {digest}, not to the sha256 {sha256} "
                "the upload named; the partial upload was discarded: upload the file again"
            )
            raise SpecError(msg)
        return await self._store.adopt(owner, sha256, name, size, part, digest)


def _check_sha(sha256: str) -> None:
    if not SHA256.fullmatch(sha256):
        msg = f"invalid sha256 {sha256[:80]!r}: give the file's SHA-256 as 64 lower-case hex digits"
        raise SpecError(msg)


def _check_magic(part: Path, received: int, chunk: bytes) -> None:
    with part.open("rb") as f:
        head = (f.read(received) + chunk)[: len(ROOT_MAGIC)]
    if not ROOT_MAGIC.startswith(head[: len(ROOT_MAGIC)]):
        part.unlink(missing_ok=True)
        msg = f"the upload is not a ROOT file (starts with {head!r}, expected b'root')"
        raise SpecError(msg)


async def _flock(fd: int, deadline: float) -> bool:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
    except OSError:
        return False


def _sha256_of(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_HASH_CHUNK):
            sha.update(block)
    return sha.hexdigest()


def _read_meta(meta: Path) -> tuple[str, int] | None:
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
        return str(data["name"]), int(data["size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_meta(meta: Path, name: str, size: int) -> None:
    tmp = meta.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"name": name, "size": size}), encoding="utf-8")
    os.replace(tmp, meta)


@contextlib.contextmanager
def _open_new(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        yield fd
    finally:
        os.close(fd)
