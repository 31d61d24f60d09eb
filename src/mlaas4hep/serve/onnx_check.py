"""Refuse ONNX models that reference files: every tensor must live inside the model.

ONNX lets a tensor keep its bytes in another file (``data_location: EXTERNAL`` with
``external_data`` entries naming a ``location`` relative to the model). A model that
someone else wrote (an upload, a job's result) could name any file the server can read
(the issuer's key beside a symbolic link, say) and have its bytes come back through an
ordinary inference request. Served models are therefore self-contained: the check walks
every tensor wherever it sits (found by protobuf reflection: initializers, sparse tensors,
node attributes, subgraphs, local functions and their attribute defaults, training-info
graphs) and refuses the model at upload, at
publish and at load. Sessions are created from the checked bytes, never from a path, so
ONNX Runtime has no directory to resolve a file name against either.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import onnx

from mlaas4hep.errors import SpecError


def check_self_contained(data: bytes, where: str = "the model") -> None:
    """Raise SpecError unless the serialized ONNX model *data* references no file.

    *where* names the model in messages (never the server's path of an upload).
    """
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError (untyped), RecursionError, ...
        msg = f"{where} is not a readable ONNX model ({type(exc).__name__}); export it again"
        raise SpecError(msg) from exc
    for owner, tensor in _tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            msg = (
                f"{where}: tensor {tensor.name!r} of {owner} keeps its data in an external "
                "file; served models must be self-contained: save with "
                "onnx.save_model(model, path, save_as_external_data=False)"
            )
            raise SpecError(msg)


def _tensors(model: onnx.ModelProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    """Every tensor anywhere in the model, with the path of fields that leads to it.

    A walk over protobuf reflection, not a hand list of places: function attribute
    defaults (``FunctionProto.attribute_proto``), sparse tensors, subgraphs of
    subgraphs and whatever a later ONNX version adds are all found. Iterative: a model
    nested deeper than Python's recursion limit cannot crash the check.
    """
    stack: list[tuple[str, Any]] = [("the model", model)]  # protobuf messages
    while stack:
        where, message = stack.pop()
        if isinstance(message, onnx.TensorProto):
            yield where, message
        for field, value in message.ListFields():
            if field.message_type is None:
                continue
            inner = f"{where}/{field.name}"
            if hasattr(value, "ListFields"):  # one message
                stack.append((inner, value))
            else:  # a repeated field of messages
                stack.extend((inner, item) for item in value)
