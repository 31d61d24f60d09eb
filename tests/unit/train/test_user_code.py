"""User model files: PyTorch ``build_model`` and old-style Keras ``model(idim)``."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from mlaas4hep.errors import TrainingError, UserCodeError
from mlaas4hep.train.export import PARITY_TOLERANCE
from mlaas4hep.train.run import run_source

from .conftest import make_spec
from .fakes import FakeSource

TORCH_MODEL = """
import torch

def build_model(n_inputs, n_outputs):
    return torch.nn.Sequential(
        torch.nn.Linear(n_inputs, 32), torch.nn.ReLU(), torch.nn.Linear(32, n_outputs)
    )
"""

# The MLaaS4HEP convention: a compiled Keras model with a sigmoid output.
KERAS_MODEL = """
import keras

def model(idim):
    m = keras.Sequential([
        keras.Input(shape=(idim,)),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    m.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return m
"""


def write(tmp_path: Path, text: str, name: str = "user_model.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def python_spec(module: str, **model: Any) -> Any:
    return make_spec({"kind": "python", "module": module, **model})


def test_torch_user_model_learns_and_exports(tmp_path: Path) -> None:
    spec = python_spec(write(tmp_path, TORCH_MODEL))
    result = run_source(spec, FakeSource(), tmp_path / "out", allow_user_code=True)
    assert result.metrics["test"]["auc"] >= 0.8
    assert result.metrics["onnx"]["max_abs_diff"] < PARITY_TOLERANCE


@pytest.mark.slow
def test_keras_model_in_the_mlaas4hep_convention_runs_on_torch(tmp_path: Path) -> None:
    spec = python_spec(write(tmp_path, KERAS_MODEL), framework="keras")
    result = run_source(spec, FakeSource(), tmp_path / "out", allow_user_code=True)
    assert result.metrics["test"]["auc"] >= 0.8
    assert result.metrics["onnx"]["max_abs_diff"] < PARITY_TOLERANCE


def test_user_code_is_refused_unless_allowed(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    module = write(tmp_path, f"open({str(marker)!r}, 'w').close()\n" + TORCH_MODEL)
    with pytest.raises(UserCodeError, match="does not allow"):
        run_source(python_spec(module), FakeSource(), tmp_path / "out")
    assert not marker.exists()  # the file was never executed


def test_missing_function_lists_what_the_module_has(tmp_path: Path) -> None:
    module = write(tmp_path, TORCH_MODEL.replace("def build_model", "def make_net"))
    with pytest.raises(UserCodeError, match=r"no function 'build_model'.*'make_net'"):
        run_source(python_spec(module), FakeSource(), tmp_path / "out", allow_user_code=True)


def test_missing_module_file(tmp_path: Path) -> None:
    with pytest.raises(UserCodeError, match="does not exist"):
        run_source(
            python_spec(str(tmp_path / "nope.py")), FakeSource(), tmp_path, allow_user_code=True
        )


def test_wrong_input_size_names_the_feature_count(tmp_path: Path) -> None:
    module = write(tmp_path, TORCH_MODEL.replace("Linear(n_inputs, 32)", "Linear(4, 32)"))
    with pytest.raises(TrainingError, match="does not accept 6 input features"):
        run_source(python_spec(module), FakeSource(), tmp_path / "out", allow_user_code=True)


def test_wrong_output_size_is_reported(tmp_path: Path) -> None:
    module = write(tmp_path, TORCH_MODEL.replace("Linear(32, n_outputs)", "Linear(32, 2)"))
    with pytest.raises(TrainingError, match=r"shape \(2, 2\).*expected \(2, 1\)"):
        run_source(python_spec(module), FakeSource(), tmp_path / "out", allow_user_code=True)


def test_errors_inside_user_code_are_wrapped(tmp_path: Path) -> None:
    module = write(tmp_path, "import not_a_module_anywhere\n")
    with pytest.raises(UserCodeError, match="ModuleNotFoundError"):
        run_source(python_spec(module), FakeSource(), tmp_path / "out", allow_user_code=True)
    module = write(tmp_path, "def build_model(n, m):\n    return 42\n", "bad.py")
    with pytest.raises(UserCodeError, match=r"returned int, not a torch\.nn\.Module"):
        run_source(python_spec(module), FakeSource(), tmp_path / "out", allow_user_code=True)
