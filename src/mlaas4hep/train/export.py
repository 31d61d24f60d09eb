"""ONNX export of a trained engine, and the parity check ONNX Runtime vs the native model.

Every exported model has one input ``features`` (float32, ``(batch, n_features)``, raw
physics features in ``FeatureInfo.names`` order, dynamic batch axis) and one output
``scores`` (see ``onnx_graph.py``); the normalisation is inside the graph. The file
carries its own description in ``metadata_props`` (feature names, task, class names).

``parity_pass`` streams the test split once: native scores for the metrics, ONNX Runtime
scores on the same events for the parity check (maximum absolute difference).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnxruntime as ort

from mlaas4hep import artifact
from mlaas4hep.errors import TrainingError
from mlaas4hep.train.atomic import temp_path_for
from mlaas4hep.train.engine import Engine
from mlaas4hep.train.evaluate import ScoreAccumulator
from mlaas4hep.train.onnx_graph import SCORES, add_metadata
from mlaas4hep.train.stream import BatchSource, Split, check_finite

if TYPE_CHECKING:
    from mlaas4hep.preprocess.pipeline import FeatureInfo

INPUT = artifact.INPUT_TENSOR
PARITY_TOLERANCE = 1e-4


def onnx_metadata(info: FeatureInfo, extra: dict[str, str] | None = None) -> dict[str, str]:
    """What a server needs to describe the model: features, task, classes, normalisation."""
    meta = {
        artifact.PROP_FEATURES: json.dumps(list(info.names)),
        artifact.PROP_TASK: info.task,
        artifact.PROP_CLASS_NAMES: json.dumps(list(info.class_names)),
        artifact.PROP_NORMALIZE: info.normalize,
        artifact.PROP_INPUT: INPUT,
        artifact.PROP_OUTPUT: SCORES,
    }
    return meta | (extra or {})


def export_onnx(engine: Engine, path: Path, info: FeatureInfo, extra: dict[str, str]) -> None:
    """Export ``engine`` to ``path`` (atomically), check the graph's interface, add metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        engine.export_onnx(tmp)
        model = onnx.load(str(tmp))
        _check_interface(model, len(info.names))
        add_metadata(model, onnx_metadata(info, extra))
        onnx.save(model, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _check_interface(model: Any, n_features: int) -> None:
    inputs = [i.name for i in model.graph.input if i.name not in _initializers(model)]
    outputs = [o.name for o in model.graph.output]
    if inputs != [INPUT] or outputs != [SCORES]:
        msg = (
            f"the exported graph has inputs {inputs!r} and outputs {outputs!r}; "
            f"expected [{INPUT!r}] and [{SCORES!r}] (an exporter bug, please report it)"
        )
        raise TrainingError(msg)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 2 or dims[0].dim_value or dims[1].dim_value not in (0, n_features):
        msg = f"the exported input shape is not (batch, {n_features}) with a dynamic batch axis"
        raise TrainingError(msg)


def _initializers(model: Any) -> set[str]:
    return {init.name for init in model.graph.initializer}


def session(path: Path) -> ort.InferenceSession:
    """An ONNX Runtime CPU session of ``path`` (what the inference server will run)."""
    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own, unexported exception types
        msg = f"ONNX Runtime cannot load the exported model {str(path)!r}: {exc}"
        raise TrainingError(msg) from exc


@dataclass(frozen=True)
class ParityPass:
    """Result of ``parity_pass``: the native scores and the parity of the ONNX model."""

    scores: ScoreAccumulator
    max_abs_diff: float
    n_compared: int

    @property
    def parity_ok(self) -> bool:
        return self.max_abs_diff < PARITY_TOLERANCE


def parity_pass(
    engine: Engine, sess: ort.InferenceSession, source: BatchSource, info: FeatureInfo, split: Split
) -> ParityPass:
    """Score ``split`` natively and with ONNX Runtime; max |difference| over all events."""
    acc = ScoreAccumulator(info.task, info.n_classes)
    worst, n = 0.0, 0
    for batch in source.batches(split):
        if len(batch.y) == 0:
            continue
        check_finite(batch, info.names, split)
        native = engine.predict(batch.X)
        (onnx_scores,) = sess.run(
            [SCORES], {INPUT: np.ascontiguousarray(batch.X, artifact.INPUT_DTYPE)}
        )
        if onnx_scores.shape != native.shape:
            msg = f"ONNX scores have shape {onnx_scores.shape}, native {native.shape}"
            raise TrainingError(msg)
        worst = max(worst, float(np.max(np.abs(onnx_scores - native), initial=0.0)))
        n += len(batch.y)
        acc.add(native, batch.y, batch.w)
    return ParityPass(acc, worst, n)
