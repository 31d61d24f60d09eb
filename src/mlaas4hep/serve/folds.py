"""The optional ``fold`` input of a k-folded model (``metadata.json`` ``"folds": k``).

A k-folded bundle's graph holds k models and takes, besides its feature tensor(s), an
optional ``fold`` tensor: INT64, one value per row, ``0..k-1`` to score the row with the
model that did not train on that fold (simulated events: the fold is
``mlaas4hep.preprocess.split.assign_fold`` of the event's identifiers, what
``Model.folds`` returns), ``-1`` for the mean of the k models (real data). A request
without it gets the mean for every row.

``take_fold`` splits it off a request before the usual checks; ``with_fold`` puts it back
(``-1`` filled in when absent), so every batch the batcher joins has the same tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from typing import Any, Protocol, cast, runtime_checkable

import numpy as np

from mlaas4hep.artifact import FOLD_AVERAGE, FOLD_INPUT
from mlaas4hep.serve.codec import InferRequest
from mlaas4hep.serve.errors import InvalidInput

Array = np.ndarray[Any, Any]
FOLD_DATATYPE = "INT64"


def take_fold(
    model: str, folds: int | None, request: InferRequest
) -> tuple[InferRequest, Array | None]:
    """The request without its ``fold`` tensor, and that tensor (None when not sent).

    Raises InvalidInput for a ``fold`` sent to a model that is not k-folded, of another
    datatype or rank, or with values outside ``-1..k-1``.
    """
    if FOLD_INPUT not in request.inputs:
        return request, None
    if not folds:
        msg = f"model {model!r} is not k-folded; it takes no {FOLD_INPUT!r} input"
        raise InvalidInput(msg)
    fold = request.inputs[FOLD_INPUT]
    said = request.datatypes.get(FOLD_INPUT)
    if said != FOLD_DATATYPE or fold.ndim != 1:
        msg = (
            f"input {FOLD_INPUT!r} of model {model!r} must be {FOLD_DATATYPE} of shape [-1] "
            f"(one fold per row), got {said} {list(fold.shape)}"
        )
        raise InvalidInput(msg)
    bad = (fold < FOLD_AVERAGE) | (fold >= folds)
    if bad.any():
        msg = (
            f"input {FOLD_INPUT!r} of model {model!r} holds {int(fold[bad][0])}; use "
            f"0..{folds - 1} (the fold of the event) or {FOLD_AVERAGE} (the mean of the "
            f"{folds} models)"
        )
        raise InvalidInput(msg)
    rest = {k: v for k, v in request.inputs.items() if k != FOLD_INPUT}
    types = {k: v for k, v in request.datatypes.items() if k != FOLD_INPUT}
    return replace(request, inputs=rest, datatypes=types), fold


def with_fold(
    model: str, folds: int | None, inputs: dict[str, Array], fold: Array | None, rows: int
) -> dict[str, Array]:
    """*inputs* plus the ``fold`` tensor of a k-folded model (``-1`` rows when absent)."""
    if not folds:
        return inputs
    if fold is None:
        fold = np.full(rows, FOLD_AVERAGE, np.int64)
    elif len(fold) != rows:
        msg = f"input {FOLD_INPUT!r} of model {model!r} has {len(fold)} rows, the features {rows}"
        raise InvalidInput(msg)
    return {**inputs, FOLD_INPUT: np.ascontiguousarray(fold, np.int64)}


def fold_metadata(folds: int | None) -> dict[str, Any]:
    """The V2 model metadata ``parameters`` of a k-folded model: k and the optional input
    (empty for a model with no folds)."""
    if not folds:
        return {}
    tensor = {"name": FOLD_INPUT, "datatype": FOLD_DATATYPE, "shape": [-1], "optional": True}
    return {"folds": folds, "optional_inputs": [tensor]}


@runtime_checkable
class FoldScoring(Protocol):
    """A raw-column preprocessor that can choose the model of each event (k-folding)."""

    def score_folds(self, columns: Mapping[str, Any], fold: Array) -> tuple[Array, Array]: ...


def raw_scorer(
    model: str, preprocessor: Any, fold: Array | None
) -> Callable[[Mapping[str, Any]], tuple[Array, Array]]:
    """What scores a raw request: ``preprocessor.score``, or with *fold* its
    ``score_folds``; InvalidInput when the preprocessor cannot choose per event."""
    if fold is None:
        return cast(Callable[[Mapping[str, Any]], tuple[Array, Array]], preprocessor.score)
    if not isinstance(preprocessor, FoldScoring):
        msg = f"model {model!r} cannot choose the fold model of raw events"
        raise InvalidInput(msg)
    return partial(preprocessor.score_folds, fold=fold)
