"""The artifact format: ``model.onnx`` plus ``metadata.json`` (documented in docs/inference.md).

A version directory holds::

    model.onnx       float inputs with a dynamic batch axis (-1)
    metadata.json    {"format": "mlaas4hep-model/1", "inputs": [...], "outputs": [...],
                      "feature_names": [...], "spec_hash": ..., "metrics": {...}, ...}

``metadata.json`` is optional: without it the tensors are read from the ONNX graph.
Datatypes use the Open Inference Protocol names (``FP32``, ``INT64``, ...).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlaas4hep.artifact import (
    MAX_DOCUMENT_BYTES,
    METADATA_FILE,
    METADATA_FORMAT,
    read_document,
)
from mlaas4hep.errors import SpecError

FORMAT = METADATA_FORMAT
#: metadata.json comes from users (uploads, jobs): parsed with size and depth caps.
MAX_METADATA_BYTES = MAX_DOCUMENT_BYTES

# V2 datatype name <-> numpy dtype. BYTES is not served: our models take numbers.
V2_TO_NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
NUMPY_TO_V2 = {dtype: name for name, dtype in V2_TO_NUMPY.items()}
# ONNX Runtime's type strings ("tensor(float)") -> V2 names.
ORT_TO_V2 = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
}


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """Return the numpy dtype of a V2 datatype name; raise SpecError listing the known ones."""
    try:
        return V2_TO_NUMPY[datatype]
    except KeyError:
        msg = f"unsupported datatype {datatype!r}; supported: {', '.join(V2_TO_NUMPY)}"
        raise SpecError(msg) from None


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: V2 datatype and shape (-1 for a dynamic axis, first = batch)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @property
    def dtype(self) -> np.dtype[Any]:
        return numpy_dtype(self.datatype)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> TensorSpec:
        try:
            shape = tuple(int(d) for d in data["shape"])
            spec = cls(str(data["name"]), str(data["datatype"]), shape)
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"{where}: a tensor needs 'name', 'datatype' and 'shape' (ints); got {data!r}"
            raise SpecError(msg) from exc
        numpy_dtype(spec.datatype)
        if not spec.shape:
            msg = f"{where}: tensor {spec.name!r} needs a batch axis; got shape []"
            raise SpecError(msg)
        return spec


@dataclass(frozen=True)
class ModelMetadata:
    """What a model version declares about itself (``metadata.json``)."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    feature_names: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    spec_hash: str | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    created: str | None = None
    description: str = ""
    #: k of a k-folded model (its graph also takes an optional ``fold`` input), else None
    folds: int | None = None
    #: A k-folded model's ``data.identifiers`` and split seed: the service computes each
    #: row's fold from identifier inputs with them (serve/folds.py); empty/None: it cannot
    fold_identifiers: tuple[str, ...] = ()
    fold_seed: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "feature_names": list(self.feature_names),
            "labels": list(self.labels),
            "spec_hash": self.spec_hash,
            "metrics": dict(self.metrics),
            "created": self.created,
            "description": self.description,
            **({"folds": self.folds} if self.folds else {}),
            **({"fold_identifiers": list(self.fold_identifiers)} if self.fold_identifiers else {}),
            **({"fold_seed": self.fold_seed} if self.fold_seed is not None else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> ModelMetadata:
        """Parse a ``metadata.json`` document; raise SpecError naming *where* on errors."""
        fmt = data.get("format", FORMAT)
        if fmt != FORMAT:
            msg = f"{where}: unknown metadata format {fmt!r}; expected {FORMAT!r}"
            raise SpecError(msg)
        inputs = tuple(TensorSpec.from_json(t, where) for t in data.get("inputs", []))
        outputs = tuple(TensorSpec.from_json(t, where) for t in data.get("outputs", []))
        if not inputs or not outputs:
            msg = f"{where}: metadata needs at least one input and one output tensor"
            raise SpecError(msg)
        return cls(
            inputs=inputs,
            outputs=outputs,
            feature_names=tuple(str(n) for n in data.get("feature_names") or ()),
            labels=tuple(str(n) for n in data.get("labels") or ()),
            spec_hash=data.get("spec_hash"),
            metrics=dict(data.get("metrics") or {}),
            created=data.get("created"),
            description=str(data.get("description") or ""),
            folds=_folds(data.get("folds"), where),
            fold_identifiers=_fold_identifiers(data.get("fold_identifiers"), where),
            fold_seed=_fold_seed(data.get("fold_seed"), where),
        )


def _folds(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 64:
        msg = f"{where}: 'folds' must be the number of fold models (2..64), got {value!r}"
        raise SpecError(msg)
    return value


def _fold_identifiers(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        msg = f"{where}: 'fold_identifiers' must be a list of branch names, got {value!r}"
        raise SpecError(msg)
    return tuple(value)


def _fold_seed(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
        msg = f"{where}: 'fold_seed' must be the split seed (an integer 0..2**64-1), got {value!r}"
        raise SpecError(msg)
    return value


def read_metadata(version_dir: Path) -> ModelMetadata | None:
    """Read ``metadata.json`` of a version directory, or None when it has none."""
    path = version_dir / METADATA_FILE
    if not path.is_file():
        return None
    data = read_document(path)
    if not isinstance(data, dict):
        msg = f"{str(path)!r} must hold a JSON object, got {type(data).__name__}"
        raise SpecError(msg)
    return ModelMetadata.from_json(data, str(path))


def write_metadata(version_dir: Path, metadata: ModelMetadata) -> None:
    """Write ``metadata.json`` atomically (temp file + rename)."""
    tmp = version_dir / (METADATA_FILE + ".tmp")
    tmp.write_text(json.dumps(metadata.to_json(), indent=2) + "\n", encoding="utf-8")
    tmp.replace(version_dir / METADATA_FILE)
