"""The model bundle: the one contract between training and everything that uses a model.

Training writes it (``train/bundle.py``, ``train/export.py``); the model repository and
the inference service read it (``serve/``); ``apply``, ``predict`` and analysis code
(``mlaas4hep.Model``) re-run its preprocessing. Every file name, metadata key, format
version and tensor dtype is written here once::

    BUNDLE/
      model.onnx      input ``features`` float32 (batch, n_features), raw values in feature
                      order (normalisation is inside); output ``scores`` float32 (batch, k)
      metadata.json   the serving description (METADATA_FORMAT): tensors, feature names,
                      labels, spec hash, test metrics
      features.json   the applying description (BUNDLE_FORMAT): feature order, task, classes,
                      normalisation, identifiers, input branches and their types, outputs
      spec.yaml       the resolved spec: selections, defines, cuts, object features (sort,
                      pad, mask), split, identifiers: the preprocessing ``apply`` re-runs
      stats.json      preprocessing statistics and the cut flow
      metrics.json    test metrics, history, ONNX parity, timings
      README.md       the model card;  plots/ and checkpoints/ stay with the run

Format versions: ``features.json`` without a ``format`` key is version 1 (no identifiers,
branches or outputs); those are then derived from ``spec.yaml`` (``BundleFeatures``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mlaas4hep.documents import load_json
from mlaas4hep.errors import DocumentError, PayloadTooLarge, SpecError

# -- file names ----------------------------------------------------------------------------
MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
FEATURES_FILE = "features.json"
SPEC_FILE = "spec.yaml"
STATS_FILE = "stats.json"
METRICS_FILE = "metrics.json"
CARD_FILE = "README.md"
PLOTS_DIR = "plots"
CHECKPOINTS_DIR = "checkpoints"
#: What a published model version keeps of a bundle (plots, checkpoints stay behind).
PUBLISHED_FILES = (MODEL_FILE, METADATA_FILE, METRICS_FILE, FEATURES_FILE, SPEC_FILE, CARD_FILE)

# -- format versions -----------------------------------------------------------------------
METADATA_FORMAT = "mlaas4hep-model/1"
BUNDLE_FORMAT = "mlaas4hep-bundle/2"
BUNDLE_FORMATS = ("mlaas4hep-bundle/1", BUNDLE_FORMAT)
#: Bundle JSON documents can come from users (uploads, jobs): parsed with caps.
MAX_DOCUMENT_BYTES = 1024 * 1024

# -- the ONNX graph ------------------------------------------------------------------------
INPUT_TENSOR = "features"
OUTPUT_TENSOR = "scores"
INPUT_DTYPE = np.dtype(np.float32)
SCORE_DTYPE = np.dtype(np.float32)
#: Keys of the exported graph's ``metadata_props``.
PROP_FEATURES = "mlaas4hep.features"
PROP_TASK = "mlaas4hep.task"
PROP_CLASS_NAMES = "mlaas4hep.class_names"
PROP_NORMALIZE = "mlaas4hep.normalize"
PROP_INPUT = "mlaas4hep.input"
PROP_OUTPUT = "mlaas4hep.output"
PROP_SPEC_HASH = "mlaas4hep.spec_hash"
PROP_INPUTS = "mlaas4hep.inputs"
#: The event-level scalars' tensor of a graph with one input per object collection.
SCALARS_INPUT = "scalars"
#: A k-folded model's optional input (int64, (batch,)): the fold whose model scores each
#: row (``eventhash.assign_fold`` of its identifiers); -1 or absent: the mean of the
#: k models (docs/training.md, "k-folding").
FOLD_INPUT = "fold"
FOLD_AVERAGE = -1
PROP_FOLDS = "mlaas4hep.folds"

# -- applying: the output columns --------------------------------------------------------------
#: Score of an event that fails the cuts (its ``<model>_pass`` flag is false).
FILL_VALUE = math.nan
PASS_SUFFIX = "_pass"  # noqa: S105 - a column name suffix, not a password

Task = Literal["binary", "multiclass", "regression"]


def output_columns(model: str, task: str, class_names: Sequence[str]) -> tuple[str, ...]:
    """Score column names of *model*: ``<model>_score``, one per class, or ``<model>_value``.

    A class name's characters that cannot be in a column name (``ttH-extra``: datasets
    allow ``. + -``) become ``_``; should two names then clash, each gets its class index.
    """
    if task == "multiclass":
        names = [re.sub(r"\W", "_", c, flags=re.ASCII) for c in class_names]
        if len(set(names)) < len(names):
            names = [f"{n}_{i}" for i, n in enumerate(names)]
        return tuple(f"{model}_score_{n}" for n in names)
    if task == "regression":
        return (f"{model}_value",)
    return (f"{model}_score",)


def pass_column(model: str) -> str:
    """The column flagging the events of *model* that pass its cuts."""
    return model + PASS_SUFFIX


@dataclass(frozen=True)
class InputBlock:
    """One input tensor of a graph with several (set-based models: one per collection).

    ``shape`` is the per-event shape (``(n_scalars,)`` or ``(objects, fields)``) and
    ``features`` the feature columns that fill it, row-major over ``shape``: the tensor of
    a batch is ``X[:, columns(features)].reshape(n, *shape)`` of the flat feature matrix.
    """

    name: str
    shape: tuple[int, ...]
    features: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "features": list(self.features)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> InputBlock:
        try:
            block = cls(
                str(data["name"]),
                tuple(int(d) for d in data["shape"]),
                tuple(str(f) for f in data["features"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"{where}: an input needs 'name', 'shape' and 'features'; got {data!r}"
            raise SpecError(msg) from exc
        if math.prod(block.shape) != len(block.features):
            msg = (
                f"{where}: input {block.name!r} of shape {block.shape} has "
                f"{len(block.features)} features"
            )
            raise SpecError(msg)
        return block


def onnx_feeds(
    X: np.ndarray[Any, Any], names: Sequence[str], inputs: Sequence[InputBlock] = ()
) -> dict[str, np.ndarray[Any, Any]]:
    """The ONNX Runtime feed of a flat feature matrix *X* (columns in *names* order).

    One ``features`` tensor when *inputs* is empty; else one tensor per ``InputBlock``.
    """
    X = np.ascontiguousarray(X, dtype=INPUT_DTYPE)
    if not inputs:
        return {INPUT_TENSOR: X}
    where = {name: i for i, name in enumerate(names)}
    try:
        return {
            b.name: np.ascontiguousarray(
                X[:, [where[f] for f in b.features]].reshape(len(X), *b.shape)
            )
            for b in inputs
        }
    except KeyError as exc:
        msg = f"input feature {exc.args[0]!r} is not a feature column; the bundle is inconsistent"
        raise SpecError(msg) from exc


@dataclass(frozen=True)
class BundleFeatures:
    """``features.json``: what applying a model needs besides ``spec.yaml``.

    ``branches`` maps each input branch to its type (``"per-event int64"``,
    ``"per-object float32"``; empty string where the training run did not record it).
    """

    features: tuple[str, ...]
    task: Task
    n_classes: int
    class_names: tuple[str, ...]
    normalize: str
    offset: tuple[float, ...]
    scale: tuple[float, ...]
    identifiers: tuple[str, ...] = ()
    branches: Mapping[str, str] = field(default_factory=dict)
    tree: str | None = None
    format: str = BUNDLE_FORMAT
    #: The graph's input tensors when it has several (set-based models); empty: ``features``.
    inputs: tuple[InputBlock, ...] = ()

    def to_json(self) -> dict[str, Any]:
        several = {"inputs": [b.to_json() for b in self.inputs]} if self.inputs else {}
        return {
            "format": self.format,
            "input": INPUT_TENSOR if not self.inputs else None,
            **several,
            "output": OUTPUT_TENSOR,
            "features": list(self.features),
            "task": self.task,
            "n_classes": self.n_classes,
            "class_names": list(self.class_names),
            "normalize": self.normalize,
            "offset": list(self.offset),
            "scale": list(self.scale),
            "identifiers": list(self.identifiers),
            "branches": dict(self.branches),
            "tree": self.tree,
            "note": "send raw feature values in this order; normalisation is inside model.onnx",
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> BundleFeatures:
        """Parse ``features.json`` (either format version); SpecError names *where*."""
        fmt = str(data.get("format", BUNDLE_FORMATS[0]))
        if fmt not in BUNDLE_FORMATS:
            msg = f"{where}: unknown bundle format {fmt!r}; this version reads {BUNDLE_FORMATS}"
            raise SpecError(msg)
        try:
            task = str(data["task"])
            if task not in ("binary", "multiclass", "regression"):
                raise ValueError(task)
            return cls(
                features=tuple(str(n) for n in data["features"]),
                task=task,  # type: ignore[arg-type]  # checked just above
                n_classes=int(data.get("n_classes", 0)),
                class_names=tuple(str(c) for c in data.get("class_names") or ()),
                normalize=str(data.get("normalize", "none")),
                offset=tuple(float(v) for v in data.get("offset") or ()),
                scale=tuple(float(v) for v in data.get("scale") or ()),
                identifiers=tuple(str(i) for i in data.get("identifiers") or ()),
                branches={str(k): str(v) for k, v in (data.get("branches") or {}).items()},
                tree=None if data.get("tree") is None else str(data["tree"]),
                format=fmt,
                inputs=tuple(InputBlock.from_json(b, where) for b in data.get("inputs") or ()),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            msg = (
                f"{where}: not a valid features document ({type(exc).__name__}: {exc}); "
                "re-run `mlaas4hep run` to rebuild the bundle"
            )
            raise SpecError(msg) from exc


def read_document(path: Path) -> Any:
    """A bundle JSON document, parsed with size and depth caps; SpecError when unreadable."""
    try:
        return load_json(path.read_bytes(), what=repr(str(path)), limit=MAX_DOCUMENT_BYTES)
    except (OSError, DocumentError, PayloadTooLarge) as exc:
        msg = f"cannot read {str(path)!r}: {exc}; write it as UTF-8 JSON (see docs/inference.md)"
        raise SpecError(msg) from exc


def read_features(bundle: Path) -> BundleFeatures:
    """``features.json`` of the bundle directory *bundle*."""
    path = bundle / FEATURES_FILE
    data = read_document(path)
    if not isinstance(data, dict):
        msg = f"{str(path)!r} must hold a JSON object, got {type(data).__name__}"
        raise SpecError(msg)
    return BundleFeatures.from_json(data, str(path))
