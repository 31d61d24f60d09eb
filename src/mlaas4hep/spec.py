"""The pipeline spec: the one contract between layers.

A physicist writes it as YAML or JSON; it is validated here (pydantic, strict: unknown
keys are errors) and every layer below reads only these models. ``version`` lets the
format evolve; ``load_spec`` turns validation failures into a ``SpecError`` that names
the field path and what is allowed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from mlaas4hep.documents import load_yaml
from mlaas4hep.errors import PayloadTooLarge, SpecError, closest

SPEC_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSpec(_Strict):
    """One input dataset: a name, its files, the label of its events and its own steps.

    ``define`` and ``cuts`` apply to this dataset only (docs/pipeline.md, *Per-dataset
    cuts, defines and labels*): a define of the same name as a ``preprocess.define``
    replaces it in place, other names are added after the global defines; the cuts come
    after the global ones. ``label`` is a number or a label expression; ``class`` names
    one of ``preprocess.classes`` (several datasets may name the same class).
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.+-]+$")
    files: list[str] = Field(
        min_length=1,
        description="local paths, globs, @filelist.txt, root:// or http(s):// URLs",
    )
    label: int | float | str | None = Field(
        default=None, description="target of its events: a number, or a label expression"
    )
    class_: str | None = Field(
        default=None, alias="class", min_length=1, max_length=200,
        description="the class of its events: one of preprocess.classes",
    )  # fmt: skip
    weight: str | None = Field(default=None, description="per-event weight expression")
    define: dict[str, str] = Field(
        default_factory=dict, description="this dataset's defines: override or add, ordered"
    )
    cuts: list[str | CutSpec] = Field(
        default_factory=list, description="this dataset's cuts, after the global ones"
    )

    @field_validator("label")
    @classmethod
    def _label_text(cls, label: int | float | str | None) -> int | float | str | None:
        if isinstance(label, str) and not 0 < len(label.strip()) <= 2000:
            raise ValueError("a label expression must be 1 to 2000 characters")
        return label

    @field_validator("define")
    @classmethod
    def _define_names(cls, define: dict[str, str]) -> dict[str, str]:
        for name in define:
            _check_name(name, "define")
        return define

    @model_validator(mode="after")
    def _label_or_class(self) -> DatasetSpec:
        if self.label is not None and self.class_ is not None:
            msg = (
                f"dataset {self.name!r} has both label ({self.label!r}) and class "
                f"({self.class_!r}): give one of them"
            )
            raise ValueError(msg)
        return self

    def cut_list(self) -> list[CutSpec]:
        """This dataset's cuts as ``CutSpec`` objects (see ``PreprocessSpec.cut_list``)."""
        return _cut_specs(self.cuts)


class RemoteSpec(_Strict):
    """How remote (``root://``, ``http(s)://``) files are read: timeouts and retries.

    A transient failure (an expired request, a reset or refused connection) is retried
    ``retries`` times, waiting ``backoff`` seconds before the first retry and twice as long
    before each next one (at most ``max_backoff``, each wait shortened by a random jitter of
    up to half); a read resumes at the chunk that failed. While one chunk is decompressed,
    the next ``readahead`` chunks are already being fetched.
    """

    open_timeout: int = Field(
        default=10, ge=1, le=600, description="seconds to connect to a remote host"
    )
    read_timeout: int = Field(
        default=60, ge=1, le=3600, description="seconds for one open or read request"
    )
    retries: int = Field(default=3, ge=0, le=20, description="retries after a transient error")
    backoff: float = Field(default=1.0, ge=0.0, le=60.0, description="first retry delay (s)")
    max_backoff: float = Field(default=30.0, ge=0.0, le=600.0, description="longest delay (s)")
    readahead: int = Field(
        default=1,
        ge=0,
        le=8,
        description="chunks fetched ahead of the one being read, to hide network latency",
    )


