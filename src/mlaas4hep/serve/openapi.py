"""OpenAPI descriptions of the inference routes: summaries, bodies, answers, errors.

Documentation only. The routes read their bodies themselves (``response_class=Response``
and ``ErrorRoute``, see v2.py): nothing here validates a request, so the description
costs nothing per request. Schemas are inline JSON Schema (no components to register),
written from the Open Inference Protocol V2 and the Triton extensions served here.
"""

from __future__ import annotations

from typing import Any

Doc = dict[str, Any]

_ERROR: Doc = {
    "type": "object",
    "properties": {"error": {"type": "string", "description": "what went wrong, and what to do"}},
    "required": ["error"],
}
_ERROR_TEXT = {
    400: "malformed request: invalid JSON, unknown input, wrong shape or datatype, corrupt "
    "compressed body (the message lists what the model takes)",
    401: "missing or invalid bearer token (with WWW-Authenticate: Bearer)",
    403: "the caller may not use this model (scope or owner's sharing)",
    404: "the model or version is not in service (the message lists the closest names)",
    409: "the name is taken or the model changed meanwhile",
    413: "the body, or its decompressed size, is over the service's max_request_bytes",
    422: "the upload is not a servable model (the message says why)",
    415: "a Content-Encoding other than gzip, deflate or identity",
    503: "the model's queue is full: retry after Retry-After seconds",
}


def errors(*statuses: int) -> dict[int | str, Doc]:
    """Response entries for *statuses*, each ``{"error": "..."}`` as the protocol wants."""
    return {
        status: {
            "description": _ERROR_TEXT[status],
            "content": {"application/json": {"schema": _ERROR}},
        }
        for status in statuses
    }


_DATATYPE: Doc = {
    "type": "string",
    "enum": [
        "BOOL",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "FP16",
        "FP32",
        "FP64",
    ],
}
_SHAPE: Doc = {"type": "array", "items": {"type": "integer", "minimum": 0}}
_DATA: Doc = {
    "description": "the tensor's elements, flat or nested, row-major",
    "type": "array",
    "items": {},
}
_INPUT: Doc = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "shape": _SHAPE,
        "datatype": _DATATYPE,
        "parameters": {
            "type": "object",
            "properties": {
                "binary_data_size": {
                    "type": "integer",
                    "description": "binary extension: the tensor's bytes follow the JSON "
                    "header (little-endian, in input order) instead of 'data'",
                }
            },
        },
        "data": _DATA,
    },
    "required": ["name", "shape", "datatype"],
}
_OUTPUT_REQUEST: Doc = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "parameters": {
            "type": "object",
            "properties": {
                "binary_data": {"type": "boolean", "description": "return this output binary"}
            },
        },
    },
    "required": ["name"],
}
_INFER_REQUEST: Doc = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "echoed in the response"},
        "inputs": {"type": "array", "items": _INPUT, "minItems": 1},
        "outputs": {
            "type": "array",
            "items": _OUTPUT_REQUEST,
            "description": "the outputs to return (default: all)",
        },
        "parameters": {
            "type": "object",
            "properties": {
                "binary_data_output": {
                    "type": "boolean",
                    "description": "return every output binary",
                }
            },
        },
    },
    "required": ["inputs"],
}
_OUTPUT: Doc = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "shape": _SHAPE,
        "datatype": _DATATYPE,
        "parameters": {
            "type": "object",
            "properties": {"binary_data_size": {"type": "integer"}},
        },
        "data": _DATA,
    },
    "required": ["name", "shape", "datatype"],
}
_INFER_RESPONSE: Doc = {
    "type": "object",
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {"type": "array", "items": _OUTPUT},
    },
    "required": ["model_name", "model_version", "outputs"],
}
_BINARY_BODY: Doc = {
    "type": "string",
    "format": "binary",
    "description": "binary extension: the JSON header (its length in "
    "Inference-Header-Content-Length), then the raw tensor bytes",
}
_HEADER_LENGTH: Doc = {
    "name": "Inference-Header-Content-Length",
    "in": "header",
    "required": False,
    "schema": {"type": "integer", "minimum": 1},
    "description": "binary extension: length of the JSON header at the start of the "
    "(decompressed) body; the rest are the tensors' bytes",
}
_CONTENT_ENCODING: Doc = {
    "name": "Content-Encoding",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "enum": ["gzip", "x-gzip", "deflate", "identity"]},
    "description": "a compressed body; max_request_bytes applies to its decompressed size",
}
_ACCEPT_ENCODING: Doc = {
    "name": "Accept-Encoding",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "example": "gzip"},
    "description": "gzip or deflate: responses from response_compression_min_bytes up come "
    "back compressed (Content-Encoding says which)",
}

