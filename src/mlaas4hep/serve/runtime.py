"""ONNX Runtime sessions: tuned threading, metadata checks, warm-up.

Loading: the model file is read without following a link, checked to reference no
external file, and handed to ONNX Runtime as bytes.

Threading: one session per model version, ``intra_op_threads`` threads for the operators,
sequential execution (our graphs are chains of dense layers), and spinning disabled so idle
ORT threads do not steal the cores the event loop needs between batches.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from mlaas4hep.artifact import (
    METRICS_FILE,
    MODEL_FILE,
    PROP_CLASS_NAMES,
    PROP_FEATURES,
    PROP_SPEC_HASH,
    PROP_TASK,
)
from mlaas4hep.documents import load_json
from mlaas4hep.errors import PayloadTooLarge, SpecError
from mlaas4hep.serve.intake import IntakeLimits, read_regular
from mlaas4hep.serve.metadata import (
    MAX_METADATA_BYTES,
    ORT_TO_V2,
    ModelMetadata,
    TensorSpec,
    read_metadata,
)
from mlaas4hep.serve.onnx_check import check_self_contained

Tensors = dict[str, np.ndarray[Any, Any]]
MAX_MODEL_BYTES = IntakeLimits().max_model_bytes


_EXTERNAL_FOLDER_KEY = "session.model_external_initializers_file_folder_path"
_NO_FOLDER = "/nonexistent/mlaas4hep-models-carry-no-external-data"


def session_options(threads: int) -> ort.SessionOptions:
    """Session options tuned for serving on a few cores."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    # Defence in depth behind onnx_check: sessions are built from bytes, and ORT would
    # resolve an external-data file name against the process's working directory. Point
    # it at a directory that does not exist, so no file can ever be named.
    opts.add_session_config_entry(_EXTERNAL_FOLDER_KEY, _NO_FOLDER)
    opts.log_severity_level = 3
    return opts


class OnnxModel:
    """One loaded model version: an ORT session plus its checked metadata.

    ``run`` is thread-safe (ORT sessions are) and blocking: call it off the event loop.
    """

    def __init__(self, version_dir: Path, threads: int, max_bytes: int = MAX_MODEL_BYTES) -> None:
        path = version_dir / MODEL_FILE
        # The model goes to ORT as checked bytes, never as a path: a tensor with external
        # data would otherwise be read from a file beside the model (serve/onnx_check.py).
        try:
            data = read_regular(path, max_bytes)
        except OSError as exc:
            msg = f"cannot read {str(path)!r}: {exc.strerror or exc}"
            raise SpecError(msg) from exc
        check_self_contained(data, f"{str(path)!r}")
        try:
            self._session = ort.InferenceSession(
                data, session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own untyped errors (Fail, InvalidGraph, ...)
            msg = f"cannot load {str(path)!r} with ONNX Runtime: {exc}"
            raise SpecError(msg) from exc
        graph = _graph_metadata(self._session, version_dir)
        fixed = [t.name for t in graph.inputs if t.shape[0] != -1]
        if fixed:
            msg = (
                f"{str(path)!r}: inputs {fixed} have a fixed first axis; export the model "
                f"with a dynamic batch axis (dynamic_axes={{name: {{0: 'batch'}}}})"
            )
            raise SpecError(msg)
        declared = read_metadata(version_dir)
        self.metadata = graph if declared is None else _check_against(declared, graph, path)
        self._output_names = [t.name for t in self.metadata.outputs]

    def run(self, inputs: Mapping[str, np.ndarray[Any, Any]]) -> Tensors:
        """Run the graph on a full batch; return every declared output by name."""
        values = self._session.run(self._output_names, dict(inputs))
        return dict(zip(self._output_names, values, strict=True))

    def warm_up(self, rows: int = 1) -> None:
        """Run once on zeros so the first real request does not pay for lazy set-up."""
        inputs = self.metadata.inputs
        self.run({t.name: np.zeros(_concrete(t.shape, rows), t.dtype) for t in inputs})

    def inline_rows(self, budget_s: float = 2e-4, probe_rows: int = 64) -> int:
        """Largest batch (a power of two, maybe 0) estimated to run within *budget_s*.

        Handing a batch to a thread costs tens of microseconds; batches cheaper than that
        run on the event loop instead. Measured on zeros, best of a few runs.
        """
        self.warm_up(probe_rows)
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            self.warm_up(probe_rows)
            best = min(best, time.perf_counter() - start)
        per_row = best / probe_rows
        rows = 0
        while rows < (1 << 16) and max(rows * 2, 1) * per_row <= budget_s:
            rows = max(rows * 2, 1)
        return rows


def _concrete(shape: tuple[int, ...], rows: int) -> tuple[int, ...]:
    return (rows, *(d if d > 0 else 1 for d in shape[1:]))


def _graph_metadata(session: ort.InferenceSession, version_dir: Path) -> ModelMetadata:
    """Tensors from the graph; names, labels, spec hash from the training bundle, if any.

    The training layer's export carries ``mlaas4hep.*`` entries in ``metadata_props``
    and writes ``metrics.json`` next to the model, so a bundle directory is deployable
    without a ``metadata.json``.
    """

    def spec(arg: Any) -> TensorSpec:
        datatype = ORT_TO_V2.get(arg.type)
        if datatype is None:
            msg = f"tensor {arg.name!r} has type {arg.type!r}; served types: {sorted(ORT_TO_V2)}"
            raise SpecError(msg)
        shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in arg.shape)
        return TensorSpec(arg.name, datatype, shape or (-1,))

    props = session.get_modelmeta().custom_metadata_map
    model_file = version_dir / MODEL_FILE
    return ModelMetadata(
        inputs=tuple(spec(a) for a in session.get_inputs()),
        outputs=tuple(spec(a) for a in session.get_outputs()),
        feature_names=tuple(_json_list(props.get(PROP_FEATURES))),
        labels=tuple(_json_list(props.get(PROP_CLASS_NAMES))),
        spec_hash=props.get(PROP_SPEC_HASH),
        metrics=_bundle_metrics(version_dir / METRICS_FILE),
        created=datetime.fromtimestamp(model_file.stat().st_mtime, UTC).isoformat(),
        description=f"task: {props[PROP_TASK]}" if PROP_TASK in props else "",
    )