class DataSpec(_Strict):
    """Which ROOT files, which tree, how to chunk them."""

    tree: str | None = Field(default=None, description="TTree/RNTuple name; default: the only one")
    datasets: list[DatasetSpec] = Field(min_length=1)
    identifiers: list[str] = Field(default_factory=lambda: ["run", "luminosityBlock", "event"])
    step_size: int = Field(default=100_000, ge=1, le=50_000_000, description="entries per chunk")
    max_events: int | None = Field(default=None, ge=1, description="per dataset; None = all")
    redirector: str | None = Field(
        default=None, description="prefix for /store/... paths, e.g. root://cms-xrd-global.cern.ch"
    )
    xrootd_proxy: str | None = Field(default=None, description="root://proxy:port to read through")
    xrootd_proxy_mode: Literal["forward", "direct"] = Field(
        default="forward",
        description="forward: root://proxy//root://origin//path (XRootD forwarding proxy); "
        "direct: root://proxy//path (an XCache or a proxy bound to one origin)",
    )
    remote: RemoteSpec = Field(default_factory=RemoteSpec)

    @field_validator("redirector", "xrootd_proxy")
    @classmethod
    def _xrootd_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in ("root", "xroot") or not parts.hostname or parts.path.strip("/"):
            msg = f"expected root://host[:port] without a path, got {value!r}"
            raise ValueError(msg)
        return value.rstrip("/")

    @field_validator("datasets")
    @classmethod
    def _unique_names(cls, datasets: list[DatasetSpec]) -> list[DatasetSpec]:
        counts = Counter(d.name for d in datasets)  # linear: there may be thousands
        dup = sorted(n for n, k in counts.items() if k > 1)
        if dup:
            raise ValueError(f"dataset names must be unique; repeated: {dup}")
        return datasets


# ---------------------------------------------------------------------------------------
# preprocess

_NAME = r"^[A-Za-z][A-Za-z0-9_]*$"
# Words of the expression language that cannot be used as names of defined columns.
RESERVED_NAMES = frozenset(
    {"and", "or", "not", "True", "False", "true", "false"}
    | {"abs", "sqrt", "log", "exp", "sin", "cos", "tan", "arctan2", "sinh", "cosh", "tanh"}
    | {"minimum", "maximum", "clip", "where", "isfinite"}
    | {"count", "sum", "min", "max", "mean", "any", "all", "first", "nth", "sort_by"}
)


class CutSpec(_Strict):
    """An event-level cut with a display name (a plain string is a cut named after itself)."""

    name: str = Field(min_length=1, max_length=200)
    expr: str = Field(min_length=1, max_length=2000)


class ObjectFeatureSpec(_Strict):
    """How one object collection (e.g. ``Jet``) becomes fixed-length feature columns."""

    fields: list[str] = Field(min_length=1, description="e.g. [pt, eta]: read as Jet_pt, Jet_eta")
    sort_by: str | None = Field(default=None, description="field to sort objects by")
    descending: bool = True
    length: int = Field(ge=1, le=1000, description="objects kept per event (clip or pad)")
    pad: float = Field(default=0.0, description="value of missing objects")
    mask: bool = Field(default=False, description="add C_mask_i features (1 present, 0 padded)")

    @field_validator("fields")
    @classmethod
    def _unique_fields(cls, fields: list[str]) -> list[str]:
        dup = sorted({f for f in fields if fields.count(f) > 1})
        if dup:
            raise ValueError(f"object fields must be unique; repeated: {dup}")
        return fields


class FeaturesSpec(_Strict):
    """The feature columns, in this order: scalars, then each collection field by field."""

    scalars: list[str] = Field(default_factory=list, description="per-event branches or defines")
    objects: dict[str, ObjectFeatureSpec] = Field(default_factory=dict)


class SplitSpec(_Strict):
    """Fractions of validation and test events; the split is a hash of the identifiers."""

    validation: float = Field(default=0.2, ge=0.0, lt=1.0)
    test: float = Field(default=0.2, ge=0.0, lt=1.0)
    seed: int = Field(default=42, ge=0, lt=2**63)

    @model_validator(mode="after")
    def _leave_training(self) -> SplitSpec:
        if self.validation + self.test >= 1.0:
            msg = (
                f"validation + test must leave events for training, got "
                f"{self.validation!r} + {self.test!r} >= 1; lower one of them"
            )
            raise ValueError(msg)
        return self