INFER: Doc = {
    "summary": "Run a model (Open Inference Protocol V2)",
    "description": "Tensors as JSON ('data') or, with the binary tensor extension, as raw "
    "bytes after the JSON header. Without a version the newest in service answers. A model "
    "whose bundle carries its preprocessing also takes raw event columns (see "
    "parameters.raw_inputs in its metadata). The body may be gzip/deflate compressed; "
    "the answer is compressed when Accept-Encoding asks and it is large enough. Needs "
    "the 'infer' right on the model.",
    "responses": {
        200: {
            "description": "the outputs; binary ones after the JSON header, whose length "
            "is then in Inference-Header-Content-Length",
            "headers": {
                "Inference-Header-Content-Length": {
                    "schema": {"type": "integer"},
                    "description": "present when outputs are binary: JSON header length "
                    "in the decompressed body",
                },
                "Content-Encoding": {"schema": {"type": "string", "enum": ["gzip", "deflate"]}},
            },
            "content": {
                "application/json": {"schema": _INFER_RESPONSE},
                "application/octet-stream": {"schema": _BINARY_BODY},
            },
        },
        **errors(400, 401, 403, 404, 413, 415, 503),
    },
    "openapi_extra": {
        "parameters": [_HEADER_LENGTH, _CONTENT_ENCODING, _ACCEPT_ENCODING],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _INFER_REQUEST},
                "application/octet-stream": {"schema": _BINARY_BODY},
            },
        },
    },
}

_TENSOR_META: Doc = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "datatype": _DATATYPE, "shape": _SHAPE},
}
MODEL_METADATA: Doc = {
    "summary": "Model metadata (V2)",
    "description": "Inputs, outputs, versions in service and provenance (feature_names, "
    "labels, spec_hash, metrics, created; raw_inputs/raw_outputs for a model that takes "
    "raw event columns). Needs the 'read' right.",
    "responses": {
        200: {
            "description": "the model's metadata",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "versions": {"type": "array", "items": {"type": "string"}},
                            "platform": {"type": "string"},
                            "inputs": {"type": "array", "items": _TENSOR_META},
                            "outputs": {"type": "array", "items": _TENSOR_META},
                            "parameters": {"type": "object"},
                        },
                    }
                }
            },
        },
        **errors(401, 403, 404),
    },
}
MODEL_READY: Doc = {
    "summary": "Model readiness (V2)",
    "description": "200 when the model (version) is in service, else 404.",
    "responses": {
        200: {
            "description": "in service",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        **errors(401, 403, 404),
    },
}
_DIMS_TENSOR: Doc = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "data_type": {"type": "string", "example": "TYPE_FP32"},
        "dims": {"type": "array", "items": {"type": "integer"}},
    },
}
MODEL_CONFIG: Doc = {
    "summary": "Model configuration (Triton model configuration extension)",
    "description": "The version's configuration in Triton's ModelConfig JSON: platform, "
    "version_policy, max_batch_size and dynamic_batching (the batching policy), input and "
    "output with dims without the batch axis. Needs the 'read' right.",
    "responses": {
        200: {
            "description": "the configuration",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "platform": {"type": "string"},
                            "backend": {"type": "string"},
                            "version_policy": {"type": "object"},
                            "max_batch_size": {"type": "integer"},
                            "input": {"type": "array", "items": _DIMS_TENSOR},
                            "output": {"type": "array", "items": _DIMS_TENSOR},
                            "dynamic_batching": {"type": "object"},
                            "parameters": {"type": "object"},
                        },
                    }
                }
            },
        },
        **errors(401, 403, 404),
    },
}
_DURATION: Doc = {
    "type": "object",
    "properties": {"count": {"type": "integer"}, "ns": {"type": "integer"}},
}
_MODEL_STAT: Doc = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "version": {"type": "string"},
        "last_inference": {"type": "integer", "description": "ms since the epoch"},
        "inference_count": {"type": "integer", "description": "rows answered"},
        "execution_count": {"type": "integer", "description": "model runs (batches)"},
        "inference_stats": {
            "type": "object",
            "properties": dict.fromkeys(
                ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"),
                _DURATION,
            ),
        },
        "batch_stats": {"type": "array", "items": {"type": "object"}},
    },
}
STATISTICS: Doc = {
    "summary": "Inference statistics (Triton statistics extension)",
    "description": "Counts and cumulative durations (ns) per model version in service, "
    "since it was loaded, in this server process. Without a model: every model the caller "
    "may read; without a version: each version in service. Needs the 'read' right.",
    "responses": {
        200: {
            "description": "the statistics",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {"model_stats": {"type": "array", "items": _MODEL_STAT}},
                    }
                }
            },
        },
        **errors(401, 403, 404),
    },
}

