"""One ONNX graph holding the k models of a k-folded run, and the choice between them.

Each fold's model is exported on its own (``export.export_onnx``: input ``features``,
output ``scores``); ``combine_folds`` renames every name inside fold ``i``'s graph with the
prefix ``fold<i>/``, feeds all of them from the one ``features`` input and adds::

    fold    int64 (rows,), optional: 0..k-1 picks that fold's model for the row; -1 (or
            any other value) the mean of the k models. Absent: -1 for every row (an
            initializer of the same name is its default, so a plain
            ``session.run(["scores"], {"features": X})`` gets the average).
    scores  = Where(fold == 0, scores_0, Where(fold == 1, scores_1, ... mean))

The selected rows are bit for bit the fold model's own scores (a ``Where``, no arithmetic),
so the parity check of each fold is as strict as for a single model. Ops used (Identity,
Reshape, Equal, Where, Sum, Div) are the same in every opset from 13 on, so the combiner
works on the graphs of any engine (torch, onnxmltools, skl2onnx).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, compose, helper, numpy_helper

from mlaas4hep.artifact import FOLD_AVERAGE, FOLD_INPUT, INPUT_TENSOR, OUTPUT_TENSOR
from mlaas4hep.errors import TrainingError

_MIN_OPSET = 13


def prefix(fold: int) -> str:
    """The name prefix of fold *fold*'s nodes and tensors inside the combined graph."""
    return f"fold{fold}/"


def combine_folds(models: Sequence[Any]) -> Any:
    """The combined ``ModelProto`` of the per-fold models (same interface, same opsets)."""
    if len(models) < 2:
        msg = f"k-folding combines at least 2 models, got {len(models)}"
        raise TrainingError(msg)
    first = models[0]
    _check_same_interface(models)
    width = first.graph.output[0].type.tensor_type.shape.dim[1]
    nodes: list[Any] = []
    initializers: list[Any] = []
    functions: list[Any] = []
    for i, model in enumerate(models):
        renamed = compose.add_prefix(model, prefix(i))
        nodes.append(helper.make_node("Identity", [INPUT_TENSOR], [prefix(i) + INPUT_TENSOR]))
        nodes.extend(renamed.graph.node)
        initializers.extend(renamed.graph.initializer)
        functions.extend(renamed.functions)
    nodes, extra = _chooser(len(models), nodes)
    initializers.extend(extra)
    graph = helper.make_graph(
        nodes,
        "mlaas4hep_folds",
        [_features_input(first), _fold_input()],
        [_scores_output(width)],
        initializer=initializers,
    )
    combined = helper.make_model(
        graph, opset_imports=_opsets(first), functions=functions, ir_version=first.ir_version
    )
    onnx.checker.check_model(combined)
    return combined


def _check_same_interface(models: Sequence[Any]) -> None:
    for i, model in enumerate(models):
        inputs = [x.name for x in model.graph.input if x.name not in _initializer_names(model)]
        outputs = [o.name for o in model.graph.output]
        if inputs != [INPUT_TENSOR] or outputs != [OUTPUT_TENSOR]:
            msg = (
                f"fold {i}'s graph has inputs {inputs!r} and outputs {outputs!r}; k-folding "
                f"combines graphs of one input {INPUT_TENSOR!r} and one output "
                f"{OUTPUT_TENSOR!r} (set train.folds: null for this model kind)"
            )
            raise TrainingError(msg)


def _initializer_names(model: Any) -> set[str]:
    return {init.name for init in model.graph.initializer}


def _chooser(k: int, nodes: list[Any]) -> tuple[list[Any], list[Any]]:
    """Nodes averaging the k ``scores`` and choosing per row; their constants."""
    consts = [
        numpy_helper.from_array(np.array([-1, 1], np.int64), "folds/column"),
        numpy_helper.from_array(np.array(k, np.float32), "folds/k"),
        *(numpy_helper.from_array(np.array(i, np.int64), f"folds/index{i}") for i in range(k)),
    ]
    scores = [prefix(i) + OUTPUT_TENSOR for i in range(k)]
    nodes += [
        helper.make_node("Sum", scores, ["folds/sum"]),
        helper.make_node("Div", ["folds/sum", "folds/k"], ["folds/mean"]),
        helper.make_node("Reshape", [FOLD_INPUT, "folds/column"], ["folds/fold"]),
    ]
    chosen = "folds/mean"
    for i in reversed(range(k)):
        nodes.append(helper.make_node("Equal", ["folds/fold", f"folds/index{i}"], [f"folds/is{i}"]))
        out = OUTPUT_TENSOR if i == 0 else f"folds/chosen{i}"
        nodes.append(helper.make_node("Where", [f"folds/is{i}", scores[i], chosen], [out]))
        chosen = out
    # the input's default: one row of -1, broadcast over the batch (the average)
    consts.append(numpy_helper.from_array(np.array([FOLD_AVERAGE], np.int64), FOLD_INPUT))
    return nodes, consts


def _features_input(model: Any) -> Any:
    return next(x for x in model.graph.input if x.name == INPUT_TENSOR)


def _fold_input() -> Any:
    # its own symbolic length: 1 when the default is used, the batch size when fed
    return helper.make_tensor_value_info(FOLD_INPUT, TensorProto.INT64, ["fold_rows"])


def _scores_output(width: Any) -> Any:
    value = width.dim_value if width.HasField("dim_value") else (width.dim_param or "K")
    return helper.make_tensor_value_info(OUTPUT_TENSOR, TensorProto.FLOAT, ["N", value])


def _opsets(model: Any) -> list[Any]:
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx") and op.version < _MIN_OPSET:
            msg = (
                f"the exported graph uses opset {op.version}; k-folding needs opset "
                f">= {_MIN_OPSET} (set train.folds: null for this model kind)"
            )
            raise TrainingError(msg)
    return [helper.make_opsetid(op.domain, op.version) for op in model.opset_import]
