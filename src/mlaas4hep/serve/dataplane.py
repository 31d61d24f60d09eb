"""Every inference operation as plain Python: the routes only translate HTTP.

``DataPlane`` answers the V2 protocol (server/model metadata, readiness, inference,
repository index/load/unload) and the legacy TFaaS calls. It checks per-model permission
through the injected ``authorize(principal, action, model_name) -> bool`` (actions:
``infer``, ``read``, ``create``, ``modify``: the scopes) and then the model's owner
record (``serve/ownership.py``: owner, shared groups, admins), validates requests against
the model's metadata before they are queued, and records metrics and the per-version
statistics of the statistics extension (serve/stats.py). It never sees a
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
from mlaas4hep.serve.folds import (
    fold_identifiers,
    fold_metadata,
    raw_scorer,
    request_fold,
    with_fold,
)
from mlaas4hep.serve.manager import LoadedVersion, ModelManager
from mlaas4hep.serve.metrics import InferenceMetrics
from mlaas4hep.serve.model_config import model_config
from mlaas4hep.serve.ownership import ModelOwners
from mlaas4hep.serve.raw import PASS_OUTPUT, SCORES_OUTPUT, decode_columns, raw_outputs
from mlaas4hep.serve.registry import split_ref
from mlaas4hep.serve.repository import MODEL_NAME as _NAME
from mlaas4hep.serve.request_checks import check_inputs, is_raw, select_outputs

Authorize = Callable[[Principal, str, str], bool]
EXTENSIONS = (
    "binary_tensor_data",
    "model_repository",
    "model_configuration",
    "statistics",
    "metrics",
)
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
        name, version = split_ref(name, version)  # NAME@ALIAS, or an alias as the version
        self.check(principal, "read", name)
        loaded = self.manager.get(name, self.manager.resolve(name, version))
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
                "aliases": self.manager.aliases(name).of_version(loaded.version),
                **fold_metadata(meta.folds, fold_identifiers(meta)),
                **_raw_metadata(loaded),
            },
        }

    def model_config(self, principal: Principal, name: str, version: str | None) -> dict[str, Any]:
        """The model configuration extension: the version's config in Triton's JSON form."""
        name, version = split_ref(name, version)
        self.check(principal, "read", name)
        return model_config(self.manager.get(name, self.manager.resolve(name, version)))

    def model_statistics(
        self, principal: Principal, name: str | None, version: str | None
    ) -> dict[str, Any]:
        """The statistics extension: ``{"model_stats": [...]}`` per version in service.

        *name* None: every model the caller may read; a name without *version*: each of
        its versions in service. Read rights, like the metadata.
        """
        if name is None:
            chosen = [
                loaded
                for each in self.manager.names()
                if self.can(principal, "read", each)
                for loaded in self.manager.served(each)
            ]
        else:
            name, version = split_ref(name, version)
            self.check(principal, "read", name)
            number = self.manager.resolve(name, version)
            if number is None:
                chosen = self.manager.served(name)
            else:
                chosen = [self.manager.get(name, number)]
        return {"model_stats": [v.stats.to_json(v.name, v.version) for v in chosen]}

    def model_ready(self, principal: Principal, name: str, version: str | None) -> dict[str, Any]:
        """``{"name", "ready": true}``; NotFound when the model (version) is not in service."""
        name, version = split_ref(name, version)
        self.check(principal, "read", name)
        self.manager.get(name, self.manager.resolve(name, version))
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
        name, version = split_ref(name, version)
        self.check(principal, "infer", name)
        loaded = self.manager.get(name, self.manager.resolve(name, version))
        start = time.perf_counter()
        try:
            request = decode_request(body, header_length)
            selected, rows, computed, ran = await self._execute(loaded, request)
            result = encode_response(name, str(loaded.version), request.id, selected)
        except BaseException as exc:
            self._failed(loaded, "v2", exc, start)
            raise
        self._succeeded(loaded, "v2", rows, (start, computed, ran))
        return result

    async def infer_tensors(
        self,
        principal: Principal,
        name: str,
        version: str | None,
        request: InferRequest,
        *,
        protocol: str,
        started: float | None = None,
    ) -> tuple[str, list[tuple[str, Array, bool]]]:
        """Run an already decoded request (another framing: V2 gRPC); return the version
        that answered and the selected outputs ``(name, array, binary)``. *started*: when
        the caller began decoding (the statistics' input phase)."""
        name, version = split_ref(name, version)
        self.check(principal, "infer", name)
        loaded = self.manager.get(name, self.manager.resolve(name, version))
        start = time.perf_counter() if started is None else started
        try:
            selected, rows, computed, ran = await self._execute(loaded, request)
        except BaseException as exc:
            self._failed(loaded, protocol, exc, start)
            raise
        self._succeeded(loaded, protocol, rows, (start, computed, ran))
        return str(loaded.version), selected

    async def _execute(
        self, loaded: LoadedVersion, request: InferRequest
    ) -> tuple[list[tuple[str, Array, bool]], int, float, float]:
        """Score a decoded request: (selected outputs, rows, when inputs were checked,
        when the model had run)."""
        # a k-folded model's optional fold input, or the identifiers: serve/folds.py
        folds, branches = loaded.metadata.folds, [r.name for r in loaded.raw.inputs]
        request, fold = request_fold(loaded.name, loaded.metadata, request, branches)
        if is_raw(loaded, request):  # raw event columns (serve/raw.py): no batcher
            computed = time.perf_counter()
            outputs = await self._score_raw(loaded, request, fold)
            rows = len(outputs[SCORES_OUTPUT])
            defaults: tuple[str, ...] = RAW_OUTPUTS
        else:
            rows = check_inputs(loaded, request.inputs, request.datatypes)
            computed = time.perf_counter()
            feeds = with_fold(loaded.name, folds, request.inputs, fold, rows)
            outputs = await loaded.batcher.submit(feeds, rows)
            defaults = loaded.output_names
        ran = time.perf_counter()
        return select_outputs(loaded, request, outputs, defaults), rows, computed, ran

    async def _score_raw(
        self, loaded: LoadedVersion, request: InferRequest, fold: Array | None = None
    ) -> dict[str, Array]:
        """Decode raw columns, preprocess and score them in an inference thread (with
        the model of each event given by *fold*, for a k-folded model)."""
        raw = loaded.raw
        assert raw.preprocessor is not None  # is_raw checked it
        columns = decode_columns(loaded.name, raw.inputs, request.inputs, request.datatypes)
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        score = raw_scorer(loaded.name, raw.preprocessor, fold)
        try:
            scores, passed = await loop.run_in_executor(self.manager.executor, score, columns)
        except (DataQualityError, ExpressionError) as exc:
            msg = f"model {loaded.name!r}: the raw columns cannot be preprocessed: {exc}"
            raise InvalidInput(msg) from exc
        loaded.stats.executed(len(scores), [0.0], time.perf_counter() - start)
        return {SCORES_OUTPUT: scores, PASS_OUTPUT: passed}

    async def predict_rows(
        self, principal: Principal, name: str, rows: Array, version: str | None = None
    ) -> Array:
        """Run a float matrix through a single-input model; return its first output."""
        name, version = split_ref(name, version)
        self.check(principal, "infer", name)
        loaded = self.manager.get(name, self.manager.resolve(name, version))
        start = time.perf_counter()
        try:
            spec = loaded.metadata.inputs[0]
            if len(loaded.metadata.inputs) != 1:
                msg = f"model {name!r} has several inputs; use the V2 API to send each"
                raise InvalidInput(msg)
            array = rows.astype(spec.dtype, copy=False)
            count = check_inputs(loaded, {spec.name: array}, {spec.name: spec.datatype})
            computed = time.perf_counter()
            # a k-folded model: the mean of its models (as every request without a fold)
            feeds = with_fold(name, loaded.metadata.folds, {spec.name: array}, None, count)
            outputs = await loaded.batcher.submit(feeds, count)
        except BaseException as exc:
            self._failed(loaded, "tfaas", exc, start)
            raise
        self._succeeded(loaded, "tfaas", count, (start, computed, time.perf_counter()))
        return outputs[loaded.metadata.outputs[0].name]

    def _succeeded(
        self, loaded: LoadedVersion, protocol: str, rows: int, marks: tuple[float, float, float]
    ) -> None:
        """Record an answered request; *marks*: when it started, was decoded, had run."""
        start, computed, ran = marks
        end = time.perf_counter()
        self.metrics.request(loaded.name, str(loaded.version), protocol, "ok", end - start)
        loaded.stats.succeeded(rows, end - start, computed - start, end - ran)

    def _count(
        self,
        loaded: LoadedVersion,
        protocol: str,
        exc: BaseException | None,
        start: float,
        rows: int = 0,
    ) -> None:
        """Record a finished request without phase marks (metrics and statistics)."""
        if exc is None:
            self._succeeded(loaded, protocol, rows, (start, start, time.perf_counter()))
        else:
            self._failed(loaded, protocol, exc, start)

    def _failed(
        self, loaded: LoadedVersion, protocol: str, exc: BaseException, start: float
    ) -> None:
        if isinstance(exc, Overloaded):
            outcome = "overloaded"
        elif isinstance(exc, asyncio.CancelledError):  # the client went away first
            outcome = "cancelled"
        elif isinstance(exc, Mlaas4hepError):
            outcome = "client_error"
        else:
            outcome = "error"
        seconds = time.perf_counter() - start
        self.metrics.request(loaded.name, str(loaded.version), protocol, outcome, seconds)
        loaded.stats.failed(seconds)

    def bundle(self, principal: Principal, name: str, version: str | None) -> BundleArchive:
        """The bundle files of one published version, opened (iterate for the tar.gz).

        *version* ``None``/``latest``: the newest version in service; a number: that
        version as published (in service or not), an alias: its version. Read rights.
        """
        name, version = split_ref(name, version)
        self.check(principal, "read", name)
        if version is not None and not version.isdigit() and version != LATEST:
            version = str(self.manager.resolve(name, version))
        if version in (None, "", LATEST):
            try:
                number = self.manager.get(name).version
            except NotFound:
                # published but not loaded yet (the repository poll runs every few
                # seconds): the newest published version, as a just-deployed job says
                published = self.manager.repository.versions(name)
                if not published:
                    raise
                number = published[-1]
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
