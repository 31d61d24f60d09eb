"""Settings of the inference service (one frozen object, built once and passed down)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from mlaas4hep.errors import SpecError


@dataclass(frozen=True)
class BatchPolicy:
    """How requests for one model version are coalesced and bounded.

    ``max_batch_size`` caps the rows of one ONNX Runtime call (a larger single request
    still runs, alone). ``max_queue_delay_ms`` is how long a batch that is not full may
    wait for more requests; 0 (the default) never waits: requests that arrive while a
    batch runs form the next one, so an idle server adds no latency. Past
    ``max_queue_size`` waiting requests or ``max_queue_rows`` waiting rows, new requests
    are refused with ``Overloaded`` (HTTP 503 + ``Retry-After``).
    """

    max_batch_size: int = 1024
    max_queue_delay_ms: float = 0.0
    max_queue_size: int = 1024
    max_queue_rows: int = 1 << 20

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_queue_size", "max_queue_rows"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                msg = f"batching.{name} must be a positive integer, got {value!r}"
                raise SpecError(msg)
        if not 0 <= self.max_queue_delay_ms <= 10_000:
            msg = (
                f"batching.max_queue_delay_ms must be in [0, 10000], "
                f"got {self.max_queue_delay_ms!r}"
            )
            raise SpecError(msg)


def _default_threads(workers: int) -> int:
    # The cores are shared by the worker processes: each gets its share, at most 4.
    return max(1, min(4, (os.cpu_count() or 1) // workers))


@dataclass(frozen=True)
class InferenceSettings:
    """Everything the inference service needs to know.

    ``repository`` is the model repository root. ``poll_interval_s`` is how often it is
    re-scanned for new or removed versions (0 disables polling; uploads and the V2
    repository extension still load models). ``intra_op_threads`` is ONNX Runtime's
    per-session thread count (0: min(4, cores / workers), at least 1). ``workers`` is the
    number of processes ``serve --only inference`` runs (``serve/workers.py``): they share
    the HTTP and gRPC ports and the repository, each with its own sessions. Batches
    estimated to run within ``inline_budget_us`` run on the event loop (a thread hand-off
    would cost more; 0 always uses the thread pool). A successful authentication is
    reused for ``auth_cache_s`` seconds for the same Authorization header (0: validate
    every request).
    ``max_request_bytes`` caps an inference body, and the decompressed size of a
    gzip/deflate one. Answers of at least ``response_compression_min_bytes`` are
    compressed when the client's Accept-Encoding asks (smaller ones are not worth it).
    ``metrics_require_auth`` keeps
    ``/metrics`` behind the authenticator, because metric labels name private models.
    ``grpc_port`` starts V2 over gRPC on that port (``serve/grpc_v2.py``; None: off, 0: any
    free port) on ``grpc_host``; ``grpc_tls_cert``/``grpc_tls_key`` (PEM files) make it
    TLS — tokens must not cross a network in clear, so off loopback give them or
    terminate TLS in front (an ingress).
    """

    repository: Path
    poll_interval_s: float = 2.0
    default_latest_versions: int = 1
    batching: BatchPolicy = field(default_factory=BatchPolicy)
    intra_op_threads: int = 0
    max_request_bytes: int = 64 << 20
    response_compression_min_bytes: int = 1024
    max_upload_bytes: int = 512 << 20
    max_archive_members: int = 256
    max_archive_member_bytes: int = 512 << 20
    inline_budget_us: float = 200.0
    auth_cache_s: float = 10.0
    metrics_require_auth: bool = True
    server_name: str = "mlaas4hep"
    grpc_port: int | None = None
    grpc_host: str = "127.0.0.1"
    grpc_tls_cert: Path | None = None
    grpc_tls_key: Path | None = None
    workers: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.workers, int) or not 1 <= self.workers <= 256:
            msg = f"inference.workers must be an integer in [1, 256], got {self.workers!r}"
            raise SpecError(msg)
        if self.grpc_port is not None and not 0 <= self.grpc_port <= 65535:
            msg = (
                f"inference.grpc_port must be a TCP port (0-65535) or null, got {self.grpc_port!r}"
            )
            raise SpecError(msg)
        if (self.grpc_tls_cert is None) != (self.grpc_tls_key is None):
            msg = "inference.grpc_tls_cert and grpc_tls_key go together: give both PEM files"
            raise SpecError(msg)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], data_dir: Path) -> InferenceSettings:
        """Settings from a config section (e.g. ``inference:`` in the service YAML).

        ``repository`` defaults to ``<data_dir>/models``; ``batching`` is a mapping of
        ``BatchPolicy`` fields. Unknown keys are a SpecError listing the known ones.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            msg = f"inference: unknown settings {unknown}; known: {sorted(known)}"
            raise SpecError(msg)
        values = dict(raw)
        values["repository"] = Path(values.get("repository") or data_dir / "models")
        for key in ("grpc_tls_cert", "grpc_tls_key"):
            if values.get(key) is not None:
                values[key] = Path(values[key])
        batching = values.get("batching", {})
        if not isinstance(batching, BatchPolicy):
            try:
                values["batching"] = BatchPolicy(**batching)
            except TypeError as exc:
                msg = f"inference.batching: {exc}; fields: {[f.name for f in fields(BatchPolicy)]}"
                raise SpecError(msg) from exc
        return cls(**values)

    @property
    def threads(self) -> int:
        """The effective ONNX Runtime intra-op thread count."""
        if self.intra_op_threads > 0:
            return self.intra_op_threads
        return _default_threads(self.workers)
