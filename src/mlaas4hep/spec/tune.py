"""The ``tune`` section: a hyperparameter search (train/tune.py) and what it may vary.

The checks of a search against the rest of the spec (tunable paths, valid extremes) are
``PipelineSpec``'s (spec/pipeline.py); ``with_params`` builds a trial's spec
(spec/loading.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from mlaas4hep.spec.base import _Strict
from mlaas4hep.spec.model import MODEL_OPTIONS

# Training options a search may vary (besides the options of the model's kind).
TUNABLE_TRAIN = ("epochs", "batch_size", "lr", "optimizer", "weight_decay", "early_stopping")
# Model options that name code, not a hyperparameter.
_NOT_TUNABLE = frozenset({"module", "function", "framework"})
TUNE_METRICS = ("val_loss", "val_auc", "val_accuracy")


class IntParamSpec(_Strict):
    """An integer option drawn from ``[low, high]`` (every ``step``, or log-uniformly)."""

    type: Literal["int"]
    low: int
    high: int
    step: int = Field(default=1, ge=1)
    log: bool = False


class FloatParamSpec(_Strict):
    """A real option drawn from ``[low, high]``, uniformly or (``log: true``) log-uniformly."""

    type: Literal["float"]
    low: float = Field(allow_inf_nan=False)
    high: float = Field(allow_inf_nan=False)
    log: bool = False


class CategoricalParamSpec(_Strict):
    """An option chosen among ``choices`` (lists allowed, e.g. ``model.hidden`` layouts)."""

    type: Literal["categorical"]
    choices: list[Any] = Field(min_length=1, max_length=1000)


ParamSpec = Annotated[
    IntParamSpec | FloatParamSpec | CategoricalParamSpec, Field(discriminator="type")
]


class PruningSpec(_Strict):
    """Stop unpromising trials early: Optuna's median rule on the per-epoch ``metric``.

    A trial is stopped after an epoch when its best value so far is worse than the median
    of the finished trials at the same epoch; not before ``startup_trials`` trials have
    finished, nor in a trial's first ``warmup_epochs`` epochs.
    """

    enabled: bool = True
    startup_trials: int = Field(default=2, ge=0, le=1000)
    warmup_epochs: int = Field(default=1, ge=0, le=100_000)


class TuneSpec(_Strict):
    """A hyperparameter search over model and training options (docs/training.md).

    ``space`` maps a spec path (``model.hidden``, ``train.lr``) to its range; every trial
    is the spec with those values, validated again. The best trial (by ``metric`` on the
    validation split) is the run's model.
    """

    space: dict[str, ParamSpec] = Field(min_length=1, max_length=64)
    metric: Literal["val_loss", "val_auc", "val_accuracy"] = "val_loss"
    direction: Literal["auto", "minimize", "maximize"] = Field(
        default="auto", description="auto: minimize a loss, maximize AUC or accuracy"
    )
    n_trials: int | None = Field(default=10, ge=1, le=10_000, description="null: until timeout")
    timeout: float | None = Field(
        default=None, gt=0, le=30 * 86400, description="seconds; no trial starts after it"
    )
    parallel: int = Field(default=1, ge=1, le=256, description="trials run at once")
    sampler: Literal["tpe", "random"] = "tpe"
    seed: int = Field(default=0, ge=0, lt=2**32, description="of the sampler")
    pruning: PruningSpec = Field(default_factory=PruningSpec)

    @model_validator(mode="after")
    def _budget(self) -> TuneSpec:
        if self.n_trials is None and self.timeout is None:
            raise ValueError("give n_trials or timeout (or both): the search's budget")
        for path, param in self.space.items():
            if not isinstance(param, CategoricalParamSpec) and param.low > param.high:
                msg = f"space.{path}: low {param.low!r} is above high {param.high!r}"
                raise ValueError(msg)
            if isinstance(param, IntParamSpec | FloatParamSpec) and param.log and param.low <= 0:
                msg = f"space.{path}: log: true needs low > 0, got {param.low!r}"
                raise ValueError(msg)
        return self

    def resolved_direction(self) -> Literal["minimize", "maximize"]:
        """``direction``, with ``auto`` decided by the metric."""
        if self.direction != "auto":
            return self.direction
        return "minimize" if self.metric == "val_loss" else "maximize"


def tunable_paths(kind: str) -> list[str]:
    """The spec paths a search may vary for a model of *kind*."""
    model = [f"model.{o}" for o in MODEL_OPTIONS.get(kind, ()) if o not in _NOT_TUNABLE]
    return model + [f"train.{o}" for o in TUNABLE_TRAIN]
