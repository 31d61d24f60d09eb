"""A job's output directory is hostile: publishing copies plain files only (issue 15.2)."""

from __future__ import annotations

import os
from pathlib import Path, PurePath

import onnx
import pytest

from mlaas4hep.errors import Conflict, SpecError
from mlaas4hep.serve.intake import IntakeLimits, UnsafeModelFiles, copy_artifacts
from mlaas4hep.serve.onnx_check import check_self_contained
from mlaas4hep.serve.ownership import ModelOwners
from mlaas4hep.serve.repository import ModelRepository, VersionPolicy
from mlaas4hep.serve.runtime import OnnxModel
from mlaas4hep.serve.settings import BatchPolicy

SECRET = b"-----BEGIN PRIVATE KEY-----\nTOPSECRETKEYBYTES\n-----END PRIVATE KEY-----\n"


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "auth" / "local-issuer-key.pem"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


@pytest.fixture
def repo(tmp_path: Path) -> ModelRepository:
    return ModelRepository(tmp_path / "repo", VersionPolicy(), BatchPolicy())


def _copy(src: Path, tmp_path: Path, limits: IntakeLimits | None = None) -> list[str]:
    dest = tmp_path / "dest"
    dest.mkdir(parents=True, exist_ok=True)
    return copy_artifacts(src.parent, PurePath(src.name), dest, limits)


def test_plain_bundle_is_copied_and_extras_ignored(model_dir: Path, tmp_path: Path) -> None:
    (model_dir / "checkpoint.pt").write_bytes(b"x")
    os.symlink("/etc/passwd", model_dir / "notes.txt")  # not on the allow-list: never opened
    assert _copy(model_dir, tmp_path) == ["model.onnx", "metadata.json"]
    copied = (tmp_path / "dest" / "model.onnx").read_bytes()
    assert copied == (model_dir / "model.onnx").read_bytes()


@pytest.mark.parametrize("name", ["model.onnx", "metadata.json", "README.md"])
def test_symlinked_file_is_refused(
    model_dir: Path, tmp_path: Path, secret: Path, name: str
) -> None:
    (model_dir / name).unlink(missing_ok=True)
    os.symlink(secret, model_dir / name)
    with pytest.raises(UnsafeModelFiles, match=f"{name} cannot be opened.*links are refused"):
        _copy(model_dir, tmp_path)
    assert not (tmp_path / "dest" / name).exists()


def test_hard_link_is_refused(model_dir: Path, tmp_path: Path, secret: Path) -> None:
    # A hard link to the secret (same filesystem here; the job's sandbox sees no secret)
    (model_dir / "metadata.json").unlink()
    os.link(secret, model_dir / "metadata.json")
    with pytest.raises(UnsafeModelFiles, match="hard links"):
        _copy(model_dir, tmp_path)


def test_fifo_and_directory_are_refused(model_dir: Path, tmp_path: Path) -> None:
    os.mkfifo(model_dir / "features.json")
    with pytest.raises(UnsafeModelFiles, match="not a regular file"):
        _copy(model_dir, tmp_path)  # and does not hang on the FIFO
    (model_dir / "features.json").unlink()
    (model_dir / "spec.yaml").mkdir()
    with pytest.raises(UnsafeModelFiles, match="not a regular file"):
        _copy(model_dir, tmp_path / "again")


def test_symlinked_directory_component_is_refused(model_dir: Path, tmp_path: Path) -> None:
    job = tmp_path / "job"
    job.mkdir()
    os.symlink(model_dir, job / "result")
    with pytest.raises(UnsafeModelFiles, match="'result' is not a plain directory"):
        copy_artifacts(tmp_path, PurePath("job/result"), tmp_path)
    with pytest.raises(UnsafeModelFiles, match=r"without '\.\.'"):
        copy_artifacts(job, PurePath("../src"), tmp_path)


def test_size_caps(model_dir: Path, tmp_path: Path) -> None:
    (model_dir / "README.md").write_bytes(b"x" * 2000)
    with pytest.raises(UnsafeModelFiles, match=r"README.md has 2000 bytes, over the limit"):
        _copy(model_dir, tmp_path, IntakeLimits(max_file_bytes=1000))
    size = (model_dir / "model.onnx").stat().st_size
    with pytest.raises(UnsafeModelFiles, match="over the limit"):
        _copy(model_dir, tmp_path / "b", IntakeLimits(max_total_bytes=size + 10))


def _external(model_dir: Path, location: str) -> None:
    """Make the model's first initializer read its bytes from *location*."""
    model = onnx.load(str(model_dir / "model.onnx"))
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    (model_dir / "model.onnx").write_bytes(model.SerializeToString())


def test_external_data_is_refused_everywhere(
    model_dir: Path, secret: Path, repo: ModelRepository
) -> None:
    os.symlink(secret, model_dir / "weights.bin")
    _external(model_dir, "weights.bin")
    data = (model_dir / "model.onnx").read_bytes()
    with pytest.raises(SpecError, match="external file; served models must be self-contained"):
        check_self_contained(data)
    with pytest.raises(SpecError, match="external file"):  # publish
        repo.publish("m", model_dir)
    assert repo.versions("m") == []
    assert not list(repo.root.glob(".staging-*"))
    with pytest.raises(SpecError, match="external file"):  # load
        OnnxModel(model_dir, 1)


def test_external_data_in_a_subgraph_or_function_is_refused() -> None:
    tensor = onnx.helper.make_tensor("w", onnx.TensorProto.FLOAT, [1], [1.0])
    tensor.ClearField("float_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../auth/key.pem"
    const = onnx.helper.make_node("Constant", [], ["c"], value=tensor)
    body = onnx.helper.make_graph([const], "then", [], [])
    branch = onnx.helper.make_node("If", ["cond"], ["y"], then_branch=body, else_branch=body)
    graph = onnx.helper.make_graph([branch], "main", [], [])
    with pytest.raises(SpecError, match="external file"):
        check_self_contained(onnx.helper.make_model(graph).SerializeToString())
    function = onnx.helper.make_function("local", "f", [], ["c"], [const], [])
    model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []), functions=[function])
    with pytest.raises(SpecError, match=r"function 'f'|node"):
        check_self_contained(model.SerializeToString())


def test_symlinked_metadata_never_reaches_the_repository(
    model_dir: Path, secret: Path, repo: ModelRepository
) -> None:
    (model_dir / "metadata.json").unlink()
    os.symlink(secret, model_dir / "metadata.json")
    with pytest.raises(UnsafeModelFiles, match=r"metadata.json"):
        repo.publish("m", model_dir)
    for path in repo.root.rglob("*"):
        assert not path.is_file() or SECRET not in path.read_bytes()


def test_commit_refuses_when_the_owner_changed(model_dir: Path, repo: ModelRepository) -> None:
    ModelOwners(repo.root).claim("m", "iss#bob")
    with pytest.raises(Conflict, match="changed owner"):
        repo.publish("m", model_dir, expect_owner="iss#alice")
    assert repo.publish("m", model_dir, expect_owner="iss#bob") == 1
