"""The legacy TFaaS routes: ``POST /json``, ``GET /models``, ``POST /upload``, ``DELETE /delete``.

The TFaaS protobuf endpoint (``/proto``) is not provided: use the V2 binary extension.
Every route depends on the authenticated principal. ``/upload`` takes an optional
``share`` field (``/cms/higgs:read,/cms/top:modify``): the model's group sharing, set by
its owner (serve/ownership.py).
"""

from __future__ import annotations

import tempfile
from typing import IO, Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.datastructures import UploadFile
from starlette.types import Message

from mlaas4hep.auth.principal import Principal
from mlaas4hep.errors import PayloadTooLarge, SpecError
from mlaas4hep.serve import legacy, openapi
from mlaas4hep.serve.dataplane import DataPlane
from mlaas4hep.serve.deploy import Deployer
from mlaas4hep.serve.http import (
    ErrorRoute,
    PrincipalDependency,
    encoded,
    json_response,
    read_body,
)

_SPOOL = 8 << 20


def add_tfaas_routes(
    router: APIRouter,
    plane: DataPlane,
    deployer: Deployer,
    principal: PrincipalDependency,
    limits: tuple[int, int],
    compress_min: int = 1024,
) -> None:
    """Add the TFaaS-compatible routes to *router*; *limits*: (max body, max upload).

    ``/json`` bodies may be gzip/deflate compressed (the cap applies to their decompressed
    size); answers of at least *compress_min* bytes are compressed on Accept-Encoding.
    """
    max_body, max_upload = limits
    # The one auth dependency (a variable, not an Annotated alias: with postponed
    # annotations FastAPI resolves names in module globals, not in this closure).
    caller = Depends(principal)

    async def predict(request: Request, user: Principal = caller) -> Response:
        body = await read_body(request, max_body)
        headers: dict[str, str] = {}
        content = await legacy.predict_json(plane, user, body)
        content = await encoded(request, content, headers, compress_min)
        return Response(content, media_type="application/json", headers=headers)

    async def models(user: Principal = caller) -> Response:
        return json_response(legacy.models(plane, user))

    async def upload(request: Request, user: Principal = caller) -> Response:
        _check_length(request, max_upload)
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            # "async with" closes the spooled upload files when done. The cap applies while
            # the body is read: a chunked body has no Content-Length to check up front.
            capped = _capped(request, max_upload)
            async with capped.form(max_files=4, max_fields=8, max_part_size=1 << 20) as form:
                name = _field(form.get("name")) or request.query_params.get("name")
                share = _field(form.get("share")) or request.query_params.get("share")
                model, metadata = _file(form.get("model")), _file(form.get("metadata"))
                if model is None:
                    msg = "the form has no 'model' file; send the ONNX file as field 'model'"
                    raise SpecError(msg)
                name, version = await deployer.upload_files(
                    user, name or "", model, metadata, share
                )
        else:  # a tarball, gzip-compressed or not (Content-Encoding: gzip is the TFaaS way)
            with tempfile.SpooledTemporaryFile(_SPOOL) as spool:
                await _spool_body(request, spool, max_upload)
                query = request.query_params
                name, version = await deployer.upload_tarball(
                    user, query.get("name"), spool, query.get("share")
                )
        return json_response({"name": name, "version": str(version)}, 201)

    async def delete(request: Request, user: Principal = caller) -> Response:
        name = request.query_params.get("model")
        if name is None:
            async with request.form(max_files=0, max_fields=4) as form:
                name = _field(form.get("model"))
        if not name:
            msg = "name the model to delete: form field or query parameter 'model'"
            raise SpecError(msg)
        await deployer.delete(user, name)
        return json_response({"deleted": name})

    for method, path, endpoint, doc in (
        ("POST", "/json", predict, openapi.TFAAS_PREDICT),
        ("GET", "/models", models, openapi.TFAAS_MODELS),
        ("POST", "/upload", upload, openapi.TFAAS_UPLOAD),
        ("DELETE", "/delete", delete, openapi.TFAAS_DELETE),
    ):
        router.add_api_route(
            path,
            endpoint,
            methods=[method],
            route_class_override=ErrorRoute,
            tags=["tfaas"],
            response_class=Response,
            **doc,
        )


def _check_length(request: Request, limit: int) -> None:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        msg = f"the upload has {length} bytes, over the limit of {limit}"
        raise PayloadTooLarge(msg)


def _capped(request: Request, limit: int) -> Request:
    """The same request, whose body raises PayloadTooLarge once past *limit* bytes."""
    seen = 0

    async def receive() -> Message:
        nonlocal seen
        message = await request.receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            msg = f"the upload has more than {limit} bytes; that is over the limit"
            raise PayloadTooLarge(msg)
        return message

    return Request(request.scope, receive)


async def _spool_body(request: Request, out: IO[bytes], limit: int) -> None:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            msg = f"the upload has more than {limit} bytes; that is over the limit"
            raise PayloadTooLarge(msg)
        out.write(chunk)
    out.seek(0)


def _field(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _file(value: Any) -> IO[bytes] | None:
    return value.file if isinstance(value, UploadFile) else None
