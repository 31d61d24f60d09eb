"""The model page: metadata, the registry (versions, aliases, serving policy), the predict
form (defaults from the bundle's statistics, a pasted event) and the query snippets.

Everything goes through the inference service's data plane and its registry
(:mod:`mlaas4hep.serve.model_registry`): the same permission checks as ``/v2``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.responses import Response

from mlaas4hep.api.ui import views
from mlaas4hep.api.ui.context import UiContext
from mlaas4hep.auth.principal import Principal
from mlaas4hep.documents import load_json
from mlaas4hep.errors import DocumentError, PayloadTooLarge, SpecError
from mlaas4hep.serve.model_registry import ModelRegistry

MAX_FEATURES = 4096
MAX_EVENT_BYTES = 256 << 10


def registry_of(ctx: UiContext) -> ModelRegistry:
    """The registry of the service's inference routes (SpecError without them)."""
    if ctx.inference is None:
        raise SpecError("this service runs without the inference routes")
    return ModelRegistry(ctx.inference.plane)


async def render_model(
    ctx: UiContext,
    request: Request,
    caller: Principal,
    name: str,
    *,
    values: list[str] | None = None,
    event: str = "",
    result: list[Any] | None = None,
    error: str | None = None,
    confirm: Mapping[str, Any] | None = None,
    status: int = 200,
) -> Response:
    """The model page of *name* for *caller*; *confirm*: a pending alias change to ask
    about (``{"action", "alias", "version", "current"}``)."""
    registry = registry_of(ctx)
    assert ctx.inference is not None  # registry_of checked it
    meta = ctx.inference.plane.model_metadata(caller, name, None)
    view = await registry.view(caller, name)
    features = feature_labels(meta)
    defaults = registry.feature_defaults(caller, name)
    if values is None:
        start = defaults.values if defaults else (0.0,) * len(features)
        values = [f"{v:g}" for v in start]
    first = meta["inputs"][0]
    base = str(request.base_url).rstrip("/")
    deployed = request.query_params.get("deployed")
    return ctx.pages.render(
        request,
        "model.html",
        caller=caller,
        page="models",
        name=name,
        meta=meta,
        params=meta["parameters"],
        registry=view,
        served=_served_by_alias(view),
        features=features,
        values=values,
        defaults_from=defaults.source if defaults else None,
        event=event,
        result=result,
        error=error,
        confirm=confirm,
        status=status,
        deployed=deployed,
        retired=_not_loaded(view) if deployed else [],
        changed=request.query_params.get("changed"),
        curl=views.curl_snippet(base, name, len(features), first["name"]),
        triton=views.triton_snippet(request.url.netloc, name, len(features), first["name"]),
    )


def _served_by_alias(view: Mapping[str, Any]) -> dict[str, int]:
    return dict(view["aliases"])


def _not_loaded(view: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [v for v in view["versions"] if v["status"] == "not loaded"]


def feature_labels(meta: dict[str, Any]) -> list[str]:
    """The predict form's fields: the feature names, else ``feature i`` per input column."""
    names = list(meta["parameters"].get("feature_names") or [])
    if names:
        return names
    shape = meta["inputs"][0]["shape"]
    width = shape[1] if len(shape) == 2 and isinstance(shape[1], int) and shape[1] > 0 else 1
    return [f"feature {i}" for i in range(min(width, MAX_FEATURES))]


def event_values(text: str, features: list[str], values: list[str]) -> list[str]:
    """The form's values with a pasted event applied: a JSON object ``{feature: value}``
    (features it leaves out keep their field) or a list of one value per feature."""
    try:
        doc = load_json(text, what="the pasted event", limit=MAX_EVENT_BYTES)
    except (DocumentError, PayloadTooLarge) as exc:
        msg = f"{exc}; paste a JSON object {{feature: value}} or a list of values"
        raise SpecError(msg) from exc
    if isinstance(doc, list):
        if len(doc) != len(features):
            msg = f"the pasted list has {len(doc)} values; the model takes {len(features)}"
            raise SpecError(msg)
        return [_number_text(v, f) for v, f in zip(doc, features, strict=True)]
    if not isinstance(doc, dict):
        msg = f"paste a JSON object {{feature: value}} or a list, not {type(doc).__name__}"
        raise SpecError(msg)
    unknown = sorted(set(doc) - set(features))
    if unknown:
        msg = f"the pasted event names unknown features {unknown[:10]}; the model takes " + (
            ", ".join(features[:20]) + (" ..." if len(features) > 20 else "")
        )
        raise SpecError(msg)
    filled = list(values) + ["0"] * (len(features) - len(values))
    return [_number_text(doc[f], f) if f in doc else filled[i] for i, f in enumerate(features)]


def _number_text(value: Any, feature: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"feature {feature!r}: {value!r} is not a number"
        raise SpecError(msg)
    return repr(value) if isinstance(value, float) else str(value)


def row_of(values: list[str], features: list[str]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """One row of numbers from the form (a message naming the field that is not one)."""
    out = []
    for i, text in enumerate(values):
        label = features[i] if i < len(features) else f"value {i + 1}"
        try:
            value = float(text.strip())
        except ValueError:
            msg = f"{label} ({text!r}) is not a number"
            raise SpecError(msg) from None
        if not math.isfinite(value):
            msg = f"{label} ({text!r}) is not a finite number"
            raise SpecError(msg)
        out.append(value)
    if not out:
        raise SpecError("the form sent no values")
    return np.asarray([out], dtype=np.float64)
