"""Loading, hot reload and failure handling of the model manager (no HTTP)."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from mlaas4hep.errors import NotFound, SpecError
from mlaas4hep.serve.manager import ModelManager
from mlaas4hep.serve.metrics import InferenceMetrics
from mlaas4hep.serve.repository import ModelRepository, VersionPolicy
from mlaas4hep.serve.settings import BatchPolicy


@pytest.fixture
def manager(tmp_path: Path) -> ModelManager:
    repo = ModelRepository(tmp_path / "repo", VersionPolicy(latest=1), BatchPolicy())
    return ModelManager(repo, ThreadPoolExecutor(1), InferenceMetrics(), threads=1)


def _put_broken(version_dir: Path) -> None:
    version_dir.mkdir(parents=True)
    (version_dir / "model.onnx").write_bytes(b"garbage")


def _broken(tmp_path: Path) -> Path:
    broken = tmp_path / "broken"
    broken.mkdir(exist_ok=True)
    (broken / "model.onnx").write_bytes(b"garbage")
    return broken


def test_latest_version_serves_and_old_ones_retire(manager: ModelManager, model_dir: Path) -> None:
    repo = manager.repository
    repo.publish("m", model_dir)
    asyncio.run(manager.sync())
    assert manager.ready
    assert manager.get("m").version == 1
    old = manager.get("m")
    repo.publish("m", model_dir)
    asyncio.run(manager.sync())
    assert manager.served_versions("m") == [2]
    # A request that resolved version 1 before the swap can still finish on it.
    out = asyncio.run(old.batcher.submit({"features": np.zeros((1, 4), np.float32)}, 1))
    assert out["score"].shape == (1, 2)
    with pytest.raises(NotFound, match=r"no version 1 in service; serving: \[2\]"):
        manager.get("m", 1)


def test_failed_load_keeps_the_old_version(
    manager: ModelManager, model_dir: Path, tmp_path: Path
) -> None:
    repo = manager.repository
    repo.publish("m", model_dir)
    asyncio.run(manager.sync())
    with pytest.raises(SpecError, match="not a readable ONNX model"):
        repo.publish("m", _broken(tmp_path))  # publishing refuses it; a broken file on a
    _put_broken(repo.root / "m" / "2")  # shared repository must not break serving either
    asyncio.run(manager.sync())
    assert manager.served_versions("m") == [1]
    index = asyncio.run(manager.index())
    assert [(e.version, e.state) for e in index] == [(1, "READY"), (2, "UNAVAILABLE")]
    assert "load failed" in index[1].reason
    # A model whose only version is broken is reported, not served.
    _put_broken(repo.root / "x" / "1")
    with pytest.raises(SpecError, match="could not be loaded: load failed"):
        asyncio.run(manager.load("x"))


def test_metadata_mismatch_is_a_load_failure(manager: ModelManager, model_dir: Path) -> None:
    meta = json.loads((model_dir / "metadata.json").read_text())
    meta["inputs"][0]["name"] = "wrong"
    (model_dir / "metadata.json").write_text(json.dumps(meta))
    manager.repository.publish("m", model_dir)
    asyncio.run(manager.sync())
    index = asyncio.run(manager.index())
    assert "names input 'wrong'" in index[0].reason


def test_unload_and_load(manager: ModelManager, model_dir: Path) -> None:
    manager.repository.publish("m", model_dir)
    asyncio.run(manager.sync())
    asyncio.run(manager.unload("m"))
    asyncio.run(manager.sync())  # a poll does not bring it back
    with pytest.raises(NotFound, match="not loaded"):
        manager.get("m")
    asyncio.run(manager.load("m"))
    assert manager.get("m").version == 1
    with pytest.raises(NotFound):
        asyncio.run(manager.unload("nothing"))


def test_removed_model_is_retired(manager: ModelManager, model_dir: Path) -> None:
    manager.repository.publish("m", model_dir)
    asyncio.run(manager.sync())
    manager.repository.delete("m")
    asyncio.run(manager.sync())
    assert manager.names() == []


def test_metadata_is_read_from_the_graph_without_metadata_json(
    manager: ModelManager, model_dir: Path
) -> None:
    (model_dir / "metadata.json").unlink()
    manager.repository.publish("m", model_dir)
    asyncio.run(manager.sync())
    meta = manager.get("m").metadata
    assert [t.to_json() for t in meta.inputs] == [
        {"name": "features", "datatype": "FP32", "shape": [-1, 4]}
    ]
    assert meta.feature_names == ()
