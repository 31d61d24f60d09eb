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

import os
import resource
import subprocess
import sys
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


#: What building a session may take beyond the model's own bytes (interpreter and ONNX
#: Runtime included); a model of S bytes gets this plus 4 x S of address space.
LOAD_BASE_BYTES = 1 << 30
_LOAD_CHILD = """
import sys
import onnxruntime as ort
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
opts.inter_op_num_threads = 1
key = "session.model_external_initializers_file_folder_path"
opts.add_session_config_entry(key, "/nonexistent/mlaas4hep")
ort.InferenceSession(sys.stdin.buffer.read(), opts, providers=["CPUExecutionProvider"])
"""
_OUT_OF_MEMORY = ("bad_alloc", "MemoryError", "Failed to allocate", "std::length_error")


def check_loads_bounded(data: bytes, where: str = "the model", timeout_s: float = 120.0) -> None:
    """Build an ONNX Runtime session of *data* in a child process under an address-space
    limit, before the serving process builds one: constant folding at session creation can
    turn a 200-byte model into gigabytes (the red team's ``ConstantOfShape`` model).

    Raises SpecError when the child runs out of memory or time; other load failures are
    left to the caller's own load, which reports them in its words.
    """
    limit = LOAD_BASE_BYTES + 4 * len(data)

    def bounded() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "HOME")}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _LOAD_CHILD],
            input=data,
            capture_output=True,
            timeout=timeout_s,
            preexec_fn=bounded,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        msg = f"{where} takes more than {timeout_s:g} s to load; simplify the graph"
        raise SpecError(msg) from exc
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode < 0 or any(marker in stderr for marker in _OUT_OF_MEMORY):
        msg = (
            f"{where} needs more than {limit >> 20} MiB to load (ONNX Runtime folds its "
            "constants when it builds a session); export it without huge generated constants"
        )
        raise SpecError(msg)
