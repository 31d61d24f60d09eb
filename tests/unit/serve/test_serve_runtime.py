"""ONNX Runtime wrapper: metadata from metadata.json, from a training bundle, or refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mlaas4hep.errors import SpecError
from mlaas4hep.serve.runtime import OnnxModel
from mlaas4hep.serve.samples import mlp_model


def test_training_bundle_metadata_props_are_used(tmp_path: Path) -> None:
    model = mlp_model((3, 4, 1))
    for key, value in {
        "mlaas4hep.features": json.dumps(["MET_pt", "HT", "nJet"]),
        "mlaas4hep.class_names": json.dumps(["bkg", "sig"]),
        "mlaas4hep.spec_hash": "abc123",
        "mlaas4hep.task": "binary",
    }.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(tmp_path / "model.onnx"))
    (tmp_path / "metrics.json").write_text(json.dumps({"test": {"auc": 0.9, "n": 3, "x": "y"}}))
    meta = OnnxModel(tmp_path, threads=1).metadata
    assert meta.feature_names == ("MET_pt", "HT", "nJet")
    assert meta.labels == ("bkg", "sig")
    assert meta.spec_hash == "abc123"
    assert dict(meta.metrics) == {"auc": 0.9, "n": 3}
    assert meta.description == "task: binary"


def test_run_and_inline_estimate(tmp_path: Path) -> None:
    onnx.save(mlp_model((3, 4, 2)), str(tmp_path / "model.onnx"))
    model = OnnxModel(tmp_path, threads=1)
    out = model.run({"features": np.ones((5, 3), np.float32)})
    assert out["score"].shape == (5, 2)
    assert model.inline_rows(budget_s=1.0) >= 1
    assert model.inline_rows(budget_s=1e-12) == 0


def test_fixed_batch_axis_is_refused(tmp_path: Path) -> None:
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "model.onnx"))
    with pytest.raises(SpecError, match="dynamic batch axis"):
        OnnxModel(tmp_path, threads=1)


def test_metadata_json_must_match_the_graph(tmp_path: Path) -> None:
    onnx.save(mlp_model((3, 4, 1)), str(tmp_path / "model.onnx"))
    doc = {
        "inputs": [{"name": "features", "datatype": "FP64", "shape": [-1, 3]}],
        "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1, 1]}],
    }
    (tmp_path / "metadata.json").write_text(json.dumps(doc))
    with pytest.raises(SpecError, match="FP64"):
        OnnxModel(tmp_path, threads=1)
    (tmp_path / "metadata.json").write_text(json.dumps({**doc, "format": "other/2"}))
    with pytest.raises(SpecError, match="unknown metadata format 'other/2'"):
        OnnxModel(tmp_path, threads=1)
    (tmp_path / "metadata.json").write_text("{")
    with pytest.raises(SpecError, match="UTF-8 JSON"):
        OnnxModel(tmp_path, threads=1)


def test_not_an_onnx_file(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"nope")
    with pytest.raises(SpecError, match="not a readable ONNX model"):
        OnnxModel(tmp_path, threads=1)
