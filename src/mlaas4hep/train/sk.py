"""scikit-learn engine: linear models trained incrementally with ``partial_fit``.

``SGDClassifier`` (binary, multiclass) or ``SGDRegressor`` (regression) sees each train
chunk once per epoch, normalised with ``FeatureInfo``'s offset/scale. For export the model
is put behind a ``StandardScaler`` holding the same offset/scale, so the ONNX graph
(skl2onnx) takes raw features.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import SGDClassifier, SGDRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from mlaas4hep.errors import TrainingError
from mlaas4hep.train import evaluate
from mlaas4hep.train.engine import EngineContext, OnBatch
from mlaas4hep.train.onnx_graph import finalize_scores

if TYPE_CHECKING:
    from mlaas4hep.preprocess.pipeline import FeatureBatch

_CLASSIFIER_LOSSES = ("log_loss", "modified_huber")
_REGRESSOR_LOSSES = ("squared_error", "huber")
_CHECKPOINT = "sgd.pkl"


class SGDEngine:
    """Incremental linear model; see the module docstring."""

    streaming = True

    def __init__(self, ctx: EngineContext) -> None:
        self.ctx = ctx
        info = ctx.info
        self.offset = np.asarray(info.offset, dtype=np.float64)
        self.scale = np.where(np.asarray(info.scale) == 0, 1.0, info.scale).astype(np.float64)
        self.model = self._estimator()

    def _estimator(self) -> SGDClassifier | SGDRegressor:
        m, task = self.ctx.model, self.ctx.info.task
        allowed = _REGRESSOR_LOSSES if task == "regression" else _CLASSIFIER_LOSSES
        if m.loss not in allowed:
            msg = (
                f"model.loss {m.loss!r} cannot be used for a {task} task with kind 'sgd' "
                f"(it must give {'predictions' if task == 'regression' else 'probabilities'}); "
                f"use one of {', '.join(map(repr, allowed))}"
            )
            raise TrainingError(msg)
        common: dict[str, Any] = {
            "loss": m.loss,
            "penalty": m.penalty,
            "alpha": m.alpha,
            "random_state": self.ctx.train.seed,
            # Averaged SGD: far less sensitive to the step size and the last noisy updates.
            "average": True,
        }
        if task == "regression":
            return SGDRegressor(**common)
        return SGDClassifier(**common)

    def _normalise(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.offset) / self.scale).astype(np.float32)

    def train_epoch(self, batches: Iterable[FeatureBatch], epoch: int, on_batch: OnBatch) -> float:
        """One ``partial_fit`` per chunk; returns the weighted mean loss seen while training."""
        info = self.ctx.info
        total, weight = 0.0, 0.0
        kwargs: dict[str, Any] = {}
        if info.task != "regression":
            kwargs["classes"] = np.arange(evaluate.class_count(info.task, info.n_classes))
        for batch in batches:
            Xn = self._normalise(batch.X)
            with warnings.catch_warnings():
                # partial_fit does one pass by design; "not converged" is expected noise.
                warnings.simplefilter("ignore", ConvergenceWarning)
                self.model.partial_fit(Xn, batch.y, sample_weight=batch.w, **kwargs)
            scores = self._scores(Xn)
            w_sum = float(np.sum(batch.w, dtype=np.float64))
            total += evaluate.loss(info.task, scores, batch.y, batch.w) * w_sum
            weight += w_sum
            on_batch(len(batch.y))
        return total / weight if weight > 0 else float("nan")

    def _scores(self, Xn: np.ndarray) -> np.ndarray:
        if len(Xn) == 0:
            return np.zeros((0, self.ctx.n_outputs), np.float32)
        if self.ctx.info.task == "regression":
            return np.asarray(self.model.predict(Xn), np.float32).reshape(-1, 1)
        proba = np.asarray(self.model.predict_proba(Xn), np.float32)
        return proba[:, 1:2] if self.ctx.info.task == "binary" else proba

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._scores(self._normalise(X))

    def save(self, directory: Path) -> None:
        (directory / _CHECKPOINT).write_bytes(pickle.dumps(self.model))

    def load(self, directory: Path) -> None:
        # The checkpoint was written by this run into its own output directory; it is never
        # a file a user uploads, so unpickling it runs no foreign code.
        self.model = pickle.loads((directory / _CHECKPOINT).read_bytes())  # noqa: S301

    def pipeline(self) -> Pipeline:
        """The fitted model behind a scaler with the normalisation constants."""
        scaler = StandardScaler()
        scaler.mean_ = self.offset
        scaler.scale_ = self.scale
        scaler.var_ = self.scale**2
        scaler.n_features_in_ = self.ctx.n_inputs
        scaler.n_samples_seen_ = 1
        return Pipeline([("normalise", scaler), ("model", self.model)])

    def export_onnx(self, path: Path) -> None:
        """skl2onnx conversion of ``pipeline()``, then one ``scores`` output like ``predict``."""
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType

        options = {} if self.ctx.info.task == "regression" else {id(self.model): {"zipmap": False}}
        try:
            proto = convert_sklearn(
                self.pipeline(),
                initial_types=[("features", FloatTensorType([None, self.ctx.n_inputs]))],
                options=options,
            )
        except (RuntimeError, ValueError, NotImplementedError) as exc:
            msg = f"cannot convert the scikit-learn model to ONNX: {exc}"
            raise TrainingError(msg) from exc
        source = "variable" if self.ctx.info.task == "regression" else "probabilities"
        proto = finalize_scores(proto, source, self.ctx.info.task)
        path.write_bytes(proto.SerializeToString())

    def feature_importances(self) -> np.ndarray | None:
        """Mean |coefficient| per (normalised) feature."""
        coef = np.atleast_2d(np.asarray(self.model.coef_))
        importances: np.ndarray = np.mean(np.abs(coef), axis=0)
        return importances

    def close(self) -> None:
        """Nothing to free: this engine keeps no data between batches."""
