"""The ``model`` and ``train`` sections: the engine and its options, how to train it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from mlaas4hep.spec.base import _Strict

# Which ModelSpec options belong to which kind (``kind`` itself belongs to all).
MODEL_OPTIONS: dict[str, tuple[str, ...]] = {
    "mlp": ("hidden", "activation", "dropout", "batch_norm"),
    "xgboost": (
        "max_depth",
        "n_estimators",
        "learning_rate",
        "subsample",
        "colsample_bytree",
        "min_child_weight",
        "reg_lambda",
    ),
    "sgd": ("loss", "penalty", "alpha"),
    "python": ("module", "function", "framework"),
    "deepsets": ("phi", "rho", "pooling", "activation", "dropout"),
    "transformer": (
        "embed_dim",
        "heads",
        "layers",
        "ff_dim",
        "pairwise",
        "pooling",
        "rho",
        "activation",
        "dropout",
    ),
}


#: The most hidden layers of one network (``hidden``, ``phi``, ``rho``): far beyond any
#: useful depth, and a 200,000-layer list would otherwise be built and trained.
MAX_LAYERS = 64


class ModelSpec(_Strict):
    """The model: ``kind`` picks the engine; each kind accepts only its own options.

    All options have defaults so engines read them as attributes; setting an option of
    another kind (``max_depth`` on an ``mlp``) is a validation error.
    """

    kind: Literal["mlp", "xgboost", "sgd", "python", "deepsets", "transformer"] = "mlp"
    # mlp
    hidden: list[Annotated[int, Field(ge=1, le=65536)]] = Field(
        default_factory=lambda: [64, 32], max_length=MAX_LAYERS, description="layer widths"
    )
    activation: Literal["relu", "tanh", "sigmoid", "gelu", "silu", "elu", "leaky_relu"] = "relu"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    batch_norm: bool = False
    # xgboost
    max_depth: int = Field(default=6, ge=1, le=64)
    n_estimators: int = Field(default=200, ge=1, le=100_000)
    learning_rate: float = Field(default=0.1, gt=0.0, le=10.0)
    subsample: float = Field(default=1.0, gt=0.0, le=1.0)
    colsample_bytree: float = Field(default=1.0, gt=0.0, le=1.0)
    min_child_weight: float = Field(default=1.0, ge=0.0)
    reg_lambda: float = Field(default=1.0, ge=0.0)
    # sgd
    loss: Literal["log_loss", "modified_huber", "hinge", "squared_error", "huber"] = "log_loss"
    penalty: Literal["l2", "l1", "elasticnet"] = "l2"
    alpha: float = Field(default=1e-4, ge=0.0)
    # python (user code; opt-in by server configuration)
    module: str | None = Field(default=None, description="path of the user's model file")
    function: str = Field(default="build_model", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    framework: Literal["torch", "keras"] = "torch"
    # deepsets, transformer (set-based models over preprocess.features.objects)
    phi: list[Annotated[int, Field(ge=1, le=65536)]] = Field(
        default_factory=lambda: [64, 64],
        max_length=MAX_LAYERS,
        description="per-object network widths (deepsets)",
    )
    rho: list[Annotated[int, Field(ge=1, le=65536)]] = Field(
        default_factory=lambda: [64, 32],
        max_length=MAX_LAYERS,
        description="widths after pooling (+ the scalars)",
    )
    pooling: Literal["mean", "sum", "max"] = Field(
        default="sum", description="over the present objects (masks exclude the padded ones)"
    )
    embed_dim: int = Field(default=32, ge=1, le=4096, description="transformer token width")
    heads: int = Field(default=4, ge=1, le=64)
    layers: int = Field(default=2, ge=1, le=48)
    ff_dim: int = Field(default=64, ge=1, le=65536, description="feed-forward width per layer")
    pairwise: bool = Field(
        default=False,
        description="attention bias from ΔR and invariant mass of object pairs (pt/eta/phi)",
    )

    @model_validator(mode="after")
    def _options_of_kind(self) -> ModelSpec:
        allowed = set(MODEL_OPTIONS[self.kind]) | {"kind"}
        foreign = sorted(self.model_fields_set - allowed)
        if foreign:
            owners: dict[str, str] = {}
            for k, opts in MODEL_OPTIONS.items():
                for o in opts:
                    owners.setdefault(o, k)
            where = ", ".join(f"{o!r} (a {owners[o]} option)" for o in foreign)
            msg = (
                f"model kind {self.kind!r} does not take {where}; options of {self.kind!r}: "
                f"{', '.join(MODEL_OPTIONS[self.kind])}"
            )
            raise ValueError(msg)
        if self.kind == "python" and not self.module:
            raise ValueError("model kind 'python' needs 'module': the path of your model file")
        if self.kind == "transformer" and self.embed_dim % self.heads:
            msg = (
                f"model.embed_dim ({self.embed_dim!r}) must be a multiple of model.heads "
                f"({self.heads!r}); e.g. embed_dim: "
                f"{self.heads * max(1, self.embed_dim // self.heads)}"
            )
            raise ValueError(msg)
        return self

    @model_serializer(mode="wrap")
    def _dump_own_options(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Dump only this kind's options so a dumped spec validates again (and hashes the same
        # whatever defaults the other kinds have).
        data: dict[str, Any] = handler(self)
        keep = {"kind", *MODEL_OPTIONS[self.kind]}
        return {k: v for k, v in data.items() if k in keep}


class TrainSpec(_Strict):
    """How to train: epochs, batches, optimiser, early stopping, device, seed."""

    epochs: int = Field(default=10, ge=1, le=100_000)
    batch_size: int = Field(default=1024, ge=1, le=10_000_000)
    lr: float = Field(default=1e-3, gt=0.0, le=10.0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = Field(default=0.0, ge=0.0)
    early_stopping: int | None = Field(
        default=3, ge=1, description="patience in epochs on the validation loss; null = off"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool | Literal["bf16", "fp16"] = Field(
        default=False,
        description="mixed precision on CUDA (torch engines): true = bf16 where the GPU has it, "
        "else fp16 (with a gradient scaler); ignored on the CPU",
    )
    seed: int = Field(default=42, ge=0, lt=2**32)
    shuffle_buffer: int = Field(default=100_000, ge=1, le=100_000_000, description="events")
    folds: int | None = Field(
        default=None, ge=2, le=20,
        description="k-folding: k models, each trained without one fold of the events "
        "(docs/training.md, k-folding); null = one model",
    )  # fmt: skip
