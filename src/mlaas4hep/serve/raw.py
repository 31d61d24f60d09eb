"""Raw event columns on the V2 route: the seam between serving and a bundle's preprocessing.

A model version whose bundle carries its preprocessing (``spec.yaml`` and a
``features.json`` recording the input branches and their types) also accepts a V2
request whose inputs are named after those branches (docs/inference.md, "Raw event
columns"):

- a flat branch ``MET_pt``: a 1-D tensor of N events, in the branch's own datatype;
- a jagged branch ``Jet_pt``: its flattened values, a 1-D tensor named ``Jet_pt``, plus
  one counts tensor per collection named ``n`` + the part before the first ``_``
  (``nJet``, as NanoAOD stores it), shared by every ``Jet_*`` branch; any integer datatype.

The response holds ``scores`` (N, k) float32, NaN where the event fails the cuts, and
``pass`` (N,) BOOL. Serving never imports the preprocessing: the app factory hands the
manager a ``RawLoader`` (``mlaas4hep.apply.serving``) that builds a ``RawPreprocessor``
per version; this module only decodes and checks the columns against what it declares.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mlaas4hep.errors import SpecError
from mlaas4hep.serve.errors import InvalidInput
from mlaas4hep.serve.metadata import NUMPY_TO_V2, TensorSpec

Array = np.ndarray[Any, Any]
#: Runs the served ONNX graph on a batch: the version's own, checked session.
RunModel = Callable[[Mapping[str, Array]], dict[str, Array]]
SCORES_OUTPUT = "scores"
PASS_OUTPUT = "pass"  # noqa: S105 - a tensor name, not a password
COUNTS_PREFIX = "n"


def counts_name(branch: str) -> str:
    """The counts tensor of the jagged *branch*: ``Jet_pt`` -> ``nJet`` (NanoAOD's name)."""
    return COUNTS_PREFIX + branch.split("_", 1)[0]


@dataclass(frozen=True)
class RawInput:
    """One input branch: its V2 datatype, and whether it is jagged (values + counts)."""

    name: str
    datatype: str
    jagged: bool


#: A column handed to the preprocessor: a flat (n,) array, or (values, counts int64).
Column = Array | tuple[Array, Array]


class RawPreprocessor(Protocol):
    """A model version's preprocessing, as the serving layer sees it (plain types only,
    so the implementation never imports ``serve``).

    ``score`` is blocking and thread-safe: it runs off the event loop.
    """

    @property
    def branches(self) -> Mapping[str, str]:
        """Input branch -> its type as ``features.json`` records it (``"int32"``,
        ``"var * float32"``)."""
        ...

    def score(self, columns: Mapping[str, Column]) -> tuple[Array, Array]:
        """Scores (n, k) float32 (NaN where the event fails the cuts) and the pass mask."""
        ...


#: Builds the preprocessor of a version directory, given the version's session: None
#: when it carries no preprocessing; a Mlaas4hepError says why it cannot be served raw.
RawLoader = Callable[[Path, RunModel], "RawPreprocessor | None"]


@dataclass(frozen=True)
class RawSupport:
    """Whether a loaded version takes raw columns; ``reason``: why its preprocessing
    cannot be served (empty when it takes them, or carries none)."""

    preprocessor: RawPreprocessor | None = None
    inputs: tuple[RawInput, ...] = ()
    reason: str = ""

    @classmethod
    def of(cls, preprocessor: RawPreprocessor) -> RawSupport:
        """Support through *preprocessor*; SpecError for a branch type V2 cannot carry."""
        inputs = tuple(_raw_input(n, t) for n, t in sorted(preprocessor.branches.items()))
        return cls(preprocessor, inputs)

    def tensors(self) -> list[dict[str, Any]]:
        """The raw inputs as V2 tensor descriptions (for the model metadata)."""
        counters = _counters(self.inputs)
        out: list[dict[str, Any]] = []
        for raw in self.inputs:
            tensor = TensorSpec(raw.name, raw.datatype, (-1,)).to_json()
            if raw.jagged:
                tensor["parameters"] = {"counts": counts_name(raw.name)}
            elif raw.name in counters:  # a counter the preprocessing reads too (nJet)
                tensor["parameters"] = {"counts_of": raw.name.removeprefix(COUNTS_PREFIX)}
            out.append(tensor)
        names = {r.name for r in self.inputs}
        for name in counters:
            if name not in names:  # any integer datatype is taken; INT64 is suggested
                tensor = TensorSpec(name, "INT64", (-1,)).to_json()
                out.append(
                    {**tensor, "parameters": {"counts_of": name.removeprefix(COUNTS_PREFIX)}}
                )
        return out


def _raw_input(name: str, branch_type: str) -> RawInput:
    jagged = branch_type.startswith("var * ")
    dtype = branch_type.removeprefix("var * ")
    try:
        datatype = NUMPY_TO_V2.get(np.dtype(dtype))
    except TypeError:  # not a numpy type name ("string", "var * var * float32")
        datatype = None
    if datatype is None:
        msg = (
            f"input branch {name!r} has type {branch_type!r}; raw columns carry numbers and "
            "lists of numbers only (re-run `mlaas4hep run` if the type is empty)"
        )
        raise SpecError(msg)
    return RawInput(name, datatype, jagged)


def raw_outputs(width: int) -> list[dict[str, Any]]:
    """The outputs of a raw request, as V2 tensor descriptions."""
    return [
        TensorSpec(SCORES_OUTPUT, "FP32", (-1, width)).to_json(),
        TensorSpec(PASS_OUTPUT, "BOOL", (-1,)).to_json(),
    ]


def decode_columns(
    model: str,
    inputs: tuple[RawInput, ...],
    tensors: Mapping[str, Array],
    datatypes: Mapping[str, str],
) -> dict[str, Column]:
    """Check the request's tensors against *inputs*; return branch -> column.

    Raises InvalidInput naming the missing or unknown tensor, the wrong datatype or
    shape, or the counts that do not match the values.
    """
    counters = _counters(inputs)
    wanted = {r.name for r in inputs} | set(counters)
    missing, unknown = sorted(wanted - tensors.keys()), sorted(tensors.keys() - wanted)
    if missing or unknown:
        msg = (
            f"model {model!r} takes raw columns {sorted(wanted)} (jagged branches as values "
            f"plus an n<Collection> counts tensor); missing {missing}, unknown {unknown}"
        )
        raise InvalidInput(msg)
    events = _events(inputs, tensors, counters)
    counts = {name: _counts(name, tensors[name], datatypes[name]) for name in counters}
    columns: dict[str, Column] = {}
    for raw in inputs:
        values = tensors[raw.name]
        if datatypes[raw.name] != raw.datatype:
            said = datatypes[raw.name]
            msg = f"raw input {raw.name!r} must be {raw.datatype}, the request says {said}"
            raise InvalidInput(msg)
        if not raw.jagged:
            columns[raw.name] = values
            continue
        counter = counts_name(raw.name)
        total = _total(counts[counter], len(values))
        if total != str(len(values)):
            msg = (
                f"raw input {raw.name!r} has {len(values)} values but {counter!r} counts "
                f"{total} objects in {events} events; send the flattened values of those events"
            )
            raise InvalidInput(msg)
        columns[raw.name] = (values, counts[counter])
    return columns


def _total(counts: Array, values: int) -> str:
    """The objects *counts* count, as text; max() first, as huge counts could wrap the sum
    around to exactly *values*."""
    return f"more than {values}" if int(counts.max()) > values else str(int(counts.sum()))


def _counters(inputs: tuple[RawInput, ...]) -> list[str]:
    return sorted({counts_name(r.name) for r in inputs if r.jagged})


def _events(inputs: tuple[RawInput, ...], tensors: Mapping[str, Array], counters: list[str]) -> int:
    """The number of events: the common length of the flat and counts tensors (all 1-D)."""
    for name, array in tensors.items():
        if array.ndim != 1:
            msg = f"raw input {name!r} must be a 1-D tensor, got shape {list(array.shape)}"
            raise InvalidInput(msg)
    per_event = [r.name for r in inputs if not r.jagged] + counters
    lengths = {name: len(tensors[name]) for name in per_event}
    if len(set(lengths.values())) != 1:
        msg = f"the per-event raw inputs must all hold one value per event; got lengths {lengths}"
        raise InvalidInput(msg)
    events = next(iter(lengths.values()))
    if events < 1:
        msg = "the raw inputs hold no events"
        raise InvalidInput(msg)
    return events


def _counts(name: str, array: Array, datatype: str) -> Array:
    if array.dtype.kind not in "iu":
        msg = f"counts tensor {name!r} must have an integer datatype, the request says {datatype}"
        raise InvalidInput(msg)
    counts = array.astype(np.int64, copy=False)
    if len(counts) and int(counts.min()) < 0:  # uint64 counts above 2**63 wrap negative too
        msg = f"counts tensor {name!r} has negative counts"
        raise InvalidInput(msg)
    return counts
