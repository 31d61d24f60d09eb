"""The optional ``fold`` input of a k-folded model (``metadata.json`` ``"folds": k``), or
the event identifiers that give it.

A k-folded bundle's graph holds k models and takes, besides its feature tensor(s), an
optional ``fold`` tensor: INT64, one value per row, ``0..k-1`` to score the row with the
model that did not train on that fold (simulated events: the fold is
``mlaas4hep.eventhash.assign_fold`` of the event's identifiers, what ``Model.event_folds``
returns), ``-1`` for the mean of the k models (real data). A request without it gets the
mean for every row.

Instead of ``fold`` a request may carry the event identifiers themselves (the bundle's
``data.identifiers``, ``metadata.json`` ``fold_identifiers``: one 1-D integer tensor
each, any integer datatype, as the ROOT branches are): the service then computes each
row's fold with the training's hash and seed (``fold_seed``), so a client needs no
mlaas4hep code. All of them or none; not together with ``fold``.

``request_fold`` splits them off a request before the usual checks; ``with_fold`` puts
the fold back (``-1`` filled in when absent), so every batch the batcher joins has the
same tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, Protocol, cast, runtime_checkable

import numpy as np

from mlaas4hep.artifact import FOLD_AVERAGE, FOLD_INPUT
from mlaas4hep.eventhash import assign_fold
from mlaas4hep.serve.codec import InferRequest
from mlaas4hep.serve.errors import InvalidInput
from mlaas4hep.serve.metadata import ModelMetadata
from mlaas4hep.spec import DataSpec

Array = np.ndarray[Any, Any]
FOLD_DATATYPE = "INT64"
#: What an identifier input may be: an integer tensor of any width (as the ROOT branches:
#: NanoAOD's run and luminosityBlock are UINT32, event UINT64), hashed by its value.
IDENTIFIER_DATATYPES = ("UINT64", "INT64", "UINT32", "INT32", "UINT16", "INT16", "UINT8", "INT8")
#: The identifiers a model that records none is checked against (``data.identifiers``'s
#: default), to refuse them clearly.
_DEFAULT_IDENTIFIERS: tuple[str, ...] = tuple(
    DataSpec.model_fields["identifiers"].get_default(call_default_factory=True)
)


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


def request_fold(
    model: str, meta: ModelMetadata, request: InferRequest, raw: Collection[str] = ()
) -> tuple[InferRequest, Array | None]:
    """The request without its ``fold`` or identifier tensors, and each row's fold (None:
    neither was sent, the mean of the models).

    *raw*: the model's raw input branches. In a request of raw columns (it lacks a
    feature tensor) an identifier that is one of them stays in the request, as the
    preprocessing reads it, and only the other identifiers say that folds are wanted.
    Raises InvalidInput for identifiers sent to a model that is not k-folded or that
    does not record them, some identifiers missing, both ``fold`` and identifiers, or an
    identifier tensor that is not a 1-D integer one of the others' length.
    """
    request, fold = take_fold(model, meta.folds, request)
    features = {t.name for t in meta.inputs}
    kept = set(raw) if not features <= request.inputs.keys() else set()
    names = meta.fold_identifiers or _DEFAULT_IDENTIFIERS
    sent = [n for n in names if n in request.inputs and n not in kept | features]
    if not sent:
        return request, fold
    k, seed = _fold_hash(model, meta, sent, fold is not None)
    missing = [n for n in meta.fold_identifiers if n not in request.inputs]
    if missing:
        msg = (
            f"model {model!r} computes the fold of each row from all its identifiers "
            f"{list(meta.fold_identifiers)}; the request sent {sent} but not {missing}: send "
            f"them too, or none (the mean of the {meta.folds} models)"
        )
        raise InvalidInput(msg)
    columns = _identifier_columns(model, meta.fold_identifiers, request)
    folds = assign_fold(columns, folds=k, seed=seed)
    rest = {name: v for name, v in request.inputs.items() if name not in sent}
    types = {name: v for name, v in request.datatypes.items() if name not in sent}
    return replace(request, inputs=rest, datatypes=types), folds


def _fold_hash(
    model: str, meta: ModelMetadata, sent: list[str], with_fold_input: bool
) -> tuple[int, int]:
    """(k, seed) of the fold draw; InvalidInput unless the model computes folds from
    identifiers and no ``fold`` came."""
    if not meta.folds:
        msg = (
            f"model {model!r} is not k-folded; it takes no identifier inputs {sent} (they "
            "choose the fold model of a k-folded model): send its inputs only"
        )
        raise InvalidInput(msg)
    if with_fold_input:
        msg = (
            f"model {model!r} got both a {FOLD_INPUT!r} input and identifier inputs {sent}; "
            f"send one of them: the identifiers (the service computes the fold) or {FOLD_INPUT!r}"
        )
        raise InvalidInput(msg)
    if not meta.fold_identifiers or meta.fold_seed is None:
        msg = (
            f"model {model!r} does not record its fold identifiers and seed (metadata.json "
            "'fold_identifiers', 'fold_seed': a bundle from before the service computed "
            f"folds); send the {FOLD_INPUT!r} input (`Model.event_folds`) instead of {sent}, "
            "or re-run `mlaas4hep run` to rebuild the bundle"
        )
        raise InvalidInput(msg)
    return meta.folds, meta.fold_seed


def _identifier_columns(model: str, names: Sequence[str], request: InferRequest) -> list[Array]:
    """The identifier tensors of *request*, checked: 1-D, integer, one common length."""
    columns = []
    for name in names:
        array, said = request.inputs[name], request.datatypes.get(name)
        if said not in IDENTIFIER_DATATYPES or array.ndim != 1:
            msg = (
                f"identifier input {name!r} of model {model!r} must be a 1-D integer tensor "
                f"(one value per row; {', '.join(IDENTIFIER_DATATYPES[:4])}, ...), got "
                f"{said} {list(array.shape)}"
            )
            raise InvalidInput(msg)
        columns.append(array)
    lengths = {n: len(c) for n, c in zip(names, columns, strict=True)}
    if len(set(lengths.values())) != 1:
        msg = f"the identifier inputs of model {model!r} must have one length; got {lengths}"
        raise InvalidInput(msg)
    return columns


def with_fold(
    model: str, folds: int | None, inputs: dict[str, Array], fold: Array | None, rows: int
) -> dict[str, Array]:
    """*inputs* plus the ``fold`` tensor of a k-folded model (``-1`` rows when absent)."""
    if not folds:
        return inputs
    if fold is None:
        fold = np.full(rows, FOLD_AVERAGE, np.int64)
    elif len(fold) != rows:
        msg = (
            f"the folds of model {model!r} (input {FOLD_INPUT!r} or the identifiers) have "
            f"{len(fold)} rows, the features {rows}"
        )
        raise InvalidInput(msg)
    return {**inputs, FOLD_INPUT: np.ascontiguousarray(fold, np.int64)}


def fold_metadata(folds: int | None, identifiers: Sequence[str] = ()) -> dict[str, Any]:
    """The V2 model metadata ``parameters`` of a k-folded model: k and the optional inputs,
    ``fold`` and the *identifiers* it can be computed from (empty for a model with no
    folds)."""
    if not folds:
        return {}
    tensor = {"name": FOLD_INPUT, "datatype": FOLD_DATATYPE, "shape": [-1], "optional": True}
    each = {"fold_identifier": True, "datatypes": list(IDENTIFIER_DATATYPES)}
    ids = [
        {"name": n, "datatype": "UINT64", "shape": [-1], "optional": True, "parameters": each}
        for n in identifiers
    ]
    return {"folds": folds, "optional_inputs": [tensor, *ids]}


def fold_identifiers(meta: ModelMetadata) -> tuple[str, ...]:
    """The identifier inputs *meta*'s model computes folds from (none when it records no
    identifiers or seed, or is not k-folded)."""
    return meta.fold_identifiers if meta.folds and meta.fold_seed is not None else ()


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
