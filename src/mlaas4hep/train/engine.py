"""The interface every training engine implements, and the registry of engines.

An engine owns one model. The training loop (``loop.py``) drives it epoch by epoch over
the feature stream and does everything engine-independent itself (validation, early
stopping, checkpoint files, progress). An engine sees *raw* physics features: it applies
the normalisation of ``FeatureInfo`` inside its model, so the exported ONNX graph takes raw
features too.

The registry maps ``spec.model.kind`` to a dotted path, imported only when selected, so
choosing ``sgd`` never imports torch:

    mlp      -> mlaas4hep.train.torch_mlp:TorchEngine      (PyTorch MLP)
    python   -> mlaas4hep.train.user_code:UserCodeEngine   (user PyTorch / Keras 3 model)
    xgboost  -> mlaas4hep.train.xgb:XGBoostEngine          (external-memory DMatrix)
    sgd      -> mlaas4hep.train.sk:SGDEngine               (scikit-learn partial_fit)
    deepsets, transformer -> mlaas4hep.train.torch_sets:SetEngine  (over object collections)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np

from mlaas4hep.errors import SpecError, TrainingError, closest
from mlaas4hep.spec import FeaturesSpec, ModelSpec, TrainSpec

if TYPE_CHECKING:
    from mlaas4hep.preprocess.pipeline import FeatureBatch, FeatureInfo

# kind -> ("module:Class", extra to install when the import fails)
ENGINES: dict[str, tuple[str, str]] = {
    "mlp": ("mlaas4hep.train.torch_mlp:TorchEngine", "torch"),
    "python": ("mlaas4hep.train.user_code:UserCodeEngine", "torch (and keras for Keras models)"),
    "xgboost": ("mlaas4hep.train.xgb:XGBoostEngine", "xgboost-cpu (or xgboost)"),
    "sgd": ("mlaas4hep.train.sk:SGDEngine", "scikit-learn"),
    "deepsets": ("mlaas4hep.train.torch_sets:SetEngine", "torch"),
    "transformer": ("mlaas4hep.train.torch_sets:SetEngine", "torch"),
}

OnBatch = Callable[[int], None]
"""Called by an engine after each batch with the number of events it just consumed."""


@dataclass(frozen=True)
class EngineContext:
    """Everything an engine needs to build its model.

    ``model`` and ``train`` are the ``spec.model`` and ``spec.train`` sections; ``work_dir``
    is a private scratch directory (e.g. XGBoost's external-memory cache); ``features``
    the ``preprocess.features`` section (set-based models read their collections there).
    """

    info: FeatureInfo
    model: ModelSpec
    train: TrainSpec
    work_dir: Path
    allow_user_code: bool = False
    features: FeaturesSpec | None = None

    @property
    def n_inputs(self) -> int:
        return len(self.info.names)

    @property
    def n_outputs(self) -> int:
        """Model outputs: one per class for multiclass, one otherwise."""
        return self.info.n_classes if self.info.task == "multiclass" else 1


class Engine(Protocol):
    """One trainable model; see the module docstring for the division of labour."""

    #: True when the engine updates the model batch by batch, so a checkpoint in the middle
    #: of an epoch is meaningful (torch, sgd); False when it needs the whole epoch (xgboost).
    streaming: bool

    def train_epoch(self, batches: Iterable[FeatureBatch], epoch: int, on_batch: OnBatch) -> float:
        """Train on the given train batches (already positioned); return the mean train loss."""
        ...

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Scores of raw features ``X`` (float32, ``(n, n_features)``): ``(n, n_outputs)``."""
        ...

    def save(self, directory: Path) -> None:
        """Write the model and optimiser state into the (existing, empty) ``directory``."""
        ...

    def load(self, directory: Path) -> None:
        """Restore what ``save`` wrote."""
        ...

    def export_onnx(self, path: Path) -> None:
        """Write an ONNX model: input ``features`` (raw, float32, dynamic batch), output
        ``scores`` with the same values as ``predict``."""
        ...

    def feature_importances(self) -> np.ndarray | None:
        """One importance per feature, or None when the model has no such notion."""
        ...

    def close(self) -> None:
        """Free training-only resources (data caches); ``predict`` and export still work."""
        ...


def engine_class(kind: str) -> type[Any]:
    """The engine class for ``spec.model.kind``, imported on demand.

    Raises ``SpecError`` for an unknown kind (listing the known ones) and ``TrainingError``
    when the engine's library is not installed (with what to install).
    """
    if kind not in ENGINES:
        msg = f"unknown model kind {kind!r}; {closest(kind, ENGINES)}"
        raise SpecError(msg)
    target, install = ENGINES[kind]
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        msg = (
            f"model kind {kind!r} needs {install}, which cannot be imported ({exc}); "
            f"install it, e.g. pip install 'mlaas4hep[train]'"
        )
        raise TrainingError(msg) from exc
    return cast(type[Any], getattr(module, attr))


def create_engine(ctx: EngineContext) -> Engine:
    """Build the engine selected by ``ctx.model.kind``."""
    cls = engine_class(ctx.model.kind)
    return cast(Engine, cls(ctx))
