"""The Open Inference Protocol V2 over gRPC (``inference.GRPCInferenceService``).

What CMS SONIC and ``tritonclient.grpc`` speak. The messages and the service stub are the
protocol's own generated code as ``tritonclient`` ships it (``service_pb2``), so the wire
format is the one clients decode. Every call goes through the same :class:`DataPlane`
as HTTP: the same models, ownership checks, batcher, backpressure and metrics (protocol
label ``grpc``). The bearer token travels in the ``authorization`` metadata and is
validated by the same authenticator (and its cache); the health calls need none, like the
HTTP probes.

Errors map through the one status table (:mod:`mlaas4hep.http_status`): 401
UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 NOT_FOUND, 400/422 INVALID_ARGUMENT, 413 and a
full queue RESOURCE_EXHAUSTED (with ``retry-after`` in the trailing metadata), other 503
UNAVAILABLE; anything unexpected is INTERNAL with a generic message (the log has it).

Tensors arrive as ``raw_input_contents`` (little-endian bytes, what tritonclient sends) or
typed ``contents``; outputs are always returned as ``raw_output_contents``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from mlaas4hep.auth.principal import Principal
from mlaas4hep.errors import InvalidInput, Mlaas4hepError, NotFound, Overloaded, Unavailable
from mlaas4hep.http_status import http_status
from mlaas4hep.serve.codec import Array, InferRequest, RequestedOutput, decode_tensor
from mlaas4hep.serve.dataplane import DataPlane
from mlaas4hep.serve.metadata import NUMPY_TO_V2
from mlaas4hep.serve.settings import InferenceSettings

log = logging.getLogger(__name__)
Authenticate = Callable[[str | None, str | None], Principal]

_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ALREADY_EXISTS,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}
#: ``InferTensorContents`` field per V2 datatype (FP16 travels only as raw bytes).
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def grpc_code(exc: BaseException) -> tuple[grpc.StatusCode, tuple[tuple[str, str], ...]]:
    """The status code and trailing metadata answering *exc* (see the module doc)."""
    if not isinstance(exc, Exception):
        return grpc.StatusCode.INTERNAL, ()
    answer = http_status(exc)
    code = _CODES.get(answer.status, grpc.StatusCode.INTERNAL)
    trailers: tuple[tuple[str, str], ...] = ()
    if isinstance(exc, Unavailable):
        trailers = (("retry-after", answer.headers["Retry-After"]),)
        if isinstance(exc, Overloaded):
            code = grpc.StatusCode.RESOURCE_EXHAUSTED
    return code, trailers


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """The V2 gRPC calls over one :class:`DataPlane`."""

    def __init__(self, plane: DataPlane, authenticate: Authenticate) -> None:
        self._plane = plane
        self._authenticate = authenticate

    # ---- plumbing ------------------------------------------------------------------------

    async def _principal(self, context: grpc.aio.ServicerContext) -> Principal:
        header = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                header = value if isinstance(value, str) else value.decode("latin-1")
                break
        peer = _peer_host(context.peer())
        cached = getattr(self._authenticate, "cached", None)
        if cached is not None:
            hit = cached(header, peer)
            if hit is not None:
                return hit  # type: ignore[no-any-return]
        # A miss may verify a signature or wait for the issuer's keys: not on the loop.
        return await asyncio.to_thread(self._authenticate, header, peer)

    async def _abort(self, context: grpc.aio.ServicerContext, exc: BaseException) -> None:
        code, trailers = grpc_code(exc)
        if code is grpc.StatusCode.INTERNAL:
            log.exception("unexpected error in a gRPC inference call", exc_info=exc)
            message = "internal error; the service log has the details"
        else:
            message = str(exc)
        if trailers:
            context.set_trailing_metadata(trailers)
        await context.abort(code, message)

    # ---- health and metadata -------------------------------------------------------------

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=self._plane.live())

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self._plane.ready())

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        try:
            await self._principal(context)
        except Exception as exc:
            await self._abort(context, exc)
        meta = self._plane.server_metadata()
        return pb.ServerMetadataResponse(
            name=meta["name"], version=meta["version"], extensions=meta["extensions"]
        )

    async def ModelReady(self, request: Any, context: Any) -> Any:
        try:
            user = await self._principal(context)
            self._plane.model_ready(user, request.name, request.version or None)
        except NotFound:
            return pb.ModelReadyResponse(ready=False)  # not in service: not ready
        except Exception as exc:
            await self._abort(context, exc)
        return pb.ModelReadyResponse(ready=True)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        try:
            user = await self._principal(context)
            meta = self._plane.model_metadata(user, request.name, request.version or None)
        except Exception as exc:
            await self._abort(context, exc)
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[_tensor_metadata(t) for t in meta["inputs"]],
            outputs=[_tensor_metadata(t) for t in meta["outputs"]],
        )

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        try:
            user = await self._principal(context)
            config = self._plane.model_config(user, request.name, request.version or None)
            message = pb.ModelConfigResponse()
            json_format.ParseDict({"config": config}, message, ignore_unknown_fields=True)
        except Exception as exc:
            await self._abort(context, exc)
        return message

    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        try:
            user = await self._principal(context)
            stats = self._plane.model_statistics(
                user, request.name or None, request.version or None
            )
            message = pb.ModelStatisticsResponse()
            json_format.ParseDict(stats, message, ignore_unknown_fields=True)
        except Exception as exc:
            await self._abort(context, exc)
        return message

    # ---- inference -----------------------------------------------------------------------

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        try:
            user = await self._principal(context)
            return await self._infer(user, request)
        except Exception as exc:
            await self._abort(context, exc)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        """Each request answered in order on the stream; a failing one gets its
        ``error_message`` and the stream goes on (Triton's decoupled-free behaviour)."""
        try:
            user = await self._principal(context)
        except Exception as exc:
            await self._abort(context, exc)
            return
        async for request in request_iterator:
            try:
                response = await self._infer(user, request)
            except Mlaas4hepError as exc:
                yield pb.ModelStreamInferResponse(error_message=str(exc))
                continue
            yield pb.ModelStreamInferResponse(infer_response=response)

    async def _infer(self, user: Principal, request: Any) -> Any:
        decoded = _decode(request)
        version, outputs = await self._plane.infer_tensors(
            user, request.model_name, request.model_version or None, decoded, protocol="grpc"
        )
        response = pb.ModelInferResponse(
            model_name=request.model_name, model_version=version, id=request.id
        )
        for name, array, _binary in outputs:
            flat = np.ascontiguousarray(array)
            response.outputs.add(name=name, datatype=NUMPY_TO_V2[flat.dtype], shape=flat.shape)
            response.raw_output_contents.append(
                flat.astype(flat.dtype.newbyteorder("<"), copy=False).tobytes()
            )
        return response

    # ---- repository extension ------------------------------------------------------------

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        try:
            user = await self._principal(context)
            index = await self._plane.repository_index(user)
        except Exception as exc:
            await self._abort(context, exc)
        models = [m for m in index if not request.ready or m["state"] == "READY"]
        return pb.RepositoryIndexResponse(
            models=[pb.RepositoryIndexResponse.ModelIndex(**m) for m in models]
        )

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        try:
            await self._plane.load(await self._principal(context), request.model_name)
        except Exception as exc:
            await self._abort(context, exc)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        try:
            await self._plane.unload(await self._principal(context), request.model_name)
        except Exception as exc:
            await self._abort(context, exc)
        return pb.RepositoryModelUnloadResponse()


def _decode(request: Any) -> InferRequest:
    """A ``ModelInferRequest`` as the data plane's request (the HTTP decoder's checks)."""
    if not request.inputs:
        msg = "the request needs at least one input tensor"
        raise InvalidInput(msg)
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        msg = (
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; send every "
            "input as raw bytes, or all as typed contents"
        )
        raise InvalidInput(msg)
    inputs: dict[str, Array] = {}
    datatypes: dict[str, str] = {}
    for i, tensor in enumerate(request.inputs):
        if tensor.name in inputs:
            msg = f"input {tensor.name!r} appears twice in the request"
            raise InvalidInput(msg)
        values = None
        if not raw:
            field = _CONTENTS.get(tensor.datatype)
            if field is None:
                msg = f"input {tensor.name!r}: {tensor.datatype} tensors must be sent as raw bytes"
                raise InvalidInput(msg)
            values = list(getattr(tensor.contents, field))
        inputs[tensor.name] = decode_tensor(
            tensor.name, tensor.datatype, list(tensor.shape), raw=raw[i] if raw else None,
            values=values,
        )  # fmt: skip
        datatypes[tensor.name] = tensor.datatype
    wanted = tuple(RequestedOutput(o.name, True) for o in request.outputs) or None
    return InferRequest(
        id=request.id or None,
        inputs=inputs,
        datatypes=datatypes,
        outputs=wanted,
        binary_output=True,
    )


def _tensor_metadata(tensor: dict[str, Any]) -> Any:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"]
    )


