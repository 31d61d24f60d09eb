"""Safe tarball extraction: member by member, regular files only, with caps.

Never ``tarfile.extractall``: every member is checked before a byte is written. Rejected
(``UnsafeArchiveError``): symbolic and hard links, devices, FIFOs, absolute paths, ``..``
components, duplicate names, more than ``max_members`` members, a member over
``max_member_bytes``, or more than ``max_total_bytes`` in all (gzip bombs stop there too).
Directory entries are accepted and ignored (parents are created for files).
"""

from __future__ import annotations

import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from mlaas4hep.errors import UnsafeArchiveError

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps applied while extracting (defaults suit model bundles)."""

    max_members: int = 256
    max_member_bytes: int = 512 << 20
    max_total_bytes: int = 1 << 30


def safe_member_path(name: str) -> PurePosixPath:
    """Return the relative path of a member name, or raise UnsafeArchiveError."""
    if not name or "\x00" in name or "\\" in name:
        msg = f"archive member {name!r}: empty name, NUL or backslash; use plain relative paths"
        raise UnsafeArchiveError(msg)
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/"):
        msg = f"archive member {name!r} has an absolute path; archive relative paths only"
        raise UnsafeArchiveError(msg)
    parts = [p for p in path.parts if p not in ("", ".")]
    if ".." in parts:
        msg = f"archive member {name!r} contains '..'; archive relative paths only"
        raise UnsafeArchiveError(msg)
    if not parts:
        msg = f"archive member {name!r} names no file"
        raise UnsafeArchiveError(msg)
    return PurePosixPath(*parts)


def extract_tar(fileobj: IO[bytes], dest: Path, limits: ArchiveLimits | None = None) -> list[str]:
    """Extract a (possibly gzip/bz2/xz-compressed) tar stream into the empty dir *dest*.

    Returns the relative paths of the files written. Raises UnsafeArchiveError on the
    first rejected member (files already written stay in *dest*; callers extract into a
    temporary directory and delete it on error).
    """
    limits = limits or ArchiveLimits()
    written: list[str] = []
    total = 0
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
            for count, member in enumerate(tar, start=1):
                if count > limits.max_members:
                    msg = f"archive has more than {limits.max_members} members; bundle fewer files"
                    raise UnsafeArchiveError(msg)
                rel = safe_member_path(member.name)
                if member.isdir():
                    continue
                if not member.isreg():
                    msg = (
                        f"archive member {member.name!r} is not a regular file "
                        f"(links, devices and FIFOs are refused)"
                    )
                    raise UnsafeArchiveError(msg)
                if member.size > limits.max_member_bytes:
                    msg = (
                        f"archive member {member.name!r} has {member.size} bytes, over the "
                        f"limit of {limits.max_member_bytes}"
                    )
                    raise UnsafeArchiveError(msg)
                if str(rel) in written:
                    msg = f"archive member {member.name!r} appears twice"
                    raise UnsafeArchiveError(msg)
                total += member.size
                if total > limits.max_total_bytes:
                    msg = f"archive expands to more than {limits.max_total_bytes} bytes"
                    raise UnsafeArchiveError(msg)
                _write_member(tar, member, dest / rel)
                written.append(str(rel))
    except (tarfile.TarError, EOFError, OSError) as exc:
        msg = f"cannot read the archive: {exc}; send a tar or tar.gz of the model directory"
        raise UnsafeArchiveError(msg) from exc
    return written


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    source = tar.extractfile(member)
    if source is None:  # pragma: no cover - isreg() members always have data
        msg = f"archive member {member.name!r} has no data"
        raise UnsafeArchiveError(msg)
    target.parent.mkdir(parents=True, exist_ok=True)
    # "xb": never follow or overwrite something already there.
    with source, target.open("xb") as out:
        shutil.copyfileobj(source, out, _CHUNK)
