"""XGBoost engine, fed through XGBoost's external-memory data iterator.

The train split is streamed once per run into an ``ExtMemQuantileDMatrix`` whose pages live
in a cache directory on disk, so the data size is bounded by the disk, not by memory. An
"epoch" of the training loop adds ``ceil(n_estimators / epochs)`` boosting rounds to the
same booster, so validation, early stopping and checkpoints work as for the other engines.

Trees do not need normalised inputs; the booster sees raw features, and so does its ONNX
graph (converted with onnxmltools).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xgboost as xgb

from mlaas4hep.errors import TrainingError
from mlaas4hep.train.engine import EngineContext, OnBatch
from mlaas4hep.train.onnx_graph import finalize_scores

if TYPE_CHECKING:
    from mlaas4hep.preprocess.pipeline import FeatureBatch

_MAX_BIN = 256
_OPSET = 15  # the highest opset onnxmltools' XGBoost converter supports
_CHECKPOINT = "booster.ubj"
_OBJECTIVES = {"binary": "binary:logistic", "multiclass": "multi:softprob"}


class _BatchIter(xgb.DataIter):
    """Hands the feature batches to XGBoost; XGBoost may reset and re-read it."""

    def __init__(self, batches: Iterable[FeatureBatch], cache: Path, on_batch: OnBatch) -> None:
        self._batches = batches
        self._it: Iterator[FeatureBatch] | None = None
        self._on_batch = on_batch
        self._first_pass = True
        self.error: BaseException | None = None
        super().__init__(cache_prefix=str(cache), release_data=True)

    def next(self, input_data: Callable[..., Any]) -> bool:
        try:
            return self._next(input_data)
        except BaseException as exc:
            # XGBoost calls this from C and only keeps ``Exception``s; a KeyboardInterrupt
            # (or our own errors) must survive the trip: end the data here, re-raise later.
            self.error = exc
            return False

    def _next(self, input_data: Callable[..., Any]) -> bool:
        if self._it is None:
            self._it = iter(self._batches)
        batch = next(self._it, None)
        if batch is None:
            return False
        input_data(data=batch.X, label=batch.y, weight=batch.w)
        if self._first_pass:
            self._on_batch(len(batch.y))
        return True

    def reset(self) -> None:
        if self._it is not None:
            self._first_pass = False
        self._it = None


class XGBoostEngine:
    """Gradient-boosted trees; see the module docstring."""

    streaming = False

    def __init__(self, ctx: EngineContext) -> None:
        self.ctx = ctx
        self.booster: xgb.Booster | None = None
        self._dtrain: xgb.DMatrix | None = None
        self._cache = Path(tempfile.mkdtemp(prefix="xgb-", dir=ctx.work_dir))
        self.rounds_per_epoch = max(1, math.ceil(ctx.model.n_estimators / ctx.train.epochs))

    def params(self) -> dict[str, Any]:
        """XGBoost parameters derived from the spec."""
        m, task = self.ctx.model, self.ctx.info.task
        params: dict[str, Any] = {
            "objective": _OBJECTIVES.get(task, "reg:squarederror"),
            "tree_method": "hist",
            "max_bin": _MAX_BIN,
            "max_depth": m.max_depth,
            "eta": m.learning_rate,
            "subsample": m.subsample,
            "colsample_bytree": m.colsample_bytree,
            "min_child_weight": m.min_child_weight,
            "lambda": m.reg_lambda,
            "seed": self.ctx.train.seed,
            "device": "cuda" if self.ctx.train.device == "cuda" else "cpu",
        }
        if task == "multiclass":
            params["num_class"] = self.ctx.info.n_classes
        return params

    def train_epoch(self, batches: Iterable[FeatureBatch], epoch: int, on_batch: OnBatch) -> float:
        """Add ``rounds_per_epoch`` trees; the first call streams the data to the disk cache."""
        if self._dtrain is None:
            self._dtrain = self._build_dmatrix(batches, on_batch)
        remaining = self.ctx.model.n_estimators - self.rounds_done
        rounds = min(self.rounds_per_epoch, remaining)
        if rounds <= 0:
            return float("nan")
        history: dict[str, Any] = {}
        try:
            self.booster = xgb.train(
                self.params(),
                self._dtrain,
                num_boost_round=rounds,
                xgb_model=self.booster,
                evals=[(self._dtrain, "train")],
                evals_result=history,
                verbose_eval=False,
            )
        except xgb.core.XGBoostError as exc:
            msg = f"XGBoost failed while training epoch {epoch}: {exc}"
            raise TrainingError(msg) from exc
        values = next(iter(history["train"].values()))
        return float(values[-1])

    def _build_dmatrix(self, batches: Iterable[FeatureBatch], on_batch: OnBatch) -> xgb.DMatrix:
        it = _BatchIter(batches, self._cache / "train", on_batch)
        try:
            matrix = xgb.ExtMemQuantileDMatrix(it, max_bin=_MAX_BIN)
        except xgb.core.XGBoostError as exc:
            if it.error is not None:
                raise it.error from None
            msg = f"XGBoost cannot build its external-memory matrix in {self._cache}: {exc}"
            raise TrainingError(msg) from exc
        if it.error is not None:
            del matrix  # built from part of the data: free it (and its cache) right away
            raise it.error
        return matrix

    @property
    def rounds_done(self) -> int:
        return 0 if self.booster is None else int(self.booster.num_boosted_rounds())

    def _require_booster(self) -> xgb.Booster:
        if self.booster is None:
            raise TrainingError("the XGBoost model has not been trained yet")
        return self.booster

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Probabilities (binary: of class 1) or predictions, shape ``(n, n_outputs)``."""
        if len(X) == 0:
            return np.zeros((0, self.ctx.n_outputs), np.float32)
        out = self._require_booster().inplace_predict(np.ascontiguousarray(X))
        return np.asarray(out, dtype=np.float32).reshape(len(X), self.ctx.n_outputs)

    def save(self, directory: Path) -> None:
        self._require_booster().save_model(str(directory / _CHECKPOINT))

    def load(self, directory: Path) -> None:
        booster = xgb.Booster()
        booster.load_model(str(directory / _CHECKPOINT))
        self.booster = booster

    def export_onnx(self, path: Path) -> None:
        """onnxmltools conversion, then one ``scores`` output like ``predict``."""
        from onnxmltools.convert import convert_xgboost
        from onnxmltools.convert.common.data_types import FloatTensorType

        n = self.ctx.n_inputs
        try:
            proto = convert_xgboost(
                self._require_booster(),
                initial_types=[("features", FloatTensorType([None, n]))],
                target_opset=_OPSET,
            )
        except (RuntimeError, ValueError, KeyError, NotImplementedError) as exc:
            msg = f"cannot convert the XGBoost model to ONNX: {exc}"
            raise TrainingError(msg) from exc
        source = "variable" if self.ctx.info.task == "regression" else "probabilities"
        proto = finalize_scores(proto, source, self.ctx.info.task)
        path.write_bytes(proto.SerializeToString())

    def feature_importances(self) -> np.ndarray | None:
        """Total gain per feature (0 for features no tree uses)."""
        gain = self._require_booster().get_score(importance_type="total_gain")
        out = np.zeros(self.ctx.n_inputs)
        for key, value in gain.items():
            out[int(key.lstrip("f"))] = float(np.asarray(value).sum())
        return out

    def close(self) -> None:
        """Drop the external-memory matrix and its cache directory."""
        self._dtrain = None  # freed now: XGBoost deletes its page files itself
        shutil.rmtree(self._cache, ignore_errors=True)
