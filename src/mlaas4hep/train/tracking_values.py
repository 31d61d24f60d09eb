"""What an MLflow export logs, as pure functions of the bundle's documents.

Params are the resolved spec's ``model``, ``train`` and ``preprocess`` sections flattened
to dotted keys, within MLflow's limits (``mlflow.utils.validation``, restated here so that
the server refuses nothing): a longer value is cut, a key MLflow would refuse is left out,
params past :data:`MAX_PARAMS` are left out, and each case is a note. Metrics are the
numbers of ``metrics.json``: each ``history`` epoch (``step = epoch``) and the final
values. Used by :mod:`mlaas4hep.train.tracking`; no MLflow import here.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_EXPERIMENT_NAME_LENGTH = 500
#: A bound of ours: a spec with thousands of defines still exports, its tail as a note.
MAX_PARAMS = 1000
_KEY = re.compile(r"^[/\w.\- :]*$")
_TRUNCATED = "...[truncated]"
_PARAM_SECTIONS = ("model", "train", "preprocess")


def flatten_params(spec: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """The ``model``/``train``/``preprocess`` settings as MLflow params, and notes on what
    was cut or left out to stay within MLflow's limits."""
    params: dict[str, str] = {}
    notes: list[str] = []
    skipped = 0
    for key, value in _leaves((s, spec.get(s)) for s in _PARAM_SECTIONS if s in spec):
        if not valid_key(key):
            notes.append(f"param {key[:80]!r} left out: MLflow refuses that key")
            continue
        if len(params) >= MAX_PARAMS:
            skipped += 1
            continue
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        if len(text) > MAX_PARAM_VALUE_LENGTH:
            text = text[: MAX_PARAM_VALUE_LENGTH - len(_TRUNCATED)] + _TRUNCATED
            notes.append(f"param {key!r} cut to {MAX_PARAM_VALUE_LENGTH} characters")
        params[key] = text
    if skipped:
        notes.append(f"{skipped} params past the first {MAX_PARAMS} left out (see spec.yaml)")
    return params, notes


def _leaves(items: Iterator[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
    for key, value in items:
        if isinstance(value, Mapping) and value:
            yield from _leaves((f"{key}.{k}", v) for k, v in value.items())
        else:
            yield key, value


def valid_key(key: str) -> bool:
    norm = os.path.normpath(key)
    return (
        0 < len(key) <= MAX_KEY_LENGTH
        and _KEY.match(key) is not None
        and norm == key
        and not norm.startswith(("..", "/"))
    )


def epoch_metrics(history: Sequence[Any]) -> list[tuple[str, float, int]]:
    """``(key, value, step)`` of each finite number in each epoch of *history*."""
    out = []
    for row in history:
        if not isinstance(row, Mapping) or not isinstance(row.get("epoch"), int):
            continue
        out += [(k, v, row["epoch"]) for k, v in _numbers(row).items() if k != "epoch"]
    return out


def final_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The run's final values: ``<evaluated_on>_*`` (``test_auc``...), ``train_sample_*``,
    ``training_*`` and ``onnx_max_abs_diff``."""
    on = str(metrics.get("evaluated_on") or "test")
    out: dict[str, float] = {}
    for section, prefix in (
        ("test", on),
        ("train_sample", "train_sample"),
        ("training", "training"),
    ):
        block = metrics.get(section)
        if isinstance(block, Mapping):
            out.update({f"{prefix}_{k}": v for k, v in _numbers(block).items()})
    onnx = metrics.get("onnx")
    if isinstance(onnx, Mapping) and _finite(onnx.get("max_abs_diff")):
        out["onnx_max_abs_diff"] = float(onnx["max_abs_diff"])
    return {k: v for k, v in out.items() if valid_key(k)}


def _numbers(block: Mapping[str, Any]) -> dict[str, float]:
    return {str(k): float(v) for k, v in block.items() if _finite(v)}


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(_TRUNCATED)] + _TRUNCATED
