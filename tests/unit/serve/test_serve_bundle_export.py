"""serve/bundle_export.py: a version directory as a streamed tar.gz, allow-list only."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from mlaas4hep.serve.archive import extract_tar
from mlaas4hep.serve.bundle_export import open_bundle
from mlaas4hep.serve.intake import UnsafeModelFiles


def _version(root: Path) -> Path:
    version = root / "m" / "1"
    version.mkdir(parents=True)
    (version / "model.onnx").write_bytes(os.urandom(3 << 20))  # several read chunks
    (version / "metadata.json").write_text("{}")
    (version / "notes.txt").write_text("not allow-listed")
    return version


def test_round_trip_through_the_safe_extractor(tmp_path: Path) -> None:
    version = _version(tmp_path / "repo")
    archive = open_bundle(tmp_path / "repo", "m", 1)
    assert archive.filename == "m-1.tar.gz"
    parts = list(archive)
    assert len(parts) > 2  # streamed, not built whole
    out = tmp_path / "out"
    out.mkdir()
    assert sorted(extract_tar(io.BytesIO(b"".join(parts)), out)) == [
        "metadata.json",
        "model.onnx",
    ]
    assert (out / "model.onnx").read_bytes() == (version / "model.onnx").read_bytes()


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "fifo"])
def test_a_file_that_is_not_plain_is_refused(tmp_path: Path, kind: str) -> None:
    version = _version(tmp_path / "repo")
    secret = tmp_path / "secret"
    secret.write_text("key")
    target = version / "metadata.json"
    target.unlink()
    if kind == "symlink":
        target.symlink_to(secret)
    elif kind == "hardlink":
        os.link(secret, target)
    else:
        os.mkfifo(target)
    with pytest.raises(UnsafeModelFiles, match=r"metadata\.json"):
        open_bundle(tmp_path / "repo", "m", 1)


def test_a_linked_version_directory_is_refused(tmp_path: Path) -> None:
    _version(tmp_path / "elsewhere")
    (tmp_path / "repo" / "m").mkdir(parents=True)
    (tmp_path / "repo" / "m" / "1").symlink_to(tmp_path / "elsewhere" / "m" / "1")
    with pytest.raises(UnsafeModelFiles, match="link"):
        open_bundle(tmp_path / "repo", "m", 1)
