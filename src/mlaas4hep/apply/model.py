"""A trained model bundle, ready to score events with exactly its training preprocessing.

``Model.load(bundle_dir)`` reads the bundle through ``mlaas4hep.artifact`` (``spec.yaml``,
``features.json``, ``model.onnx``), compiles the spec's preprocessing in apply mode
(selections, defines, cuts, object features, feature order; no labels, weights or split)
and opens an ONNX Runtime session. ``predict(events)`` takes what uproot and coffea hold
(an awkward record array, or a mapping of numpy/awkward arrays, one per branch) and
returns numpy scores, one row per event, ``FILL_VALUE`` (NaN) where the event fails the
cuts; ``evaluate`` also returns the pass mask.

A k-folded bundle (``train.folds: k``; docs/training.md, "k-folding") holds k models in
its one graph. ``folds="out-of-fold"`` (the default) scores each event with the model
that did not train on it: its fold is ``preprocess.folds.event_folds`` of its identifiers,
which are then read too; this is the only unbiased choice for the simulated events used
in training. ``folds="average"`` scores every event with the mean of the k models (real
data, which no model saw; no identifiers needed). Other bundles ignore ``folds``.

``Model.load("NAME[:VERSION]")`` (a model published in the service) downloads the bundle
first through the one HTTP client (:mod:`mlaas4hep.client.models`: URL and token as the CLI
finds them, or ``url=``/``token=``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from mlaas4hep import artifact
from mlaas4hep.artifact import BundleFeatures
from mlaas4hep.client import models
from mlaas4hep.errors import DataQualityError, SpecError
from mlaas4hep.preprocess.folds import event_folds
from mlaas4hep.preprocess.partitioned import chunk_columns
from mlaas4hep.preprocess.program import Program
from mlaas4hep.spec import PipelineSpec, load_spec

#: Rows per ONNX Runtime call: large enough to amortise the call, small enough for cache.
ORT_BATCH_ROWS = 65536
Array = np.ndarray[Any, Any]
OUT_OF_FOLD, AVERAGE = "out-of-fold", "average"
FOLD_MODES = (OUT_OF_FOLD, AVERAGE)


@dataclass(frozen=True)
class Scored:
    """Scores of a batch of events: ``scores`` (n, k) float32 and ``passed`` (n,) bool."""

    scores: Array
    passed: Array


class Model:
    """A model bundle: its preprocessing and its ONNX Runtime session (see module doc).

    Not safe to share between threads while the first batch binds the column types.
    """

    def __init__(
        self,
        bundle: Path,
        spec: PipelineSpec,
        features: BundleFeatures,
        session: Any,
        *,
        folds: str = OUT_OF_FOLD,
        dataset: str | None = None,
    ) -> None:
        if folds not in FOLD_MODES:
            msg = f"folds={folds!r} is not a way to score a k-folded model; use one of {FOLD_MODES}"
            raise SpecError(msg)
        self.bundle = bundle
        #: how a k-folded bundle scores (``FOLD_MODES``); None for a bundle of one model
        self.folds: str | None = folds if spec.train.folds else None
        self.spec = spec
        self.features = features
        self._session = session
        #: the training dataset whose own defines and cuts apply too (None: global only)
        self.dataset = _check_dataset(bundle, spec, dataset)
        self._program = Program(spec, purpose="apply", identifiers=[], dataset=dataset)
        if tuple(self._program.names) != features.features:
            msg = (
                f"{str(bundle)!r}: the feature order of {artifact.SPEC_FILE} differs from "
                f"{artifact.FEATURES_FILE}; the bundle is inconsistent, re-run `mlaas4hep run`"
            )
            raise SpecError(msg)
        raw = spec.deploy.name if spec.deploy else spec.name
        self.name = re.sub(r"\W", "_", raw)

    @classmethod
    def load(
        cls,
        source: str | Path,
        *,
        threads: int | None = None,
        url: str | None = None,
        token: str | None = None,
        folds: str = OUT_OF_FOLD,
        dataset: str | None = None,
    ) -> Model:
        """Load the bundle directory *source* (what ``mlaas4hep run`` writes), or the
        model ``NAME[:VERSION]`` of the service (downloaded first; *url*/*token* default
        to the CLI's). *folds*: how a k-folded bundle scores (see the module docstring).

        Events go through the spec's global defines and cuts; with *dataset*, also through
        that training dataset's own ``define`` and ``cuts`` (``data.datasets[]``), to
        score more events of that sample as it was trained on (``SpecError`` for a name
        that is not one of the spec's datasets).

        Raises ``SpecError`` when it is not a bundle, naming the missing file;
        ``NotFound``/``PermissionDenied`` for a model of the service it may not have.
        """
        bundle = Path(source).expanduser()
        if not bundle.is_dir() and isinstance(source, str) and models.is_model_ref(source):
            bundle = models.fetch_model(source, url=url, token=token)
        if not bundle.is_dir():
            msg = (
                f"model {str(source)!r} is not a bundle directory; give the output directory "
                "of `mlaas4hep run` (for a model of the service, `mlaas4hep apply NAME[:VERSION]` "
                "downloads it)"
            )
            raise SpecError(msg)
        for name in (artifact.MODEL_FILE, artifact.SPEC_FILE, artifact.FEATURES_FILE):
            if not (bundle / name).is_file():
                msg = f"{str(bundle)!r} has no {name}; it is not a complete model bundle"
                raise SpecError(msg)
        spec = load_spec(bundle / artifact.SPEC_FILE)
        features = artifact.read_features(bundle)
        session = _session(bundle / artifact.MODEL_FILE, threads)
        return cls(bundle, spec, features, session, folds=folds, dataset=dataset)

    # -- what the model needs and gives ------------------------------------------------

    @property
    def identifiers(self) -> tuple[str, ...]:
        """The event identifiers of the training spec (``run``, ``event``, ...)."""
        return self.features.identifiers or tuple(self.spec.data.identifiers)

    @property
    def tree(self) -> str | None:
        return self.spec.data.tree

    @property
    def output_columns(self) -> tuple[str, ...]:
        """Score column names (``<name>_score``, one per class, or ``<name>_value``)."""
        f = self.features
        return artifact.output_columns(self.name, f.task, f.class_names)

    @property
    def pass_column(self) -> str:
        return artifact.pass_column(self.name)

    def branches(self, available: Any) -> list[str]:
        """The branches to read, given the names present (SpecError for missing ones);
        with the identifiers for out-of-fold scores."""
        needed = self._program.branches(available)
        if self.folds == OUT_OF_FOLD:
            ids = self.spec.data.identifiers
            missing = [i for i in ids if i not in available]
            if missing:
                msg = (
                    f"model {self.name!r} is k-folded: an event's out-of-fold score needs its "
                    f"identifiers {list(ids)}, and {missing} are missing; for real data score "
                    "with the mean of the models (folds='average', `--folds average`)"
                )
                raise SpecError(msg)
            needed += [i for i in ids if i not in needed]
        return needed

    def event_folds(self, events: Any) -> Array:
        """The fold (int64 per event) of *events* of a k-folded model, from their
        identifiers: the ``fold`` input of the served model (docs/inference.md)."""
        return event_folds(self.spec, _columns(events))

    # -- scoring -------------------------------------------------------------------------

    def predict(self, events: Any) -> Array:
        """Scores of every event: (n,) for binary and regression, (n, k) for multiclass.

        *events*: an awkward record array or a mapping branch -> array (numpy or awkward).
        Events failing the cuts score ``FILL_VALUE`` (NaN); see ``evaluate``.
        """
        scores = self.evaluate(events).scores
        return scores if self.features.task == "multiclass" else scores[:, 0]

    def passes(self, events: Any) -> Array:
        """The bool mask of the events that pass the model's cuts."""
        return self.evaluate(events).passed

    def evaluate(self, events: Any) -> Scored:
        """Scores (n, k) float32 and the pass mask of *events* (see ``predict``)."""
        columns = _columns(events)
        wanted = self.branches(columns)
        return self.score_columns({k: columns[k] for k in wanted})

    def score_columns(self, columns: Mapping[str, Any], fold: Array | None = None) -> Scored:
        """Score a chunk of columns that holds at least ``branches(...)``.

        *fold*: the model per event of a k-folded bundle (``-1``: the mean), overriding
        the choice of ``folds``.
        """
        applied = self._program.apply(columns)
        if fold is None and self.folds == OUT_OF_FOLD:
            fold = event_folds(self.spec, columns)
        n, k = len(applied.passed), self._width()
        if fold is not None and len(fold) != n:
            msg = f"{len(fold)} folds given for {n} events; give one fold per event"
            raise DataQualityError(msg)
        scores = np.full((n, k), artifact.FILL_VALUE, dtype=artifact.SCORE_DTYPE)
        chosen = None if fold is None else np.asarray(fold, np.int64)[applied.passed]
        scores[applied.passed] = self.run_onnx(applied.X, chosen)
        return Scored(scores, applied.passed)

    def run_onnx(self, X: Array, fold: Array | None = None) -> Array:
        """The ONNX model on a feature matrix, in batches of ``ORT_BATCH_ROWS`` rows.

        *fold* (k-folded bundles): the model of each row, -1 for the mean; None: the mean.
        """
        X = np.ascontiguousarray(X, dtype=artifact.INPUT_DTYPE)
        out = np.empty((len(X), self._width()), dtype=artifact.SCORE_DTYPE)
        for start in range(0, len(X), ORT_BATCH_ROWS):
            rows = X[start : start + ORT_BATCH_ROWS]
            # one ``features`` tensor, or one per collection (set-based models)
            feeds = artifact.onnx_feeds(rows, self.features.features, self.features.inputs)
            if fold is not None and self.folds is not None:
                feeds[artifact.FOLD_INPUT] = np.ascontiguousarray(
                    fold[start : start + ORT_BATCH_ROWS], np.int64
                )
            (scores,) = self._session.run([artifact.OUTPUT_TENSOR], feeds)
            out[start : start + len(rows)] = np.asarray(scores).reshape(len(rows), -1)
        return out

    def _width(self) -> int:
        return self.features.n_classes if self.features.task == "multiclass" else 1

    def __repr__(self) -> str:
        return f"Model({self.name!r}, {self.features.task}, bundle={str(self.bundle)!r})"


def _check_dataset(bundle: Path, spec: PipelineSpec, dataset: str | None) -> str | None:
    """*dataset* when it is one of the training datasets of the bundle's spec (or None).

    Raises ``SpecError`` listing the bundle's datasets otherwise.
    """
    names = [d.name for d in spec.data.datasets]
    if dataset is None or dataset in names:
        return dataset
    msg = (
        f"model bundle {str(bundle)!r} has no training dataset {dataset!r}; its datasets: "
        f"{', '.join(map(repr, names))}; give one of them (names are case-sensitive) "
        "to apply its own defines and cuts, or none for the global preprocessing"
    )
    raise SpecError(msg)


def _columns(events: Any) -> dict[str, Any]:
    """Branch -> array from an awkward record array or a mapping (a coffea/uproot chunk)."""
    if isinstance(events, ak.Array):
        if not ak.fields(events):
            msg = "events must be a record array (one field per branch) or a mapping of arrays"
            raise DataQualityError(msg)
        return chunk_columns(events)
    if isinstance(events, Mapping):
        return {str(k): v for k, v in events.items()}
    msg = f"events must be an awkward Array or a mapping of arrays, got {type(events).__name__}"
    raise DataQualityError(msg)


def _session(path: Path, threads: int | None) -> Any:
    """An ONNX Runtime CPU session of the bundle's model."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own, unexported exception types
        msg = f"ONNX Runtime cannot load {str(path)!r}: {exc}"
        raise SpecError(msg) from exc
