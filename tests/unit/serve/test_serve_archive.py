"""Safe tar extraction: every kind of hostile member is refused before it is written."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlaas4hep.errors import UnsafeArchiveError
from mlaas4hep.serve.archive import ArchiveLimits, extract_tar, safe_member_path


def _tar(*members: tarfile.TarInfo | tuple[str, bytes], mode: str = "w:gz") -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:  # type: ignore[call-overload]
        for m in members:
            if isinstance(m, tuple):
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tar.addfile(info, io.BytesIO(m[1]))
            else:
                tar.addfile(m)
    buffer.seek(0)
    return buffer


def _special(name: str, kind: bytes, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


def test_regular_files_and_dirs_are_extracted(tmp_path: Path) -> None:
    archive = _tar(_special("m", tarfile.DIRTYPE), ("m/model.onnx", b"abc"), ("m/x/y.txt", b""))
    assert extract_tar(archive, tmp_path) == ["m/model.onnx", "m/x/y.txt"]
    assert (tmp_path / "m" / "model.onnx").read_bytes() == b"abc"


def test_uncompressed_tar_works(tmp_path: Path) -> None:
    assert extract_tar(_tar(("a", b"1"), mode="w"), tmp_path) == ["a"]


@pytest.mark.parametrize(
    ("member", "fragment"),
    [
        (_special("link", tarfile.SYMTYPE, "/etc/passwd"), "not a regular file"),
        (_special("hard", tarfile.LNKTYPE, "a"), "not a regular file"),
        (_special("dev", tarfile.CHRTYPE), "not a regular file"),
        (_special("fifo", tarfile.FIFOTYPE), "not a regular file"),
        (("../up.txt", b"x"), "'..'"),
        (("a/../../up.txt", b"x"), "'..'"),
        (("/etc/cron.d/x", b"x"), "absolute"),
        (("a\\b", b"x"), "backslash"),
        (("./", b"x"), "names no file"),
    ],
)
def test_hostile_members_are_refused(
    tmp_path: Path, member: tarfile.TarInfo | tuple[str, bytes], fragment: str
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnsafeArchiveError, match=fragment):
        extract_tar(_tar(("ok.txt", b"1"), member), dest)
    assert not (tmp_path / "up.txt").exists()
    assert not (dest / "link").exists()


def test_limits(tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchiveError, match="more than 2 members"):
        extract_tar(_tar(("a", b""), ("b", b""), ("c", b"")), tmp_path / "1", ArchiveLimits(2))
    with pytest.raises(UnsafeArchiveError, match="over the limit of 3"):
        extract_tar(_tar(("a", b"1234")), tmp_path / "2", ArchiveLimits(max_member_bytes=3))
    limits = ArchiveLimits(max_total_bytes=5)
    with pytest.raises(UnsafeArchiveError, match="more than 5 bytes"):
        extract_tar(_tar(("a", b"123"), ("b", b"123")), tmp_path / "3", limits)


def test_duplicates_and_garbage(tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchiveError, match="appears twice"):
        extract_tar(_tar(("a", b"1"), ("./a", b"2")), tmp_path / "1")
    with pytest.raises(UnsafeArchiveError, match="cannot read the archive"):
        extract_tar(io.BytesIO(b"\x1f\x8b not really gzip"), tmp_path / "2")


@given(st.text(min_size=1, max_size=40))
def test_safe_member_path_never_escapes(name: str) -> None:
    try:
        path = safe_member_path(name)
    except UnsafeArchiveError:
        return
    assert not path.is_absolute()
    assert ".." not in path.parts
    assert str(path) not in ("", ".")