def _peer_host(peer: str) -> str | None:
    """``ipv4:127.0.0.1:5000`` / ``ipv6:[::1]:5000`` -> the host, as HTTP's peer."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    return None


class GrpcServer:
    """A ``grpc.aio`` server on its own port, started and stopped with the service."""

    def __init__(
        self, plane: DataPlane, authenticate: Authenticate, settings: InferenceSettings
    ) -> None:
        limit = settings.max_request_bytes
        options = [
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", max(limit, 64 << 20)),
            # Worker processes share the port (the kernel spreads connections); a lone
            # server keeps it exclusive: a second one on the port is an error, not a split.
            ("grpc.so_reuseport", int(settings.workers > 1)),
        ]
        self._server = grpc.aio.server(options=options)
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(plane, authenticate), self._server
        )
        address = f"{settings.grpc_host}:{settings.grpc_port}"
        try:
            if settings.grpc_tls_cert is not None and settings.grpc_tls_key is not None:
                pair = (settings.grpc_tls_key.read_bytes(), settings.grpc_tls_cert.read_bytes())
                credentials = grpc.ssl_server_credentials([pair])
                self.port = self._server.add_secure_port(address, credentials)
            else:
                self.port = self._server.add_insecure_port(address)
        except (OSError, RuntimeError) as exc:
            msg = f"cannot listen for gRPC on {address}: {exc}; is the port taken?"
            raise Unavailable(msg) from exc
        if self.port == 0:
            msg = f"cannot listen for gRPC on {address}; is the port taken?"
            raise Unavailable(msg)

    async def start(self) -> None:
        await self._server.start()
        log.info("V2 gRPC listening on port %d", self.port)

    async def stop(self, grace: float = 2.0) -> None:
        await self._server.stop(grace)
