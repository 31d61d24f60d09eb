"""Small ONNX graph edits shared by the converters (onnxmltools, skl2onnx).

Converters name and shape their outputs differently (``label`` + ``probabilities`` with one
column per class, or ``variable``). Every exported model of mlaas4hep instead has exactly one
output, ``scores``: ``(batch, 1)`` probability of class 1 for binary, ``(batch, k)``
probabilities for multiclass, ``(batch, 1)`` prediction for regression.
"""

from __future__ import annotations

from typing import Any

import onnx
from onnx import TensorProto, helper

from mlaas4hep.artifact import OUTPUT_TENSOR
from mlaas4hep.errors import TrainingError

SCORES = OUTPUT_TENSOR
_DEFAULT_OPSET = 15


def finalize_scores(model: Any, source: str, task: str) -> Any:
    """Make ``source`` (an output of the converter) the graph's one ``scores`` output."""
    graph = model.graph
    if not any(op.domain in ("", "ai.onnx") for op in model.opset_import):
        # Tree converters only import the ai.onnx.ml domain; Slice/Identity need the default.
        model.opset_import.append(helper.make_opsetid("", _DEFAULT_OPSET))
    names = [o.name for o in graph.output]
    if source not in names:
        msg = f"the converted model has outputs {names!r}, not {source!r}; cannot export"
        raise TrainingError(msg)
    if task == "binary":
        consts = {"_sc_starts": 1, "_sc_ends": 2, "_sc_axes": 1}
        for name, value in consts.items():
            graph.initializer.append(helper.make_tensor(name, TensorProto.INT64, [1], [value]))
        graph.node.append(helper.make_node("Slice", [source, *consts], [SCORES]))
        width: int | str = 1
    else:
        graph.node.append(helper.make_node("Identity", [source], [SCORES]))
        width = 1 if task == "regression" else _width(graph, source)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(SCORES, TensorProto.FLOAT, ["N", width]))
    onnx.checker.check_model(model)
    return model


def _width(graph: Any, source: str) -> int | str:
    # Reads the class count from the converter's declared output shape when it has one.
    for out in graph.output:
        if out.name == source:
            dims = out.type.tensor_type.shape.dim
            if len(dims) == 2 and dims[1].dim_value:
                return int(dims[1].dim_value)
    return "K"


def add_metadata(model: Any, metadata: dict[str, str]) -> Any:
    """Set ``metadata_props`` (feature names, task, ...) so the file describes itself."""
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model