class ReweightAxisSpec(_Strict):
    """One variable of a reweighting and its binning: ``edges``, or ``n`` bins in [lo, hi)."""

    expr: str = Field(
        min_length=1, max_length=2000, description="per-event expression: a branch, a define, ..."
    )
    edges: list[Annotated[float, Field(allow_inf_nan=False)]] | None = Field(
        default=None, description="bin edges, strictly increasing"
    )
    n: int | None = Field(default=None, ge=1, le=10_000, description="number of equal bins")
    lo: float | None = Field(default=None, allow_inf_nan=False, description="first edge")
    hi: float | None = Field(default=None, allow_inf_nan=False, description="last edge")

    @model_validator(mode="after")
    def _one_binning(self) -> ReweightAxisSpec:
        uniform = (self.n, self.lo, self.hi)
        if self.edges is not None:
            if any(v is not None for v in uniform):
                msg = f"{self.expr!r}: give either edges or n/lo/hi, not both"
                raise ValueError(msg)
            e = self.edges
            if not 2 <= len(e) <= 10_001 or any(e[i + 1] <= e[i] for i in range(len(e) - 1)):
                msg = (
                    f"{self.expr!r}: edges must be 2 to 10001 strictly increasing numbers, "
                    f"got {e!r}"
                )
                raise ValueError(msg)
        elif any(v is None for v in uniform):
            msg = f"{self.expr!r}: give the binning: edges: [...], or n, lo and hi"
            raise ValueError(msg)
        elif not self.lo < self.hi:  # type: ignore[operator]
            msg = f"{self.expr!r}: lo must be below hi, got lo={self.lo!r}, hi={self.hi!r}"
            raise ValueError(msg)
        else:
            e = self.bin_edges()  # hi - lo can overflow, n bins can be below the resolution
            finite = all(math.isfinite(x) for x in e)
            if not finite or any(hi <= lo for lo, hi in itertools.pairwise(e)):
                msg = (
                    f"{self.expr!r}: n={self.n!r} bins in [{self.lo!r}, {self.hi!r}) are not "
                    "finite, strictly increasing edges; use a narrower range or fewer bins"
                )
                raise ValueError(msg)
        return self

    def bin_edges(self) -> list[float]:
        """The edges, from ``edges`` or from ``n``, ``lo``, ``hi``."""
        if self.edges is not None:
            return list(self.edges)
        n, lo, hi = self.n or 1, float(self.lo or 0.0), float(self.hi or 1.0)
        return [lo + (hi - lo) * i / n for i in range(n)] + [hi]


class ReweightSpec(_Strict):
    """A histogram reweighting of some classes in one or two variables (docs/training.md).

    Each event of a reweighted class gets its weight multiplied by target / class density
    in its bin, clipped to ``max_weight``; ``target`` is ``flat`` or a class or dataset name.
    """

    variables: list[ReweightAxisSpec] = Field(min_length=1, max_length=2)
    target: str = Field(
        default="flat", min_length=1, max_length=200, description="flat, a class or a dataset"
    )
    classes: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, min_length=1, description="classes reweighted; default: all but the target"
    )
    max_weight: float = Field(
        default=10.0, gt=0.0, le=1e6, description="the largest factor an event gets (clip)"
    )

    @field_validator("variables", mode="before")
    @classmethod
    def _at_most_two(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) > 2:
            msg = (
                f"a reweighting takes 1 or 2 variables, got {len(value)}; "
                "use several reweightings of 1 or 2 variables instead"
            )
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _bounded(self) -> ReweightSpec:
        bins = 1
        for axis in self.variables:
            bins *= len(axis.bin_edges()) - 1
        if bins > 100_000:
            msg = f"a reweighting has at most 100000 bins in all, got {bins}; use fewer bins"
            raise ValueError(msg)
        return self


class PreprocessSpec(_Strict):
    """From raw branches to a feature matrix: define, select, cut, features, labels, split."""

    define: dict[str, str] = Field(default_factory=dict, description="name -> expression, ordered")
    select: dict[str, str] = Field(
        default_factory=dict, description="collection -> per-object mask expression"
    )
    cuts: list[str | CutSpec] = Field(default_factory=list, description="event cuts, in order")
    features: FeaturesSpec = Field(default_factory=FeaturesSpec)
    task: Literal["auto", "binary", "multiclass", "regression"] = "auto"
    label: str | None = Field(default=None, description="label expression; default: per dataset")
    classes: list[str] | None = Field(
        default=None,
        description="class names, in class-index order: for label expressions (values "
        "0..n-1) and for data.datasets[].class",
    )
    weight: str | None = Field(default=None, description="per-event weight expression")
    balance: bool = Field(default=False, description="reweight classes to equal total weight")
    reweight: list[ReweightSpec] = Field(
        default_factory=list,
        max_length=16,
        description="histogram reweightings (after weight, before balance)",
    )
    normalize: Literal["standard", "minmax", "none"] = "standard"
    nonfinite: Literal["error", "drop"] = Field(
        default="error", description="NaN/inf in a feature: fail with a report, or drop events"
    )
    split: SplitSpec = Field(default_factory=SplitSpec)

    @field_validator("define")
    @classmethod
    def _define_names(cls, define: dict[str, str]) -> dict[str, str]:
        for name in define:
            _check_name(name, "define")
        return define

    @field_validator("select")
    @classmethod
    def _select_names(cls, select: dict[str, str]) -> dict[str, str]:
        for name in select:
            _check_name(name, "select")
        return select

    def cut_list(self) -> list[CutSpec]:
        """The cuts as ``CutSpec`` objects (plain strings are named after themselves)."""
        return _cut_specs(self.cuts)

    def feature_count(self) -> int:
        """Number of feature columns the spec asks for."""
        n = len(self.features.scalars)
        for obj in self.features.objects.values():
            n += obj.length * (len(obj.fields) + int(obj.mask))
        return n


