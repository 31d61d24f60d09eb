"""The pipeline spec: the one contract between layers.

A physicist writes it as YAML or JSON; it is validated here (pydantic, strict: unknown
keys are errors) and every layer below reads only these models. ``version`` lets the
format evolve; ``load_spec`` turns validation failures into a ``SpecError`` that names
the field path and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.parse
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
    """One input dataset: a name, its files and the label attached to its events."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.+-]+$")
    files: list[str] = Field(
        min_length=1,
        description="local paths, globs, @filelist.txt, root:// or http(s):// URLs",
    )
    label: int | float | None = None
    weight: str | None = Field(default=None, description="per-event weight expression")


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
        names = [d.name for d in datasets]
        dup = sorted({n for n in names if names.count(n) > 1})
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
        default=None, description="class names for a multiclass label expression"
    )
    weight: str | None = Field(default=None, description="per-event weight expression")
    balance: bool = Field(default=False, description="reweight classes to equal total weight")
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
        return [CutSpec(name=c, expr=c) if isinstance(c, str) else c for c in self.cuts]

    def feature_count(self) -> int:
        """Number of feature columns the spec asks for."""
        n = len(self.features.scalars)
        for obj in self.features.objects.values():
            n += obj.length * (len(obj.fields) + int(obj.mask))
        return n


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
}


class ModelSpec(_Strict):
    """The model: ``kind`` picks the engine; each kind accepts only its own options.

    All options have defaults so engines read them as attributes; setting an option of
    another kind (``max_depth`` on an ``mlp``) is a validation error.
    """

    kind: Literal["mlp", "xgboost", "sgd", "python"] = "mlp"
    # mlp
    hidden: list[Annotated[int, Field(ge=1, le=65536)]] = Field(default_factory=lambda: [64, 32])
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

    @model_validator(mode="after")
    def _options_of_kind(self) -> ModelSpec:
        allowed = set(MODEL_OPTIONS[self.kind]) | {"kind"}
        foreign = sorted(self.model_fields_set - allowed)
        if foreign:
            owners = {o: k for k, opts in MODEL_OPTIONS.items() for o in opts}
            where = ", ".join(f"{o!r} (a {owners[o]} option)" for o in foreign)
            msg = (
                f"model kind {self.kind!r} does not take {where}; options of {self.kind!r}: "
                f"{', '.join(MODEL_OPTIONS[self.kind])}"
            )
            raise ValueError(msg)
        if self.kind == "python" and not self.module:
            raise ValueError("model kind 'python' needs 'module': the path of your model file")
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
    seed: int = Field(default=42, ge=0, lt=2**32)
    shuffle_buffer: int = Field(default=100_000, ge=1, le=100_000_000, description="events")


class DeploySpec(_Strict):
    """Where the trained model goes: its name in the model repository."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = Field(default="", max_length=2000)


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
    return list(model.model_fields)


def _inner_model(tp: Any) -> Any:
    """The first pydantic model class inside a type annotation (list/dict/Optional)."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    for arg in get_args(tp):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
