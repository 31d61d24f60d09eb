"""Checks of a decoded inference request against the loaded version, before it is queued
(so one bad request never fails a batch it shares), and the outputs it asked for."""

from __future__ import annotations

from mlaas4hep.serve.codec import Array, InferRequest
from mlaas4hep.serve.errors import InvalidInput
from mlaas4hep.serve.manager import LoadedVersion
from mlaas4hep.serve.metadata import TensorSpec


def check_inputs(loaded: LoadedVersion, inputs: dict[str, Array], datatypes: dict[str, str]) -> int:
    """Check tensors against the model's inputs; return the common batch size (rows)."""
    specs = loaded.input_specs
    if inputs.keys() != specs.keys():
        msg = (
            f"model {loaded.name!r} takes inputs {sorted(specs)}, the request sent {sorted(inputs)}"
        )
        raise InvalidInput(msg)
    rows = {check_tensor(specs[n], a, datatypes[n]) for n, a in inputs.items()}
    if len(rows) != 1:
        msg = f"inputs of model {loaded.name!r} must share their first (batch) axis; got {rows}"
        raise InvalidInput(msg)
    return rows.pop()


def check_tensor(spec: TensorSpec, array: Array, datatype: str) -> int:
    if datatype != spec.datatype:
        msg = f"input {spec.name!r} must be {spec.datatype}, the request says {datatype}"
        raise InvalidInput(msg)
    bad_rank = array.ndim != len(spec.shape)
    if bad_rank or any(w > 0 and w != d for w, d in zip(spec.shape, array.shape, strict=True)):
        msg = f"input {spec.name!r} must have shape {list(spec.shape)}, got {list(array.shape)}"
        raise InvalidInput(msg)
    if array.shape[0] < 1:
        msg = f"input {spec.name!r} has no rows"
        raise InvalidInput(msg)
    return int(array.shape[0])


def is_raw(loaded: LoadedVersion, request: InferRequest) -> bool:
    """A request for the raw columns: the model takes them and the feature tensors are
    not what was sent (the feature-tensor path is then exactly as for any model)."""
    features = loaded.input_specs.keys()
    if request.inputs.keys() == features:
        return False
    if loaded.raw.reason:  # it carries preprocessing that cannot be served: say why
        msg = (
            f"model {loaded.name!r} takes inputs {sorted(features)}; it cannot take raw "
            f"event columns: {loaded.raw.reason}"
        )
        raise InvalidInput(msg)
    return loaded.raw.preprocessor is not None


def select_outputs(
    loaded: LoadedVersion,
    request: InferRequest,
    outputs: dict[str, Array],
    defaults: tuple[str, ...],
) -> list[tuple[str, Array, bool]]:
    if request.outputs is None:
        return [(n, outputs[n], request.binary_output) for n in defaults]
    chosen = []
    for wanted in request.outputs:
        if wanted.name not in outputs:
            msg = f"model {loaded.name!r} has outputs {sorted(outputs)}, not {wanted.name!r}"
            raise InvalidInput(msg)
        binary = request.binary_output if wanted.binary is None else wanted.binary
        chosen.append((wanted.name, outputs[wanted.name], binary))
    return chosen