def _cut_specs(cuts: list[str | CutSpec]) -> list[CutSpec]:
    return [CutSpec(name=c, expr=c) if isinstance(c, str) else c for c in cuts]


def _check_name(name: str, section: str) -> None:
    if not re.match(_NAME, name):
        msg = (
            f"{section} name {name!r} is not a valid name: use letters, digits and '_', "
            "starting with a letter"
        )
        raise ValueError(msg)
    if name in RESERVED_NAMES:
        msg = f"{section} name {name!r} is a word of the expression language; rename it"
        raise ValueError(msg)


# ---------------------------------------------------------------------------------------
# model, train, deploy

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


class DeploySpec(_Strict):
    """Where the trained model goes: its name in the model repository."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = Field(default="", max_length=2000)


# ---------------------------------------------------------------------------------------
# tune (hyperparameter search, train/tune.py)

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


def with_params(spec: PipelineSpec, params: dict[str, Any]) -> PipelineSpec:
    """*spec* with each ``path: value`` of *params* set, ``tune`` dropped, validated again.

    Raises ``SpecError`` naming the path and value when the result is not a valid spec.
    """
    raw = spec.model_dump(mode="json")
    raw["tune"] = None
    for path, value in params.items():
        section, _, option = path.partition(".")
        raw[section][option] = value
    try:
        return PipelineSpec.model_validate(raw)
    except ValidationError as exc:
        shown = ", ".join(f"{p}={v!r}" for p, v in params.items())
        raise SpecError(format_validation_error(exc, f"the trial spec ({shown})")) from exc


def _check_tune(spec: PipelineSpec) -> None:
    """Every path of ``tune.space`` is tunable here, and its extremes give valid specs."""
    tune = spec.tune
    if tune is None:
        return
    allowed = tunable_paths(spec.model.kind)
    for path, param in tune.space.items():
        if path not in allowed:
            msg = (
                f"tune.space: {path!r} cannot be tuned for model kind {spec.model.kind!r}; "
                f"{closest(path, allowed)}; tunable: {', '.join(allowed)}"
            )
            raise ValueError(msg)
        ends = param.choices if isinstance(param, CategoricalParamSpec) else [param.low, param.high]
        for value in ends:
            _check_option(spec, path, value)
    if not spec.preprocess.split.validation:
        msg = (
            f"tune ranks trials by {tune.metric!r} on the validation split, but "
            "preprocess.split.validation is 0; give it a fraction (e.g. 0.2)"
        )
        raise ValueError(msg)


def _check_option(spec: PipelineSpec, path: str, value: Any) -> None:
    """*value* is valid for the option at *path* (``model.X`` or ``train.X``).

    Only that section is validated again (a whole spec of many datasets, once per choice of
    a large space, would hold the API for minutes); the trials validate whole specs.
    """
    section, _, option = path.partition(".")
    current: ModelSpec | TrainSpec = spec.model if section == "model" else spec.train
    raw = {**current.model_dump(mode="json"), option: value}
    try:
        type(current).model_validate(raw)
    except ValidationError as exc:
        where = f"the trial spec ({path}={value!r})"
        last = format_validation_error(exc, where, root=type(current)).splitlines()[-1]
        detail = f"{section}.{last.strip()}"
        msg = f"tune.space.{path}: the value {value!r} is not valid there: {detail}"
        raise ValueError(msg[:2000]) from None


# ---------------------------------------------------------------------------------------
# the whole pipeline


class PipelineSpec(_Strict):
    """A whole pipeline: data, preprocessing, model, training, deployment."""

    version: Literal[1] = Field(default=1, description="format version of this file")
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
    description: str = Field(default="", max_length=10_000)
    data: DataSpec
    preprocess: PreprocessSpec = Field(default_factory=PreprocessSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    deploy: DeploySpec | None = None
    tune: TuneSpec | None = Field(default=None, description="hyperparameter search")

    @model_validator(mode="after")
    def _tunable(self) -> PipelineSpec:
        _check_tune(self)
        return self

    @model_validator(mode="after")
    def _dataset_labels(self) -> PipelineSpec:
        _check_dataset_labels(self.data.datasets, self.preprocess)
        return self

    @model_validator(mode="after")
    def _consistent(self) -> PipelineSpec:
        pre = self.preprocess
        if pre.feature_count() == 0:
            msg = (
                "preprocess.features is empty: list per-event columns under 'scalars' "
                "and/or collections under 'objects'"
            )
            raise ValueError(msg)
        split = pre.split
        if not self.data.identifiers and (split.validation or split.test):
            msg = (
                "data.identifiers is empty but preprocess.split asks for validation/test "
                "events: name the branches that identify an event (e.g. [run, event])"
            )
            raise ValueError(msg)
        return self

    def spec_hash(self) -> str:
        """SHA-256 (hex) of the canonical JSON form: equal specs have equal hashes."""
        return canonical_hash(self.model_dump(mode="json"))

    def to_yaml(self) -> str:
        """The spec as YAML (defaults included), readable back with ``load_spec``."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _check_dataset_labels(datasets: list[DatasetSpec], pre: PreprocessSpec) -> None:
    """``datasets[].class`` names one of ``preprocess.classes``; a dataset's own label
    expression or class cannot be combined with ``preprocess.label``."""
    names = set(pre.classes or ())  # a set: thousands of datasets x classes stay linear
    for i, d in enumerate(datasets):
        where = f"data.datasets[{i}] ({d.name!r})"
        if d.class_ is not None and not pre.classes:
            msg = (
                f"{where}.class is {d.class_!r} but preprocess.classes is not set: list the "
                "class names there (e.g. classes: [QCD, ttbar, ttH]); a class's index is its "
                "position in that list"
            )
            raise ValueError(msg)
        if d.class_ is not None and pre.classes and d.class_ not in names:
            msg = (
                f"{where}.class {d.class_!r} is not one of preprocess.classes "
                f"{pre.classes!r} ({closest(d.class_, pre.classes)}); fix the name or add "
                "the class to preprocess.classes"
            )
            raise ValueError(msg)
        own = d.class_ is not None or isinstance(d.label, str)
        if own and pre.label is not None:
            kind = "class" if d.class_ is not None else "label expression"
            msg = (
                f"{where} has its own {kind} and preprocess.label is set too: an event has "
                "one label; remove preprocess.label, or this dataset's label"
            )
            raise ValueError(msg)


