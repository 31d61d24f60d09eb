"""The V2 wire format: JSON and binary tensors, round trips and precise errors."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mlaas4hep.serve.codec import decode_request, encode_response
from mlaas4hep.serve.errors import InvalidInput
from mlaas4hep.serve.metadata import NUMPY_TO_V2, V2_TO_NUMPY

DTYPES = [d for d in V2_TO_NUMPY.values() if d.kind in "fiub"]


def _binary_request(arrays: dict[str, np.ndarray]) -> tuple[bytes, int]:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": list(a.shape),
                    "datatype": NUMPY_TO_V2[a.dtype],
                    "parameters": {"binary_data_size": a.nbytes},
                }
                for name, a in arrays.items()
            ]
        }
    )
    return header + b"".join(a.tobytes() for a in arrays.values()), len(header)


@given(
    st.sampled_from(DTYPES).flatmap(
        lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=1, max_dims=3, max_side=5))
    )
)
def test_binary_round_trip(array: np.ndarray) -> None:
    body, length = _binary_request({"x": array, "y": array[..., ::-1].copy()})
    request = decode_request(body, length)
    np.testing.assert_array_equal(request.inputs["x"], array)
    np.testing.assert_array_equal(request.inputs["y"], array[..., ::-1])
    out, header_length = encode_response("m", "1", None, [("x", array, True)])
    assert header_length is not None
    doc = json.loads(out[:header_length])
    assert doc["outputs"][0]["shape"] == list(array.shape)
    back = np.frombuffer(out[header_length:], dtype=array.dtype).reshape(array.shape)
    np.testing.assert_array_equal(back, array)


@given(
    hnp.arrays(
        np.float32,
        hnp.array_shapes(max_dims=2, max_side=4),
        elements=st.floats(-1e6, 1e6, width=32),
    )
)
def test_json_round_trip(array: np.ndarray) -> None:
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": list(array.shape),
                    "datatype": "FP32",
                    "data": array.tolist(),
                }
            ]
        }
    ).encode()
    request = decode_request(body, None)
    np.testing.assert_array_equal(request.inputs["x"], array)
    out, header_length = encode_response("m", "1", "id-1", [("x", array, False)])
    assert header_length is None
    doc = json.loads(out)
    assert doc["id"] == "id-1"
    np.testing.assert_array_equal(np.asarray(doc["outputs"][0]["data"], np.float32), array.ravel())


def test_request_options_are_read() -> None:
    body = json.dumps(
        {
            "id": 7,
            "inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [3]}],
            "outputs": [{"name": "a"}, {"name": "b", "parameters": {"binary_data": False}}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    request = decode_request(body, None)
    assert request.id == "7"
    assert request.binary_output
    assert request.outputs is not None
    assert [(o.name, o.binary) for o in request.outputs] == [("a", None), ("b", False)]


def _input(**fields: object) -> bytes:
    base = {"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}
    return json.dumps({"inputs": [{**base, **fields}]}).encode()


@pytest.mark.parametrize(
    ("body", "length", "fragment"),
    [
        (b"[1]", None, "must be a JSON object"),
        (b"{", None, "not valid JSON"),
        (b'{"inputs": {}}', None, "non-empty 'inputs'"),
        (b'{"inputs": [1]}', None, "each input needs"),
        (_input(shape=[-1]), None, "non-negative integers"),
        (_input(datatype="BYTES"), None, "unsupported datatype 'BYTES'"),
        (_input(data=None), None, "neither 'data' nor"),
        (_input(data=[1, 2, 3]), None, "has 3 elements"),
        (_input(data=["a", "b"]), None, "not a (nested) list"),
        (_input(parameters={"binary_data_size": 8}), None, "runs past the end"),
        (_input(data=[1, 2]) + b"xx", None, "not valid JSON"),
        (b"{}", 10, "Inference-Header-Content-Length is 10"),
        (
            json.dumps(
                {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}] * 2}
            ).encode(),
            None,
            "appears twice",
        ),
        (
            json.dumps(
                {
                    "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
                    "outputs": {},
                }
            ).encode(),
            None,
            "'outputs' must be a list",
        ),
    ],
)
def test_bad_requests(body: bytes, length: int | None, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        decode_request(body, length)


def test_binary_size_must_match_shape_and_body() -> None:
    x = np.zeros(2, np.float32)
    header = _input(parameters={"binary_data_size": 4})
    with pytest.raises(InvalidInput, match="shape needs 2 x 4 = 8"):
        decode_request(header + x.tobytes(), len(header))
    body, length = _binary_request({"x": x})
    with pytest.raises(InvalidInput, match="3 bytes after the last binary input"):
        decode_request(body + b"abc", length)
