"""Refuse ONNX models that reference files: every tensor must live inside the model.

ONNX lets a tensor keep its bytes in another file (``data_location: EXTERNAL`` with
``external_data`` entries naming a ``location`` relative to the model). A model that
someone else wrote (an upload, a job's result) could name any file the server can read
(the issuer's key beside a symbolic link, say) and have its bytes come back through an
ordinary inference request. Served models are therefore self-contained: the check walks
every tensor (initializers, sparse initializers, node attributes, subgraphs of control-flow
nodes, local functions and training-info graphs) and refuses the model at upload, at
publish and at load. Sessions are created from the checked bytes, never from a path, so
ONNX Runtime has no directory to resolve a file name against either.
"""

from __future__ import annotations

from collections.abc import Iterator

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
    """Every tensor of the model with a word on where it sits (iterative: no recursion)."""
    graphs: list[tuple[str, onnx.GraphProto]] = [("the main graph", model.graph)]
    for info in model.training_info:
        graphs.append(("a training-info graph", info.initialization))
        graphs.append(("a training-info graph", info.algorithm))
    nodes: list[tuple[str, onnx.NodeProto]] = [
        (f"function {f.name!r}", n) for f in model.functions for n in f.node
    ]
    while graphs or nodes:
        while graphs:
            where, graph = graphs.pop()
            where = f"graph {graph.name!r}" if graph.name else where
            for tensor in graph.initializer:
                yield where, tensor
            for sparse in graph.sparse_initializer:
                yield where, sparse.values
                yield where, sparse.indices
            nodes.extend((where, n) for n in graph.node)
        while nodes:
            where, node = nodes.pop()
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield f"node {node.name!r}", attr.t
                for tensor in attr.tensors:
                    yield f"node {node.name!r}", tensor
                sparse_list = [attr.sparse_tensor] if attr.HasField("sparse_tensor") else []
                for sparse in [*sparse_list, *attr.sparse_tensors]:
                    yield f"node {node.name!r}", sparse.values
                    yield f"node {node.name!r}", sparse.indices
                if attr.HasField("g"):
                    graphs.append((f"node {node.name!r}", attr.g))
                graphs.extend((f"node {node.name!r}", g) for g in attr.graphs)
