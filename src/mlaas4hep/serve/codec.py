"""The Open Inference Protocol V2 wire format: JSON tensors and the binary extension.

Pure functions over bytes, no HTTP. A request body is a JSON header, optionally followed
by raw tensor bytes; ``Inference-Header-Content-Length`` (passed in as ``header_length``)
says where the JSON ends. An input with ``parameters.binary_data_size`` takes that many
bytes, in input order, from what follows. Outputs are returned as binary when the request
asks (``outputs[i].parameters.binary_data`` or the request-wide ``binary_data_output``);
then the response is also JSON header + bytes, and the header length is returned.
BYTES tensors are not supported (the served models take numbers).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from mlaas4hep.documents import MAX_DEPTH, check_depth, load_json
from mlaas4hep.errors import DocumentError, SpecError
from mlaas4hep.serve.errors import InvalidInput
from mlaas4hep.serve.metadata import NUMPY_TO_V2, V2_TO_NUMPY, numpy_dtype

Array = np.ndarray[Any, Any]
#: A tensor never has more elements or dimensions than this (requests are capped well
#: below 2**31 bytes anyway; the caps keep the arithmetic and numpy's reshape safe).
MAX_ELEMENTS = 2**31
MAX_RANK = 32


@dataclass(frozen=True)
class RequestedOutput:
    """An output the client asked for; ``binary`` None means "request default"."""

    name: str
    binary: bool | None


@dataclass(frozen=True)
class InferRequest:
    """A decoded V2 inference request."""

    id: str | None
    inputs: dict[str, Array]
    datatypes: dict[str, str]
    outputs: tuple[RequestedOutput, ...] | None
    binary_output: bool


def decode_request(body: bytes, header_length: int | None) -> InferRequest:
    """Decode a V2 request body; raise InvalidInput saying what is wrong."""
    if header_length is None:
        fast = _decode_plain_json(body)
        if fast is not None:
            return fast
    return _decode_general(body, header_length)


def _decode_general(body: bytes, header_length: int | None) -> InferRequest:
    """Any V2 request body, every value checked on its own (the reference decoder)."""
    if header_length is not None and not 0 < header_length <= len(body):
        msg = (
            f"Inference-Header-Content-Length is {header_length} but the body has "
            f"{len(body)} bytes; send the length of the JSON part"
        )
        raise InvalidInput(msg)
    end = len(body) if header_length is None else header_length
    header = _load_json(body[:end])
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        msg = "the request needs a non-empty 'inputs' list"
        raise InvalidInput(msg)
    inputs: dict[str, Array] = {}
    datatypes: dict[str, str] = {}
    offset = end
    for raw in raw_inputs:
        name, datatype, array, offset = _decode_input(raw, body, offset)
        if name in inputs:
            msg = f"input {name!r} appears twice in the request"
            raise InvalidInput(msg)
        inputs[name], datatypes[name] = array, datatype
    if offset != len(body):
        msg = f"{len(body) - offset} bytes after the last binary input; check binary_data_size"
        raise InvalidInput(msg)
    params = header.get("parameters") or {}
    return InferRequest(
        id=None if header.get("id") is None else str(header["id"]),
        inputs=inputs,
        datatypes=datatypes,
        outputs=_decode_outputs(header.get("outputs")),
        binary_output=bool(isinstance(params, dict) and params.get("binary_data_output")),
    )


def _decode_plain_json(body: bytes) -> InferRequest | None:
    """The common all-JSON request, decoded without the general path's walk over every
    value; None for anything unusual (binary inputs, odd types, duplicate names, deep
    nesting, any error): the general path then decodes it, or raises its usual error.

    It only answers when the general path would give the very same request: the same
    parser, the same ``np.asarray`` conversion, and the same depth limit (the data's
    nesting is its array's rank, so only the other values are walked).
    """
    try:
        header = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(header) is not dict or not _shallow(header, ("inputs",), 1):
        return None
    raw_inputs = header.get("inputs")
    if type(raw_inputs) is not list or not raw_inputs:
        return None
    inputs: dict[str, Array] = {}
    datatypes: dict[str, str] = {}
    for raw in raw_inputs:
        decoded = _plain_json_input(raw)
        if decoded is None or decoded[0] in inputs:
            return None
        name, datatypes[name], inputs[name] = decoded
    try:
        outputs = _decode_outputs(header.get("outputs"))
    except InvalidInput:
        return None
    params = header.get("parameters") or {}
    return InferRequest(
        id=None if header.get("id") is None else str(header["id"]),
        inputs=inputs,
        datatypes=datatypes,
        outputs=outputs,
        binary_output=bool(isinstance(params, dict) and params.get("binary_data_output")),
    )


def _plain_json_input(raw: Any) -> tuple[str, str, Array] | None:
    """One input of ``_decode_plain_json`` (name, datatype, array), or None."""
    if type(raw) is not dict:
        return None
    get = raw.get
    name, shape, datatype, data = get("name"), get("shape"), get("datatype"), get("data")
    if type(name) is not str or type(shape) is not list or type(data) is not list:
        return None
    if len(shape) > MAX_RANK or not all(type(d) is int and d >= 0 for d in shape):
        return None
    if type(datatype) is not str or datatype not in V2_TO_NUMPY:
        return None
    params = raw.get("parameters")
    if params and (type(params) is not dict or "binary_data_size" in params):
        return None
    count = math.prod(shape)
    if count > MAX_ELEMENTS or not _shallow(raw, ("data", "shape"), 3):
        return None
    try:
        array = np.asarray(data, dtype=V2_TO_NUMPY[datatype])
        if array.size != count or array.ndim > MAX_DEPTH - 3:  # data sits at depth 4
            return None
        return name, datatype, array.reshape(shape)
    except (TypeError, ValueError, OverflowError):
        return None


def _shallow(mapping: dict[str, Any], skip: tuple[str, ...], depth: int) -> bool:
    """Whether the values of *mapping* (at nesting *depth*), but those of the *skip*
    keys (checked by the caller), nest within the documents' depth limit."""
    for key, value in mapping.items():
        if key not in skip and isinstance(value, dict | list):
            try:
                check_depth(value, what="", max_depth=MAX_DEPTH - depth)
            except DocumentError:
                return False
    return True


def _load_json(data: bytes) -> dict[str, Any]:
    try:
        header = load_json(data, what="the request", limit=len(data))
    except DocumentError as exc:
        msg = f"{exc}; with binary tensors, set Inference-Header-Content-Length to the JSON length"
        raise InvalidInput(msg) from exc
    if not isinstance(header, dict):
        msg = f"the request must be a JSON object, got {type(header).__name__}"
        raise InvalidInput(msg)
    return header


def _decode_input(raw: Any, body: bytes, offset: int) -> tuple[str, str, Array, int]:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        msg = f"each input needs 'name', 'shape', 'datatype' and data; got {raw!r:.200}"
        raise InvalidInput(msg)
    name = raw["name"]
    shape, datatype = raw.get("shape"), raw.get("datatype")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        msg = f"input {name!r}: 'shape' must be a list of non-negative integers, got {shape!r}"
        raise InvalidInput(msg)
    try:
        dtype = numpy_dtype(str(datatype))
    except SpecError as exc:
        raise InvalidInput(f"input {name!r}: {exc}") from exc
    count = _element_count(name, shape)
    params = raw.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        array, offset = _binary_tensor(name, body, offset, size, dtype, count)
    else:
        array = _json_tensor(name, raw.get("data"), dtype, count)
    return name, str(datatype), array.reshape(shape), offset


def _element_count(name: str, shape: list[int]) -> int:
    # Python integers: np.prod in int64 wraps around for [2**62, 4] and the check below
    # would compare against a nonsense count.
    if len(shape) > MAX_RANK:
        msg = f"input {name!r}: shape has {len(shape)} dimensions; the limit is {MAX_RANK}"
        raise InvalidInput(msg)
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        msg = (
            f"input {name!r}: shape {shape!r} has more than {MAX_ELEMENTS} elements; "
            f"split the request into smaller batches"
        )
        raise InvalidInput(msg)
    return count


def _binary_tensor(
    name: str, body: bytes, offset: int, size: Any, dtype: np.dtype[Any], count: int
) -> tuple[Array, int]:
    if not isinstance(size, int) or size < 0 or offset + size > len(body):
        msg = f"input {name!r}: binary_data_size {size!r} runs past the end of the body"
        raise InvalidInput(msg)
    if size != count * dtype.itemsize:
        msg = (
            f"input {name!r}: binary_data_size is {size} bytes but the shape needs "
            f"{count} x {dtype.itemsize} = {count * dtype.itemsize}"
        )
        raise InvalidInput(msg)
    array = np.frombuffer(body, dtype=dtype.newbyteorder("<"), count=count, offset=offset)
    return array, offset + size


def _json_tensor(name: str, data: Any, dtype: np.dtype[Any], count: int) -> Array:
    if data is None:
        msg = f"input {name!r} has neither 'data' nor parameters.binary_data_size"
        raise InvalidInput(msg)
    try:
        array = np.asarray(data, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        msg = f"input {name!r}: 'data' is not a (nested) list of {dtype.name} numbers: {exc}"
        raise InvalidInput(msg) from exc
    if array.size != count:
        msg = f"input {name!r}: 'data' has {array.size} elements but 'shape' needs {count}"
        raise InvalidInput(msg)
    return array


def _decode_outputs(raw: Any) -> tuple[RequestedOutput, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        msg = f"'outputs' must be a list, got {raw!r:.200}"
        raise InvalidInput(msg)
    result = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            msg = f"each requested output needs a 'name'; got {item!r:.200}"
            raise InvalidInput(msg)
        params = item.get("parameters") or {}
        binary = params.get("binary_data") if isinstance(params, dict) else None
        result.append(RequestedOutput(item["name"], None if binary is None else bool(binary)))
    return tuple(result)


def encode_response(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Sequence[tuple[str, Array, bool]],
) -> tuple[bytes, int | None]:
    """Encode outputs ``(name, array, as_binary)``; return (body, JSON header length or None)."""
    blobs: list[bytes] = []
    tensors: list[Mapping[str, Any]] = []
    for name, array, binary in outputs:
        tensor: dict[str, Any] = {
            "name": name,
            "datatype": NUMPY_TO_V2[array.dtype],
            "shape": list(array.shape),
        }
        flat = np.ascontiguousarray(array).reshape(-1)
        if binary:
            blob = flat.astype(flat.dtype.newbyteorder("<"), copy=False).tobytes()
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = flat if flat.dtype != np.float16 else flat.tolist()
        tensors.append(tensor)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        doc["id"] = request_id
    doc["outputs"] = tensors
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def decode_tensor(
    name: str, datatype: str, shape: Sequence[int], *, raw: bytes | None, values: Any
) -> Array:
    """One input tensor from another framing (V2 gRPC): its raw little-endian bytes, or a
    sequence of typed values; the checks of the HTTP decoder (rank, element count, size,
    datatype), the same InvalidInput messages."""
    dims = list(shape)
    if not all(type(d) is int and d >= 0 for d in dims):  # JSON true is no dimension
        msg = f"input {name!r}: 'shape' must be non-negative integers, got {dims!r}"
        raise InvalidInput(msg)
    try:
        dtype = numpy_dtype(datatype)
    except SpecError as exc:
        raise InvalidInput(f"input {name!r}: {exc}") from exc
    count = _element_count(name, dims)
    if raw is not None:
        array, _ = _binary_tensor(name, raw, 0, len(raw), dtype, count)
    else:
        array = _json_tensor(name, values, dtype, count)
    return array.reshape(dims)
