"""The on-disk repository: names, versions, policies, per-model config, publishing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlaas4hep.errors import Conflict, NotFound, SpecError
from mlaas4hep.serve.repository import ModelRepository, VersionPolicy, check_model_name
from mlaas4hep.serve.settings import BatchPolicy


@pytest.fixture
def repo(tmp_path: Path) -> ModelRepository:
    return ModelRepository(tmp_path / "repo", VersionPolicy(latest=1), BatchPolicy())


@pytest.mark.parametrize("name", ["tth", "ttH-v2.onnx_1", "a" * 128])
def test_valid_names(name: str) -> None:
    assert check_model_name(name) == name


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "-x", "a" * 129, "x."])
def test_invalid_names(name: str) -> None:
    with pytest.raises(SpecError, match="invalid model name"):
        check_model_name(name)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (VersionPolicy(latest=1), [7]),
        (VersionPolicy(latest=2), [3, 7]),
        (VersionPolicy(latest=None), [1, 3, 7]),
        (VersionPolicy(latest=None, specific=(1, 9)), [1]),
    ],
)
def test_policy_select(policy: VersionPolicy, expected: list[int]) -> None:
    assert policy.select([7, 1, 3]) == expected


def test_publish_numbers_versions_and_refuses_duplicates(
    repo: ModelRepository, model_dir: Path
) -> None:
    assert repo.publish("m", model_dir) == 1
    assert repo.publish("m", model_dir) == 2
    assert repo.publish("m", model_dir, version=10) == 10
    assert repo.versions("m") == [1, 2, 10]
    assert repo.model_names() == ["m"]
    with pytest.raises(Conflict, match="version 2 already exists"):
        repo.publish("m", model_dir, version=2)
    # No temporary directory is left behind.
    assert sorted(p.name for p in (repo.root / "m").iterdir()) == ["1", "10", "2"]


def test_publish_needs_a_model(repo: ModelRepository, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"has no model\.onnx"):
        repo.publish("m", tmp_path)


def test_ignores_half_written_and_foreign_dirs(repo: ModelRepository, model_dir: Path) -> None:
    repo.publish("m", model_dir)
    (repo.root / "m" / ".tmp-123").mkdir()
    (repo.root / "m" / "2").mkdir()  # no model.onnx yet
    (repo.root / "m" / "0").mkdir()
    (repo.root / ".trash-x").mkdir()
    assert repo.versions("m") == [1]
    assert repo.model_names() == ["m"]


def test_version_dir_not_found_messages(repo: ModelRepository, model_dir: Path) -> None:
    repo.publish("mlp", model_dir)
    with pytest.raises(NotFound, match=r"has no version 3; versions: \[1\]"):
        repo.version_dir("mlp", 3)
    with pytest.raises(NotFound, match="closest: 'mlp'"):
        repo.version_dir("mpl", 1)


def test_delete(repo: ModelRepository, model_dir: Path) -> None:
    repo.publish("m", model_dir)
    repo.delete("m")
    assert repo.model_names() == []
    assert list(repo.root.iterdir()) == []
    with pytest.raises(NotFound):
        repo.delete("m")


def test_config_overrides_defaults(repo: ModelRepository, model_dir: Path) -> None:
    repo.publish("m", model_dir)
    (repo.root / "m" / "config.json").write_text(
        json.dumps({"version_policy": {"all": {}}, "batching": {"max_batch_size": 64}})
    )
    config = repo.config("m")
    assert config.version_policy.select([1, 2]) == [1, 2]
    assert config.batching.max_batch_size == 64
    assert config.batching.max_queue_size == BatchPolicy().max_queue_size


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"batching": {"max_batch": 3}}, "unknown batching keys"),
        ({"batching": {"max_batch_size": 0}}, "positive integer"),
        ({"batching": {"max_queue_delay_ms": -1}}, "max_queue_delay_ms"),
        ({"version_policy": {"latest": 0}}, "positive integer"),
        ({"version_policy": {"newest": 1}}, "one of 'latest', 'all', 'specific'"),
        ({"version_policy": {"specific": ["1"]}}, "must list integers"),
    ],
)
def test_bad_config(repo: ModelRepository, model_dir: Path, doc: object, fragment: str) -> None:
    repo.publish("m", model_dir)
    (repo.root / "m" / "config.json").write_text(json.dumps(doc))
    with pytest.raises(SpecError, match=fragment):
        repo.config("m")


def test_unreadable_config(repo: ModelRepository, model_dir: Path) -> None:
    repo.publish("m", model_dir)
    (repo.root / "m" / "config.json").write_text("{nope")
    with pytest.raises(SpecError, match="fix or delete it"):
        repo.config("m")


def test_publish_keeps_only_artifact_files(repo: ModelRepository, model_dir: Path) -> None:
    (model_dir / "metrics.json").write_text("{}")
    (model_dir / "checkpoints").mkdir()
    (model_dir / "checkpoints" / "best.pt").write_bytes(b"x" * 100)
    (model_dir / "plots.png").write_bytes(b"png")
    version = repo.publish("m", model_dir)
    kept = sorted(p.name for p in (repo.root / "m" / str(version)).iterdir())
    assert kept == ["metadata.json", "metrics.json", "model.onnx"]