def canonical_hash(obj: Any) -> str:
    """SHA-256 hex digest of *obj* as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def spec_hash(spec: PipelineSpec) -> str:
    """SHA-256 (hex) of *spec*'s canonical form (same as ``spec.spec_hash()``)."""
    return spec.spec_hash()


# ---------------------------------------------------------------------------------------
# loading

MAX_SPEC_BYTES = 1_000_000


def load_spec(source: str | Path | dict[str, Any]) -> PipelineSpec:
    """Load and validate a pipeline spec.

    *source* is a path (``Path``, or a ``str`` naming an existing file or ending in
    ``.yaml``/``.yml``/``.json``), the YAML/JSON text itself, or an already parsed dict.

    Raises:
        SpecError: unreadable file, bad YAML/JSON, or a field that fails validation; the
            message names each field path (``preprocess.normalize``), the bad value and
            what is allowed.
    """
    if isinstance(source, dict):
        return validate_spec(source)
    text, origin = _read_source(source)
    try:
        raw = load_yaml(text, what=origin, limit=MAX_SPEC_BYTES)
    except PayloadTooLarge as exc:
        raise SpecError(str(exc)) from exc
    if not isinstance(raw, dict):
        msg = (
            f"{origin}: a pipeline spec is a mapping (name:, data:, ...), got {type(raw).__name__}"
        )
        raise SpecError(msg)
    return validate_spec(raw, origin=origin)