TFAAS_PREDICT: Doc = {
    "summary": "Run a model (legacy TFaaS JSON)",
    "description": "One row (flat list) or many (list of lists) in the model's feature "
    "order; 'keys' reorders them by the model's feature names. The answer is the model's "
    "first output: a list for one row, a list of lists for many. The body may be "
    "gzip/deflate compressed; the answer is compressed when Accept-Encoding asks and it "
    "is large enough. Needs the 'infer' right.",
    "responses": {
        200: {
            "description": "the first output",
            "content": {"application/json": {"schema": {"type": "array", "items": {}}}},
        },
        **errors(400, 401, 403, 404, 413, 415, 503),
    },
    "openapi_extra": {
        "parameters": [_CONTENT_ENCODING, _ACCEPT_ENCODING],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "model": {"type": "string"},
                            "keys": {"type": "array", "items": {"type": "string"}},
                            "values": {
                                "type": "array",
                                "items": {},
                                "description": "one row, or a list of rows",
                            },
                        },
                        "required": ["model", "values"],
                    }
                }
            },
        },
    },
}


def simple(
    summary: str, description: str, answer: str, *statuses: int, media: str = "", ok: int = 200
) -> Doc:
    """The description of a route whose *ok* answer is *answer* (JSON unless *media*)."""
    content: Doc = {media or "application/json": {"schema": {}}}
    return {
        "summary": summary,
        "description": description,
        "responses": {ok: {"description": answer, "content": content}, **errors(*statuses)},
    }


LIVE = simple("Liveness (V2)", "No token needed; reveals nothing.", '{"live": true}')
READY = simple(
    "Readiness (V2)",
    "No token needed: 200 after the first repository scan, 503 before.",
    '{"ready": true}',
)
SERVER_METADATA = simple(
    "Server metadata (V2)",
    "Name, version and the protocol extensions served.",
    "name, version, extensions",
    401,
)
BUNDLE = simple(
    "Download a version's bundle",
    "The allow-listed bundle files of a published version as NAME-VERSION.tar.gz (not part "
    "of the protocol; for mlaas4hep apply NAME). Needs the 'read' right.",
    "the tar.gz",
    401,
    403,
    404,
    media="application/gzip",
)
REPOSITORY_INDEX = simple(
    "Repository index (V2 model repository extension)",
    "Every model version on disk the caller may read: READY or UNAVAILABLE with the reason.",
    "a list of {name, version, state, reason}",
    401,
)
LOAD = simple(
    "Load a model (V2 model repository extension)",
    "Serve the model again after unload; needs the 'modify' right.",
    "{}",
    400,
    401,
    403,
    404,
)
UNLOAD = simple(
    "Unload a model (V2 model repository extension)",
    "Take every version out of service until load; needs the 'modify' right.",
    "{}",
    401,
    403,
    404,
)
TFAAS_MODELS = simple(
    "List models (legacy TFaaS)",
    "One entry per model the caller may read (null when none).",
    "the models",
    401,
)
TFAAS_UPLOAD = simple(
    "Upload a model (legacy TFaaS)",
    "A multipart form (model=ONNX file, metadata, name, share) or a tarball (gzip or "
    "not; name and share as query parameters). Checked by loading it, published as the "
    "next version and loaded before the answer. 'create' right for a new name, 'modify' "
    "for a new version.",
    '{"name", "version"}',
    400,
    401,
    403,
    409,
    413,
    422,
    ok=201,
)
TFAAS_DELETE = simple(
    "Delete a model (legacy TFaaS)",
    "Every version and the owner record; 'modify' right. The name: query or form field 'model'.",
    '{"deleted": name}',
    400,
    401,
    403,
    404,
)
