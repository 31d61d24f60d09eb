"""ONNX export of a trained engine, and the parity check ONNX Runtime vs the native model.

Every exported model has one input ``features`` (float32, ``(batch, n_features)``, raw
physics features in ``FeatureInfo.names`` order, dynamic batch axis) and one output
``scores`` (see ``onnx_graph.py``); the normalisation is inside the graph. The file
carries its own description in ``metadata_props`` (feature names, task, class names).
Set-based models (an engine with ``input_blocks``) take one input per object collection
and ``scalars`` instead (``artifact.InputBlock``, listed under ``mlaas4hep.inputs``);
``artifact.onnx_feeds`` cuts the flat feature matrix into them everywhere.

``parity_pass`` streams the test split once: native scores for the metrics, ONNX Runtime
scores on the same events for the parity check (maximum absolute difference).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
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


def input_blocks(engine: Engine) -> tuple[artifact.InputBlock, ...]:
    """The engine's graph inputs when it has several; () for the one ``features`` input."""
    return tuple(getattr(engine, "input_blocks", ()))


def onnx_metadata(
    info: FeatureInfo,
    extra: dict[str, str] | None = None,
    inputs: tuple[artifact.InputBlock, ...] = (),
) -> dict[str, str]:
    """What a server needs to describe the model: features, task, classes, normalisation."""
    several = {artifact.PROP_INPUTS: json.dumps([b.to_json() for b in inputs])} if inputs else {}
    meta = several | {
        artifact.PROP_FEATURES: json.dumps(list(info.names)),
        artifact.PROP_TASK: info.task,
        artifact.PROP_CLASS_NAMES: json.dumps(list(info.class_names)),
        artifact.PROP_NORMALIZE: info.normalize,
        artifact.PROP_INPUT: INPUT if not inputs else ",".join(b.name for b in inputs),
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
        blocks = input_blocks(engine)
        _check_interface(model, len(info.names), blocks)
        add_metadata(model, onnx_metadata(info, extra, blocks))
        onnx.save(model, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _check_interface(
    model: Any, n_features: int, blocks: tuple[artifact.InputBlock, ...] = ()
) -> None:
    graph_inputs = [i for i in model.graph.input if i.name not in _initializers(model)]
    inputs = [i.name for i in graph_inputs]
    outputs = [o.name for o in model.graph.output]
    shapes = {b.name: b.shape for b in blocks} or {INPUT: (n_features,)}
    if inputs != list(shapes) or outputs != [SCORES]:
        msg = (
            f"the exported graph has inputs {inputs!r} and outputs {outputs!r}; "
            f"expected {list(shapes)!r} and [{SCORES!r}] (an exporter bug, please report it)"
        )
        raise TrainingError(msg)
    for value in graph_inputs:
        dims = value.type.tensor_type.shape.dim
        want = shapes[value.name]
        fixed = [d.dim_value for d in dims[1:]]
        if len(dims) != 1 + len(want) or dims[0].dim_value or fixed != list(want):
            msg = (
                f"the exported input {value.name!r} is not (batch, "
                f"{', '.join(map(str, want))}) with a dynamic batch axis"
            )
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
    blocks = input_blocks(engine)
    for batch in source.batches(split):
        if len(batch.y) == 0:
            continue
        check_finite(batch, info.names, split)
        native = engine.predict(batch.X)
        (onnx_scores,) = sess.run([SCORES], artifact.onnx_feeds(batch.X, info.names, blocks))
        if onnx_scores.shape != native.shape:
            msg = f"ONNX scores have shape {onnx_scores.shape}, native {native.shape}"
            raise TrainingError(msg)
        worst = max(worst, float(np.max(np.abs(onnx_scores - native), initial=0.0)))
        n += len(batch.y)
        acc.add(native, batch.y, batch.w)
    return ParityPass(acc, worst, n)


def onnx_scorer(
    sess: ort.InferenceSession, info: FeatureInfo, engine: Engine
) -> Callable[[np.ndarray], np.ndarray]:
    """Scores of a flat feature matrix by the exported model (e.g. for importances)."""
    blocks = input_blocks(engine)

    def predict(X: np.ndarray) -> np.ndarray:
        feeds = artifact.onnx_feeds(X, info.names, blocks)
        return np.asarray(sess.run([SCORES], feeds)[0])

    return predict
