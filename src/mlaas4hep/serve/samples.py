"""Small ONNX models in the training layer's export format, for tests, demos and benchmarks.

``write_sample_model(dir)`` writes ``model.onnx`` + ``metadata.json`` for a ReLU MLP with
standardisation inside the graph and a sigmoid output (by default 42x128x128x128x64x64x1,
the network TFaaS published its throughput for). Built with ``onnx.helper``, no torch.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mlaas4hep.artifact import MODEL_FILE
from mlaas4hep.serve.metadata import ModelMetadata, TensorSpec, write_metadata

BENCH_LAYERS = (42, 128, 128, 128, 64, 64, 1)


def mlp_model(
    layers: Sequence[int] = BENCH_LAYERS,
    seed: int = 0,
    input_name: str = "features",
    output_name: str = "score",
) -> onnx.ModelProto:
    """A ReLU MLP ``(x - mean) / std -> Gemm/Relu ... -> Sigmoid`` with a dynamic batch axis."""
    rng = np.random.default_rng(seed)
    n_in = layers[0]
    inits = [
        numpy_helper.from_array(rng.normal(0, 1, n_in).astype(np.float32), "mean"),
        numpy_helper.from_array(rng.uniform(0.5, 2, n_in).astype(np.float32), "std"),
    ]
    nodes = [
        helper.make_node("Sub", [input_name, "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["h0"]),
    ]
    for i, (a, b) in enumerate(itertools.pairwise(layers)):
        w = rng.normal(0, np.sqrt(2.0 / a), (a, b)).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}"),
        ]
        last = i == len(layers) - 2
        nodes.append(helper.make_node("Gemm", [f"h{i}", f"w{i}", f"b{i}"], [f"z{i}"]))
        op = "Sigmoid" if last else "Relu"
        nodes.append(helper.make_node(op, [f"z{i}"], [output_name if last else f"h{i + 1}"]))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", layers[-1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by any ONNX Runtime >= 1.14
    onnx.checker.check_model(model)
    return model


def write_sample_model(
    directory: Path,
    layers: Sequence[int] = BENCH_LAYERS,
    seed: int = 0,
    description: str = "sample MLP",
) -> Path:
    """Write ``model.onnx`` and ``metadata.json`` into *directory* (created); return it."""
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(mlp_model(layers, seed), str(directory / MODEL_FILE))
    metadata = ModelMetadata(
        inputs=(TensorSpec("features", "FP32", (-1, layers[0])),),
        outputs=(TensorSpec("score", "FP32", (-1, layers[-1])),),
        feature_names=tuple(f"f{i}" for i in range(layers[0])),
        labels=("signal",) if layers[-1] == 1 else (),
        spec_hash=f"sample-seed-{seed}",
        metrics={},
        created="2026-01-01T00:00:00Z",
        description=description,
    )
    write_metadata(directory, metadata)
    return directory
