"""Reading a model directory someone else wrote (a job's results, an upload) as hostile.

A job controls its output directory: it can put symbolic links there (to the issuer's
key, to another user's files), hard links, FIFOs, devices, huge files, or swap a file
between a check and a copy. So nothing here checks a path and then uses it:

* the directory is reached from a trusted *base* (opened normally: the operator's data
  directory or a temporary directory of ours) one component at a time with
  ``O_NOFOLLOW | O_DIRECTORY``: a symbolic link anywhere below the base is refused;
* only the names of the artifact allow-list (:data:`ARTIFACT_FILES`) are opened, each
  with ``O_NOFOLLOW`` relative to the directory's descriptor; ``fstat`` on the opened
  descriptor must show a regular file with a single link (``st_nlink == 1``: a hard link
  to a secret has two) within the size caps;
* the bytes are copied by reading that descriptor (never a second open of the path), and
  the caps are enforced on what is read, not only on what ``fstat`` said.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePath

from mlaas4hep.artifact import MODEL_FILE
from mlaas4hep.artifact import PUBLISHED_FILES as ARTIFACT_FILES
from mlaas4hep.errors import SpecError

_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO must not hang; it is refused by fstat right after.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_OUT_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeModelFiles(SpecError):
    """A model directory holds something other than plain, small, single-link files."""


@dataclass(frozen=True)
class IntakeLimits:
    """Caps on what is copied out of a model directory."""

    max_model_bytes: int = 512 << 20
    max_file_bytes: int = 16 << 20  # every allow-listed file but the model
    max_total_bytes: int = 1 << 30


def copy_artifacts(
    base: Path, rel: PurePath, dest: Path, limits: IntakeLimits | None = None
) -> list[str]:
    """Copy the allow-listed artifact files of ``base/rel`` into the directory *dest*.

    *base* is trusted (followed as the OS resolves it); every component of *rel* must be
    a real directory. Returns the names copied. Raises UnsafeModelFiles (a SpecError,
    400) naming the first offending file and why; *dest* may then hold a partial copy.
    """
    limits = limits or IntakeLimits()
    dir_fd = open_directory(base, rel)
    try:
        copied: list[str] = []
        total = 0
        for name in ARTIFACT_FILES:
            cap = limits.max_model_bytes if name == MODEL_FILE else limits.max_file_bytes
            size = _copy_one(dir_fd, name, dest / name, min(cap, limits.max_total_bytes - total))
            if size is None:
                continue
            total += size
            copied.append(name)
    finally:
        os.close(dir_fd)
    if MODEL_FILE not in copied:
        msg = f"the model directory has no {MODEL_FILE}; a model version needs one"
        raise UnsafeModelFiles(msg)
    return copied


def open_directory(base: Path, rel: PurePath) -> int:
    """A descriptor of ``base/rel``, no component of *rel* being a link; caller closes it."""
    parts = [p for p in rel.parts if p not in ("", ".")]
    if rel.is_absolute() or ".." in parts:
        msg = f"model directory {str(rel)!r} must be a relative path without '..'"
        raise UnsafeModelFiles(msg)
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                msg = f"the model directory's component {part!r} is not a plain directory"
                raise UnsafeModelFiles(f"{msg} ({_why(exc)}); links are refused") from exc
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: Path, cap: int) -> bytes:
    """The bytes of *path*, refused unless it is a regular, single-link file within *cap*.

    The last component is opened without following a link (the parents are the
    repository's own directories).
    """
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        file_fd = _open_file(fd, path.name, cap)
    finally:
        os.close(fd)
    with os.fdopen(file_fd, "rb") as source:
        data = source.read(cap + 1)
    if len(data) > cap:
        raise UnsafeModelFiles(f"{path.name} is over the limit of {cap} bytes")
    return data


def open_plain(dir_fd: int, name: str, cap: int) -> int:
    """A descriptor of *name* in *dir_fd*: a regular, single-link file within *cap*.

    Opened without following a link; FileNotFoundError when absent, UnsafeModelFiles
    otherwise. The caller closes it.
    """
    return _open_file(dir_fd, name, cap)


def _copy_one(dir_fd: int, name: str, target: Path, cap: int) -> int | None:
    try:
        fd = _open_file(dir_fd, name, cap)
    except FileNotFoundError:
        return None
    size = 0
    with os.fdopen(fd, "rb") as source:
        out = os.open(target, _OUT_FLAGS, 0o644)
        with os.fdopen(out, "wb") as sink:
            while chunk := source.read(_CHUNK):
                size += len(chunk)
                if size > cap:  # the file grew after fstat: the cap holds on what is read
                    raise UnsafeModelFiles(f"{name} is over the limit of {cap} bytes")
                sink.write(chunk)
    return size


def _open_file(dir_fd: int, name: str, cap: int) -> int:
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError as exc:
        msg = f"{name} cannot be opened as a plain file ({_why(exc)}); links are refused"
        raise UnsafeModelFiles(msg) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            msg = f"{name} is not a regular file (directories, FIFOs and devices are refused)"
            raise UnsafeModelFiles(msg)
        if info.st_nlink != 1:
            msg = f"{name} has {info.st_nlink} hard links; publish a plain copy, not a link"
            raise UnsafeModelFiles(msg)
        if info.st_size > cap:
            msg = f"{name} has {info.st_size} bytes, over the limit of {cap}"
            raise UnsafeModelFiles(msg)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _why(exc: OSError) -> str:
    if exc.errno in (errno.ELOOP, errno.EMLINK):
        return "a symbolic link"
    if exc.errno == errno.ENOTDIR:
        return "not a directory"
    return os.strerror(exc.errno or errno.EIO)
