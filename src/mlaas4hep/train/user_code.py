"""User-provided models (``model.kind: python``): a PyTorch module or a Keras 3 model file.

Two conventions, chosen by ``model.framework``:

* ``torch``: the file defines ``build_model(n_inputs, n_outputs) -> torch.nn.Module`` (the
  function name is ``model.function``). The module maps *normalised* features to logits (or
  to the regression value); mlaas4hep adds the normalisation in front and the sigmoid /
  softmax behind.
* ``keras``: the old MLaaS4HEP convention, ``model(idim)`` returning a Keras model (usually
  compiled, with a sigmoid last layer). It runs on Keras 3's torch backend, so no TensorFlow
  is needed; the compiled optimiser and loss are ignored, training uses ``spec.train``. A
  last layer with a sigmoid/softmax activation is detected and trained on probabilities.

Loading a user file executes it: it is refused unless ``allow_user_code`` is set (server
configuration), and in the service it only happens inside the job's sandboxed process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from mlaas4hep.errors import UserCodeError
from mlaas4hep.train.engine import EngineContext
from mlaas4hep.train.torch_mlp import TorchEngine

_KERAS_LEGACY_FUNCTION = "model"
_PROBABILITY_ACTIVATIONS = ("sigmoid", "softmax")


def load_user_module(path: str | Path, *, allow_user_code: bool) -> ModuleType:
    """Import the Python file at ``path`` (only when ``allow_user_code``).

    Raises ``UserCodeError`` when user code is not allowed, the file is missing, or importing
    it fails (the message carries the user's exception).
    """
    if not allow_user_code:
        msg = (
            f"model kind 'python' runs user code from {str(path)!r}, which this server does "
            "not allow; ask the operator to enable user code, or use kind 'mlp', 'xgboost' "
            "or 'sgd'"
        )
        raise UserCodeError(msg)
    file = Path(path)
    if not file.is_file():
        msg = f"model module {str(path)!r} does not exist (or is not a file); check model.module"
        raise UserCodeError(msg)
    name = "mlaas4hep_user_" + hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise UserCodeError(f"cannot import {str(path)!r} as a Python module; is it a .py file?")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # any error inside user code is the user's to fix
        msg = f"importing the model module {str(path)!r} failed: {type(exc).__name__}: {exc}"
        raise UserCodeError(msg) from exc
    return module


def user_function(module: ModuleType, name: str, path: str) -> Any:
    """``module.name`` if it is callable, else a ``UserCodeError`` listing what is there."""
    fn = getattr(module, name, None)
    if not callable(fn):
        found = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        msg = (
            f"model module {path!r} has no function {name!r} (model.function); "
            f"callables found: {found or 'none'}"
        )
        raise UserCodeError(msg)
    return fn


def _call_user(fn: Any, path: str, *args: int) -> Any:
    try:
        return fn(*args)
    except Exception as exc:  # the user's function failed; say where
        msg = f"{path}: {fn.__name__}{args!r} raised {type(exc).__name__}: {exc}"
        raise UserCodeError(msg) from exc


def build_torch_model(module: ModuleType, function: str, path: str, n_in: int, n_out: int) -> Any:
    """Call the user's ``build_model(n_inputs, n_outputs)``; it must return an ``nn.Module``."""
    net = _call_user(user_function(module, function, path), path, n_in, n_out)
    if not isinstance(net, nn.Module):
        msg = f"{path}: {function}() returned {type(net).__name__}, not a torch.nn.Module"
        raise UserCodeError(msg)
    return net


def build_keras_model(module: ModuleType, function: str, path: str, n_in: int) -> Any:
    """Call the user's ``model(idim)`` and check it is a Keras model on the torch backend."""
    keras = import_keras()
    fn_name = function
    if function == "build_model" and not hasattr(module, function):
        fn_name = _KERAS_LEGACY_FUNCTION  # the old MLaaS4HEP name, when none was given
    net = _call_user(user_function(module, fn_name, path), path, n_in)
    if not isinstance(net, keras.Model) or not isinstance(net, nn.Module):
        msg = f"{path}: {fn_name}() returned {type(net).__name__}, not a keras.Model"
        raise UserCodeError(msg)
    return net


def import_keras() -> Any:
    """Import Keras 3 on its torch backend; explain how to fix any other set-up."""
    # Keras reads the backend once, at import; torch is the only backend we ship.
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        keras = importlib.import_module("keras")
    except ImportError as exc:
        raise UserCodeError("Keras models need Keras 3: pip install keras") from exc
    if keras.backend.backend() != "torch":
        msg = (
            f"Keras runs on the {keras.backend.backend()!r} backend; mlaas4hep needs 'torch': "
            "set KERAS_BACKEND=torch before starting"
        )
        raise UserCodeError(msg)
    return keras


def outputs_probabilities(net: Any) -> bool:
    """True when a Keras model's last layer ends in a sigmoid or softmax."""
    layers = getattr(net, "layers", None) or []
    activation = getattr(layers[-1], "activation", None) if layers else None
    return getattr(activation, "__name__", "") in _PROBABILITY_ACTIVATIONS


class UserCodeEngine(TorchEngine):
    """``TorchEngine`` around a user-built network (see the module docstring)."""

    def __init__(self, ctx: EngineContext) -> None:
        if ctx.model.framework == "keras" and ctx.allow_user_code:
            import_keras()  # before the user's file does ``import keras`` with another backend
        self.module = load_user_module(str(ctx.model.module), allow_user_code=ctx.allow_user_code)
        super().__init__(ctx)

    def build_network(self) -> tuple[nn.Module, bool]:
        m, path = self.ctx.model, str(self.ctx.model.module)
        if m.framework == "keras":
            net = build_keras_model(self.module, m.function, path, self.ctx.n_inputs)
            return net, outputs_probabilities(net)
        net = build_torch_model(
            self.module, m.function, path, self.ctx.n_inputs, self.ctx.n_outputs
        )
        return net, False
