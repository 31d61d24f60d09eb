"""Every inference operation as plain Python: the routes only translate HTTP.

``DataPlane`` answers the V2 protocol (server/model metadata, readiness, inference,
repository index/load/unload) and the legacy TFaaS calls. It checks per-model permission
through the injected ``authorize(principal, action, model_name) -> bool`` (actions:
``infer``, ``read``, ``create``, ``modify``: the scopes) and then the model's owner
record (``serve/ownership.py``: owner, shared groups, admins), validates requests against
the model's metadata before they are queued, and records metrics. It never sees a
Request object. A model whose bundle carries its preprocessing also takes raw event
columns on ``infer`` (``serve/raw.py``); those requests bypass the batcher.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from mlaas4hep import __version__
from mlaas4hep.auth.policy import INFERENCE_SCOPE, model_scope
from mlaas4hep.auth.principal import Principal
from mlaas4hep.errors import (
    DataQualityError,
    ExpressionError,
    Mlaas4hepError,
    NotFound,
    PermissionDenied,
)
from mlaas4hep.serve.bundle_export import BundleArchive, open_bundle
from mlaas4hep.serve.codec import Array, InferRequest, decode_request, encode_response
from mlaas4hep.serve.errors import InvalidInput, Overloaded
from mlaas4hep.serve.manager import LoadedVersion, ModelManager
from mlaas4hep.serve.metadata import TensorSpec
from mlaas4hep.serve.metrics import InferenceMetrics
from mlaas4hep.serve.ownership import ModelOwners
from mlaas4hep.serve.raw import PASS_OUTPUT, SCORES_OUTPUT, decode_columns, raw_outputs
from mlaas4hep.serve.repository import MODEL_NAME as _NAME

Authorize = Callable[[Principal, str, str], bool]
EXTENSIONS = ("binary_tensor_data", "model_repository", "metrics")
RAW_OUTPUTS = (SCORES_OUTPUT, PASS_OUTPUT)
LATEST = "latest"  # the version segment naming the newest version in service


def allow_all(principal: Principal, action: str, model_name: str) -> bool:
    """The default policy: every authenticated caller may do everything."""
    return True


def parse_version(version: str | None) -> int | None:
    """A V2 version path segment as an int (None = latest); NotFound if not a number."""
    if version is None or version == "":
        return None
    if not version.isdigit() or int(version) < 1:
        msg = f"model version {version!r} is not a positive integer"
        raise NotFound(msg)
    return int(version)


class DataPlane:
    """The inference service's operations (V2 + repository extension)."""

    def __init__(
        self,
        manager: ModelManager,
        metrics: InferenceMetrics,
        authorize: Authorize = allow_all,
        server_name: str = "mlaas4hep",
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        self._authorize = authorize
        self._server_name = server_name
        self.owners = ModelOwners(manager.repository.root)

    # ---- server -------------------------------------------------------------------------

    def server_metadata(self) -> dict[str, Any]:
        return {"name": self._server_name, "version": __version__, "extensions": list(EXTENSIONS)}

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Ready once the first repository scan has finished."""
        return self.manager.ready

    # ---- models -------------------------------------------------------------------------

    def can(self, principal: Principal, action: str, name: str) -> bool:
        """Whether *principal* may do *action* (infer, read, create, modify) on *name*."""
        if not self._authorize(principal, action, name):
            return False
        record = self.owners.record(name) if _NAME.fullmatch(name) else None
        return record is None or record.allows(principal, action)

    def check(self, principal: Principal, action: str, name: str) -> None:
        """Raise PermissionDenied unless *principal* may do *action* on model *name*.

        Scopes first, then ownership; both before the model is looked up, so the answer
        is a 403 whether or not the model is loaded (model names are one namespace
        shared by all users, like S3 bucket names: their existence is not a secret).
        """
        if not self._authorize(principal, action, name):
            who = principal.name or principal.subject
            msg = (
                f"{who!r} may not {action} model {name!r}: missing scope {_needed(action, name)}"
                "; ask its owner to share it"
            )
            raise PermissionDenied(msg)
        if _NAME.fullmatch(name):
            self.owners.check(principal, action, name)

    def model_metadata(
        self, principal: Principal, name: str, version: str | None
    ) -> dict[str, Any]:
        """V2 model metadata of the requested (default: latest) version."""
        self.check(principal, "read", name)
        loaded = self.manager.get(name, parse_version(version))
        meta = loaded.metadata
        return {
            "name": name,
            "versions": [str(v) for v in self.manager.served_versions(name)],
            "platform": "onnxruntime_onnx",
            "inputs": [t.to_json() for t in meta.inputs],
            "outputs": [t.to_json() for t in meta.outputs],
            "parameters": {
                "feature_names": list(meta.feature_names),
                "labels": list(meta.labels),
                "spec_hash": meta.spec_hash,
                "metrics": dict(meta.metrics),
                "created": meta.created,
                **_raw_metadata(loaded),
            },
        }

    def model_ready(self, principal: Principal, name: str, version: str | None) -> dict[str, Any]:
        """``{"name", "ready": true}``; NotFound when the model (version) is not in service."""
        self.check(principal, "read", name)
        self.manager.get(name, parse_version(version))
        return {"name": name, "ready": True}

    async def infer(
        self,
        principal: Principal,
        name: str,
        version: str | None,
        body: bytes,
        header_length: int | None,
    ) -> tuple[bytes, int | None]:
        """Run a V2 inference request; return (response body, JSON header length or None)."""
        self.check(principal, "infer", name)
        loaded = self.manager.get(name, parse_version(version))
        start = time.perf_counter()
        try:
            request = decode_request(body, header_length)
            if _is_raw(loaded, request):  # raw event columns (serve/raw.py): no batcher
                outputs = await self._score_raw(loaded, request)
                defaults: tuple[str, ...] = RAW_OUTPUTS
            else:
                rows = check_inputs(loaded, request.inputs, request.datatypes)
                outputs = await loaded.batcher.submit(request.inputs, rows)
                defaults = tuple(t.name for t in loaded.metadata.outputs)
            result = encode_response(
                name,
                str(loaded.version),
                request.id,
                _select_outputs(loaded, request, outputs, defaults),
            )
        except BaseException as exc:
            self._count(loaded, "v2", exc, start)
            raise
        self._count(loaded, "v2", None, start)
        return result

    async def _score_raw(self, loaded: LoadedVersion, request: InferRequest) -> dict[str, Array]:
        """Decode raw columns, preprocess and score them in an inference thread."""
        raw = loaded.raw
        assert raw.preprocessor is not None  # _is_raw checked it
        columns = decode_columns(loaded.name, raw.inputs, request.inputs, request.datatypes)
        loop = asyncio.get_running_loop()
        try:
            scores, passed = await loop.run_in_executor(
                self.manager.executor, raw.preprocessor.score, columns
            )
        except (DataQualityError, ExpressionError) as exc:
            msg = f"model {loaded.name!r}: the raw columns cannot be preprocessed: {exc}"
            raise InvalidInput(msg) from exc
        return {SCORES_OUTPUT: scores, PASS_OUTPUT: passed}

    async def predict_rows(self, principal: Principal, name: str, rows: Array) -> Array:
        """Run a float matrix through a single-input model; return its first output."""
        self.check(principal, "infer", name)
        loaded = self.manager.get(name)
        start = time.perf_counter()
        try:
            spec = loaded.metadata.inputs[0]
            if len(loaded.metadata.inputs) != 1:
                msg = f"model {name!r} has several inputs; use the V2 API to send each"
                raise InvalidInput(msg)
            array = rows.astype(spec.dtype, copy=False)
            count = check_inputs(loaded, {spec.name: array}, {spec.name: spec.datatype})
            outputs = await loaded.batcher.submit({spec.name: array}, count)
        except BaseException as exc:
            self._count(loaded, "tfaas", exc, start)
            raise
        self._count(loaded, "tfaas", None, start)
        return outputs[loaded.metadata.outputs[0].name]

    def _count(
        self, loaded: LoadedVersion, protocol: str, exc: BaseException | None, t: float
    ) -> None:
        if exc is None:
            outcome = "ok"
        elif isinstance(exc, Overloaded):
            outcome = "overloaded"
        elif isinstance(exc, Mlaas4hepError):
            outcome = "client_error"
        else:
            outcome = "error"
        seconds = time.perf_counter() - t
        self.metrics.request(loaded.name, str(loaded.version), protocol, outcome, seconds)

    def bundle(self, principal: Principal, name: str, version: str | None) -> BundleArchive:
        """The bundle files of one published version, opened (iterate for the tar.gz).

        *version* ``None``/``latest``: the newest version in service; a number: that
        version as published (in service or not). Read rights, like the metadata.
        """
        self.check(principal, "read", name)
        if version in (None, "", LATEST):
            number = self.manager.get(name).version
        else:
            number = parse_version(version) or 0
            self.manager.repository.version_dir(name, number)  # NotFound listing versions
        return open_bundle(self.manager.repository.root, name, number)

    # ---- repository extension -----------------------------------------------------------

    async def repository_index(self, principal: Principal) -> list[dict[str, Any]]:
        """Every model version the caller may read, with its state."""
        return [
            {"name": e.name, "version": str(e.version), "state": e.state, "reason": e.reason}
            for e in await self.manager.index()
            if self.can(principal, "read", e.name)
        ]

    async def load(self, principal: Principal, name: str) -> None:
        self.check(principal, "modify", name)
        await self.manager.load(name)

    async def unload(self, principal: Principal, name: str) -> None:
        self.check(principal, "modify", name)
        await self.manager.unload(name)


def _raw_metadata(loaded: LoadedVersion) -> dict[str, Any]:
    """``raw_inputs``/``raw_outputs`` of a model that takes raw event columns (else none)."""
    if loaded.raw.preprocessor is None:
        return {}
    scores = next(t for t in loaded.metadata.outputs if t.name == SCORES_OUTPUT)
    return {"raw_inputs": loaded.raw.tensors(), "raw_outputs": raw_outputs(scores.shape[-1])}


def _needed(action: str, name: str) -> str:
    """The scope(s) the documented policy asks for (docs/security.md), for messages."""
    if action == "infer":
        return f"{model_scope('read', name)!r} or {INFERENCE_SCOPE!r}"
    return repr(model_scope(action, name))


def check_inputs(loaded: LoadedVersion, inputs: dict[str, Array], datatypes: dict[str, str]) -> int:
    """Check tensors against the model's inputs; return the common batch size (rows)."""
    specs = {t.name: t for t in loaded.metadata.inputs}
    if inputs.keys() != specs.keys():
        msg = (
            f"model {loaded.name!r} takes inputs {sorted(specs)}, the request sent {sorted(inputs)}"
        )
        raise InvalidInput(msg)
    rows = {_check_tensor(specs[n], a, datatypes[n]) for n, a in inputs.items()}
    if len(rows) != 1:
        msg = f"inputs of model {loaded.name!r} must share their first (batch) axis; got {rows}"
        raise InvalidInput(msg)
    return rows.pop()


def _check_tensor(spec: TensorSpec, array: Array, datatype: str) -> int:
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


def _is_raw(loaded: LoadedVersion, request: InferRequest) -> bool:
    """A request for the raw columns: the model takes them and the feature tensors are
    not what was sent (the feature-tensor path is then exactly as for any model)."""
    features = {t.name for t in loaded.metadata.inputs}
    if request.inputs.keys() == features:
        return False
    if loaded.raw.reason:  # it carries preprocessing that cannot be served: say why
        msg = (
            f"model {loaded.name!r} takes inputs {sorted(features)}; it cannot take raw "
            f"event columns: {loaded.raw.reason}"
        )
        raise InvalidInput(msg)
    return loaded.raw.preprocessor is not None


def _select_outputs(
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
