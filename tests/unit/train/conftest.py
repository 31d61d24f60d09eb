from __future__ import annotations

from typing import Any

from mlaas4hep.spec import PipelineSpec, load_spec

from .fakes import NAMES


def make_spec(model: dict[str, Any] | None = None, **train: Any) -> PipelineSpec:
    """A valid spec whose data section is never read (the tests feed a FakeSource)."""
    raw = {
        "name": "unit-test",
        "data": {"tree": "Events", "datasets": [{"name": "sig", "files": ["x.root"], "label": 1}]},
        "preprocess": {"features": {"scalars": list(NAMES)}},
        "model": model or {"kind": "mlp", "hidden": [32, 16]},
        "train": {"epochs": 3, "batch_size": 256, "lr": 3e-3, "seed": 7, "device": "cpu"} | train,
    }
    return load_spec(raw)
