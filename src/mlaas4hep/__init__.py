"""mlaas4hep: Machine Learning as a Service for High-Energy Physics."""

from __future__ import annotations

__version__ = "0.1.0"

import importlib
from typing import Any

__all__ = ["Client", "Model", "__version__"]


def __getattr__(name: str) -> Any:
    """``mlaas4hep.Model`` (``mlaas4hep.apply.Model``) and ``mlaas4hep.Client``
    (``mlaas4hep.client.Client``), imported on first use: the CLI and
    the service start without loading awkward and ONNX Runtime."""
    if name == "Client":
        return importlib.import_module("mlaas4hep.client").Client
    if name == "Model":
        # By name, not an import statement: the root package is imported by every layer
        # (serve included), and only analysis code asking for Model should load apply/.
        return importlib.import_module("mlaas4hep.apply").Model
    msg = f"module 'mlaas4hep' has no attribute {name!r}"
    raise AttributeError(msg)
