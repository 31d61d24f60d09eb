"""V2 inference over HTTP with binary tensors: the one encoder the client and the CLI use.

A request sends one input tensor as raw little-endian bytes after a JSON header
(``Inference-Header-Content-Length``) and asks for binary outputs, so no number goes
through JSON text; the answer is split the same way.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from mlaas4hep.client.http import Transport
from mlaas4hep.errors import SpecError

Array = np.ndarray[Any, Any]
HEADER_LENGTH = "Inference-Header-Content-Length"
DTYPES: dict[str, type[np.generic]] = {
    "FP32": np.float32,
    "FP64": np.float64,
    "FP16": np.float16,
    "INT64": np.int64,
    "INT32": np.int32,
    "BOOL": np.bool_,
}


def model_path(name: str, version: str | None) -> str:
    """``/v2/models/NAME[/versions/VERSION]``."""
    return f"/v2/models/{name}" + (f"/versions/{version}" if version else "")


def dtype_of(tensor: dict[str, Any]) -> np.dtype[Any]:
    """The numpy dtype of a V2 tensor description; SpecError for types not sent here."""
    if tensor["datatype"] not in DTYPES:
        kind = tensor["datatype"]
        msg = f"tensor {tensor['name']!r} is {kind}; the client handles {sorted(DTYPES)}"
        raise SpecError(msg)
    return np.dtype(DTYPES[tensor["datatype"]])


def infer(
    http: Transport, path: str, inputs: dict[str, tuple[str, Array]]
) -> tuple[str, dict[str, Array]]:
    """POST *inputs* (name -> (V2 datatype, array)) to ``path/infer``.

    Returns the model version that answered and its outputs by name.
    """
    tensors, blobs = [], []
    for name, (datatype, array) in inputs.items():
        data = np.ascontiguousarray(array, dtype=np.dtype(DTYPES[datatype]).newbyteorder("<"))
        blob = data.tobytes()
        tensors.append(
            {
                "name": name,
                "shape": list(data.shape),
                "datatype": datatype,
                "parameters": {"binary_data_size": len(blob)},
            }
        )
        blobs.append(blob)
    header = json.dumps({"inputs": tensors, "parameters": {"binary_data_output": True}}).encode()
    response = http.call(
        "POST",
        path + "/infer",
        content=b"".join([header, *blobs]),
        headers={HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"},
    )
    body = response.content
    length = int(response.headers.get(HEADER_LENGTH, len(body)))
    doc = json.loads(body[:length])
    offset, outputs = length, {}
    for out in doc["outputs"]:
        dtype = dtype_of(out).newbyteorder("<")
        if "data" in out:  # a server that answered in JSON after all
            outputs[out["name"]] = np.asarray(out["data"], dtype=dtype).reshape(out["shape"])
            continue
        size = int(out["parameters"]["binary_data_size"])
        chunk = body[offset : offset + size]
        outputs[out["name"]] = np.frombuffer(chunk, dtype).reshape(out["shape"]).copy()
        offset += size
    return str(doc.get("model_version", "")), outputs
