"""A served model version's preprocessing: raw event columns in, scores out.

The inference service (``serve/raw.py``) cannot import the preprocessing; the app factory
hands it ``load_raw_preprocessor``, which builds a ``Model`` from the version directory's
``spec.yaml`` and ``features.json`` around the version's own, already checked ONNX Runtime
session (``run``). ``score`` is ``Model.evaluate`` on a mapping of arrays: flat branches
as numpy, jagged ones as awkward arrays built from values and counts, so the service
computes what ``Model.predict`` and ``mlaas4hep apply`` compute. Plain types only: this
module never imports ``serve``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from mlaas4hep import artifact
from mlaas4hep.apply.model import AVERAGE, Model
from mlaas4hep.errors import SpecError
from mlaas4hep.spec import load_spec

Array = np.ndarray[Any, Any]
RunModel = Callable[[Mapping[str, Array]], dict[str, Array]]
_JAGGED = "var * "


class _ServedSession:
    """What ``Model`` calls of an ONNX Runtime session, on the served version's session."""

    def __init__(self, run: RunModel) -> None:
        self._run = run

    def run(self, names: list[str], feeds: Mapping[str, Array]) -> list[Array]:
        outputs = self._run(feeds)
        return [outputs[n] for n in names]


class BundlePreprocessor:
    """A bundle's preprocessing and model on raw columns (``serve.raw.RawPreprocessor``).

    Column types are bound once, at construction, from the types ``features.json``
    records; afterwards ``score`` only reads shared state and is thread-safe.
    """

    def __init__(self, model: Model) -> None:
        self._model = model
        recorded = model.features.branches
        needed = model.branches(recorded)
        untyped = [b for b in needed if not recorded.get(b)]
        if untyped:
            msg = (
                f"{str(model.bundle)!r}: {artifact.FEATURES_FILE} records no type for input "
                f"branches {untyped}; re-run `mlaas4hep run` to rebuild the bundle"
            )
            raise SpecError(msg)
        self._branches = {b: recorded[b] for b in needed}
        model.evaluate({b: _empty(t) for b, t in self._branches.items()})  # binds the types

    @property
    def branches(self) -> Mapping[str, str]:
        return dict(self._branches)

    def score(self, columns: Mapping[str, Array | tuple[Array, Array]]) -> tuple[Array, Array]:
        """Scores (n, k) and the pass mask of the events in *columns* (see module doc);
        a k-folded model's mean of its k models."""
        events = {name: _column(value) for name, value in columns.items()}
        scored = self._model.evaluate(events)
        return scored.scores, scored.passed

    def score_folds(
        self, columns: Mapping[str, Array | tuple[Array, Array]], fold: Array
    ) -> tuple[Array, Array]:
        """``score`` of a k-folded model with the model of each event chosen by *fold*
        (int64 per event: ``0..k-1``, or ``-1`` for the mean)."""
        events = {name: _column(value) for name, value in columns.items()}
        wanted = self._model.branches(events)
        scored = self._model.score_columns({k: events[k] for k in wanted}, fold)
        return scored.scores, scored.passed


def load_raw_preprocessor(version_dir: Path, run: RunModel) -> BundlePreprocessor | None:
    """The preprocessor of a model version directory; None when it has no ``spec.yaml``.

    Raises SpecError (an invalid spec, a format-1 ``features.json`` without branch
    types, a feature order that differs from the spec's).
    """
    spec_file = version_dir / artifact.SPEC_FILE
    if not spec_file.is_file() or not (version_dir / artifact.FEATURES_FILE).is_file():
        return None
    features = artifact.read_features(version_dir)
    if not features.branches:
        msg = (
            f"{str(version_dir)!r}: {artifact.FEATURES_FILE} (format {features.format!r}) "
            "records no input branches; re-run `mlaas4hep run` to rebuild the bundle"
        )
        raise SpecError(msg)
    # the mean of a k-folded model's models unless a request names each event's fold
    model = Model(version_dir, load_spec(spec_file), features, _ServedSession(run), folds=AVERAGE)
    return BundlePreprocessor(model)


def _column(value: Array | tuple[Array, Array]) -> Any:
    if isinstance(value, tuple):
        values, counts = value
        return ak.unflatten(values, counts)
    return value


def _empty(branch_type: str) -> Any:
    dtype = np.dtype(branch_type.removeprefix(_JAGGED))
    if branch_type.startswith(_JAGGED):
        return ak.unflatten(np.zeros(0, dtype), np.zeros(0, np.int64))
    return np.zeros(0, dtype)
