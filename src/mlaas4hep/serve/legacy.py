"""The legacy TFaaS calls (``POST /json``, ``GET /models``), as plain Python.

``POST /json`` takes ``{"keys": [...], "values": [...], "model": "name"}``: ``values`` is
one row (a flat list) or many (a list of lists), in the model's feature order. Unlike the
old server, ``keys`` is not ignored when the model knows its feature names: the values are
reordered to match, and keys that do not match the model's features are an error (instead
of a silently wrong prediction). The answer is the model's first output: one list for one
row (e.g. ``[0.086]``), a list of lists for many rows. ``"model": "NAME@ALIAS"`` scores
with the version an alias points to (docs/inference.md, "Model registry").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from mlaas4hep.auth.principal import Principal
from mlaas4hep.documents import load_json
from mlaas4hep.errors import DocumentError
from mlaas4hep.serve.codec import Array
from mlaas4hep.serve.dataplane import DataPlane
from mlaas4hep.serve.errors import InvalidInput
from mlaas4hep.serve.manager import LoadedVersion
from mlaas4hep.serve.registry import split_ref


async def predict_json(plane: DataPlane, principal: Principal, body: bytes) -> bytes:
    """Answer a TFaaS ``/json`` request body with the JSON response body."""
    ref, keys, values = _parse(body)
    name, alias = split_ref(ref, None)  # "model": "NAME@ALIAS" (serve/registry.py)
    plane.check(principal, "infer", name)  # before lookup: no existence leak to outsiders
    loaded = plane.manager.get(name, plane.manager.resolve(name, alias))
    rows, single = _as_matrix(values, loaded)
    if keys:
        rows = _reorder(rows, keys, loaded.metadata.feature_names)
    output = await plane.predict_rows(principal, name, rows, str(loaded.version))
    return orjson.dumps(output[0] if single else output, option=orjson.OPT_SERIALIZE_NUMPY)


def models(plane: DataPlane, principal: Principal) -> list[dict[str, Any]] | None:
    """TFaaS ``/models``: one entry per model the caller may read, or None when empty."""
    entries = []
    for name in plane.manager.names():
        if not plane.can(principal, "read", name):
            continue
        loaded = plane.manager.get(name)
        meta = loaded.metadata
        entries.append(
            {
                "name": name,
                "model": "model.onnx",
                "labels": list(meta.labels),
                "options": {"version": str(loaded.version), "feature_names": meta.feature_names},
                "inputNode": meta.inputs[0].name,
                "outputNode": meta.outputs[0].name,
                "description": meta.description,
                "timestamp": meta.created or "",
            }
        )
    return entries or None


def _parse(body: bytes) -> tuple[str, list[str], Any]:
    try:
        doc = load_json(body, what="the body", limit=len(body))
    except DocumentError as exc:
        msg = f'{exc}; send {{"keys": [...], "values": [...], "model": ...}}'
        raise InvalidInput(msg) from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), str):
        msg = 'the body needs "model" (a name) and "values" (a row or a list of rows)'
        raise InvalidInput(msg)
    keys = doc.get("keys") or []
    if not isinstance(keys, list):  # the elements are checked when they are used
        msg = f'"keys" must be a list of feature names, got {keys!r:.200}'
        raise InvalidInput(msg)
    if "values" not in doc:
        msg = 'the body has no "values"; send a row of numbers or a list of rows'
        raise InvalidInput(msg)
    return doc["model"], keys, doc["values"]


def _as_matrix(values: Any, loaded: LoadedVersion) -> tuple[Array, bool]:
    spec = loaded.metadata.inputs[0]
    try:
        array = np.asarray(values, dtype=spec.dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        msg = f'"values" must be numbers (a row) or a list of equal-length rows: {exc}'
        raise InvalidInput(msg) from exc
    if array.ndim == 1:
        return array.reshape(1, -1), True
    if array.ndim != 2:
        msg = f'"values" must be a row or a list of rows, got {array.ndim} nested levels'
        raise InvalidInput(msg)
    return array, False


def _reorder(rows: Array, keys: list[str], features: tuple[str, ...]) -> Array:
    if not features or tuple(keys) == features:
        return rows
    if not all(isinstance(k, str) for k in keys):
        msg = f'"keys" must be a list of feature names, got {keys!r:.200}'
        raise InvalidInput(msg)
    if len(keys) != rows.shape[1] or set(keys) != set(features):
        missing = sorted(set(features) - set(keys))
        unknown = sorted(set(keys) - set(features))
        msg = (
            f'"keys" do not match the model\'s features: missing {missing[:10]}, unknown '
            f"{unknown[:10]}; send one value per feature (or omit keys to use model order)"
        )
        raise InvalidInput(msg)
    index = {k: i for i, k in enumerate(keys)}
    return rows[:, [index[f] for f in features]]