def _json_list(text: str | None) -> list[str]:
    try:
        value = load_json(text, what="model metadata", limit=MAX_METADATA_BYTES) if text else []
    except (ValueError, PayloadTooLarge):  # DocumentError is a ValueError
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _bundle_metrics(path: Path) -> dict[str, Any]:
    """Scalar test metrics of a training bundle's ``metrics.json`` (empty if none)."""
    try:
        doc = load_json(path.read_bytes(), what=METRICS_FILE, limit=MAX_METADATA_BYTES)
    except (OSError, ValueError, PayloadTooLarge):  # a job wrote it: hostile until parsed
        return {}
    if not isinstance(doc, dict):
        return {}
    test = doc.get("test")
    section: dict[str, Any] = test if isinstance(test, dict) else doc
    return {k: v for k, v in section.items() if isinstance(v, int | float)}


def _check_against(declared: ModelMetadata, graph: ModelMetadata, path: Path) -> ModelMetadata:
    """Trust metadata.json for names/features, but only if it matches the graph."""
    for kind, mine, theirs in (
        ("input", declared.inputs, graph.inputs),
        ("output", declared.outputs, graph.outputs),
    ):
        graph_by_name = {t.name: t for t in theirs}
        for t in mine:
            real = graph_by_name.get(t.name)
            if real is None:
                msg = (
                    f"{str(path)!r}: metadata.json names {kind} {t.name!r}, the graph has "
                    f"{sorted(graph_by_name)}; re-export or fix metadata.json"
                )
                raise SpecError(msg)
            if real.datatype != t.datatype or len(real.shape) != len(t.shape):
                msg = (
                    f"{str(path)!r}: {kind} {t.name!r} is {t.datatype}{list(t.shape)} in "
                    f"metadata.json but {real.datatype}{list(real.shape)} in the graph"
                )
                raise SpecError(msg)
    if {t.name for t in declared.inputs} != {t.name for t in graph.inputs}:
        msg = f"{str(path)!r}: metadata.json must list every graph input: {graph.inputs}"
        raise SpecError(msg)
    # The graph's dims win over the declared ones: they are what ORT will check.
    real_in = {t.name: t for t in graph.inputs}
    return replace(declared, inputs=tuple(real_in[t.name] for t in declared.inputs))