def validate_spec(raw: dict[str, Any], *, origin: str = "spec") -> PipelineSpec:
    """Validate an already parsed spec; raises ``SpecError`` (see ``load_spec``)."""
    version = raw.get("version", SPEC_VERSION)
    if version != SPEC_VERSION:
        msg = (
            f"{origin}: version {version!r} is not supported; this mlaas4hep reads version "
            f"{SPEC_VERSION} (set 'version: {SPEC_VERSION}')"
        )
        raise SpecError(msg)
    try:
        return PipelineSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, origin)) from exc


def _read_source(source: str | Path) -> tuple[str, str]:
    if isinstance(source, str) and not _looks_like_path(source):
        if len(source) > MAX_SPEC_BYTES:
            raise SpecError(f"spec text is {len(source)} bytes; the limit is {MAX_SPEC_BYTES}")
        return source, "spec"
    path = Path(source)
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            msg = f"spec file {str(path)!r} is {size} bytes; the limit is {MAX_SPEC_BYTES}"
            raise SpecError(msg)
        return path.read_text(encoding="utf-8"), repr(str(path))
    except FileNotFoundError as exc:
        msg = f"spec file {str(path)!r} does not exist; check the path"
        raise SpecError(msg) from exc
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"cannot read spec file {str(path)!r}: {exc}"
        raise SpecError(msg) from exc


def _looks_like_path(text: str) -> bool:
    if "\n" in text or text.lstrip().startswith("{") or len(text) > 4096:
        return False
    return text.endswith((".yaml", ".yml", ".json")) or Path(text).is_file()


def format_validation_error(
    exc: ValidationError,
    origin: str = "spec",
    *,
    root: type[BaseModel] | None = None,
    what: str = "pipeline spec",
) -> str:
    """One line per problem: ``field.path: message (got value)`` plus allowed names.

    *root*: the model validated (default ``PipelineSpec``), whose fields name the allowed
    keys of an unknown one; *what*: the document's kind, for the first line.
    """
    errors = [e for e in exc.errors() if not _other_union_member(e, exc)]
    lines = [f"{origin} is not a valid {what} ({len(errors)} problem(s)):"]
    for err in errors:
        loc = tuple(err["loc"])
        path = ".".join(str(p) for p in _clean(loc)) or "(top level)"
        text = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            allowed = _allowed_fields(loc[:-1], root or PipelineSpec)
            hint = closest(str(loc[-1]), allowed) if allowed else ""
            text = f"unknown field{'; ' + hint if hint else ''}"
            lines.append(f"  {path}: {text}")
            continue
        if err["type"] == "missing":
            lines.append(f"  {path}: required field is missing")
            continue
        got = err.get("input")
        shown = "" if isinstance(got, dict | list) else f" (got {repr(got)[:200]})"
        lines.append(f"  {path}: {text}{shown}")
    return "\n".join(lines)


# pydantic puts the member of a union it tried into the error path (cuts.0.CutSpec.expr)
_UNION_TAGS = frozenset({"str", "int", "float", "bool", "CutSpec"})


def _clean(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(p for p in loc if not (isinstance(p, str) and p in _UNION_TAGS))


def _other_union_member(err: Any, exc: ValidationError) -> bool:
    """True for the plain-type half of a ``str | Model`` union when the model half failed.

    ``cuts: [{name: x, exprr: y}]`` is meant as a ``CutSpec``: "should be a valid string"
    about the same item would only confuse.
    """
    loc = tuple(err["loc"])
    if not any(p in ("str", "int", "float", "bool") for p in loc if isinstance(p, str)):
        return False
    here = _clean(loc)
    return any(
        tuple(o["loc"]) != loc and _clean(tuple(o["loc"]))[: len(here)] == here
        for o in exc.errors()
    )


def _allowed_fields(loc: tuple[Any, ...], root: type[BaseModel]) -> list[str]:
    """Field names of the model found by walking *loc* down from *root*."""
    model: Any = root
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is not None:
            model = _inner_model(field.annotation)
        elif not isinstance(part, int | str) or model is None:
            return []
        # else: a list index or a dict key (objects: {Jet: ...}); stay on the model of the
        # container's values, which _inner_model already chose.
        if model is None:
            return []
    return [f.alias or name for name, f in model.model_fields.items()]  # "class", not "class_"


def _inner_model(tp: Any) -> Any:
    """The first pydantic model class inside a type annotation (list/dict/Optional)."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    for arg in get_args(tp):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
