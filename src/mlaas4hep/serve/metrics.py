"""Prometheus metrics of the inference service, in a registry owned by one app.

Names (all prefixed ``mlaas4hep_inference_``): ``requests_total{model,version,protocol,
outcome}``, ``request_seconds{model,protocol}``, ``queue_seconds{model}``,
``batch_rows{model}``, and ``models_loaded`` / ``model_version_loaded{model,version}``.

Under several worker processes (``serve/workers.py``) prometheus_client's multiprocess
mode is on (``PROMETHEUS_MULTIPROC_DIR``): ``render`` sums the counters and histograms of
every worker, and the gauges carry a ``pid`` label per live worker.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)


class InferenceMetrics:
    """The service's metrics; every method is cheap enough for the request path."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        prefix = "mlaas4hep_inference_"
        self._requests = Counter(
            prefix + "requests",
            "Inference requests by model, version, protocol and outcome.",
            ["model", "version", "protocol", "outcome"],
            registry=self.registry,
        )
        self._latency = Histogram(
            prefix + "request_seconds",
            "Time from request parsed to response ready, by model and protocol.",
            ["model", "protocol"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._queue = Histogram(
            prefix + "queue_seconds",
            "Time a request waited for its batch to start.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._batch = Histogram(
            prefix + "batch_rows",
            "Rows per ONNX Runtime call.",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self._loaded = Gauge(
            prefix + "model_version_loaded",
            "1 while a model version is loaded and serving.",
            ["model", "version"],
            registry=self.registry,
            multiprocess_mode="liveall",  # per worker; a dead worker's values are dropped
        )
        self._models = Gauge(
            prefix + "models_loaded",
            "Model versions loaded.",
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self._children: dict[tuple[str, str, str, str], tuple[Counter, Histogram]] = {}
        self._batch_children: dict[str, tuple[Histogram, Histogram]] = {}

    def request(
        self, model: str, version: str, protocol: str, outcome: str, seconds: float
    ) -> None:
        """Count one finished request (``outcome``: ok, client_error, overloaded,
        cancelled — the client went away —, error)."""
        key = (model, version, protocol, outcome)
        children = self._children.get(key)
        if children is None:  # labels() costs a lock and a dict walk: resolve once
            children = (self._requests.labels(*key), self._latency.labels(model, protocol))
            self._children[key] = children
        children[0].inc()
        if outcome == "ok":
            children[1].observe(seconds)

    def batch(self, model: str, rows: int, queue_seconds: list[float]) -> None:
        """Record one batch: its size and how long each of its requests queued."""
        children = self._batch_children.get(model)
        if children is None:
            children = (self._batch.labels(model), self._queue.labels(model))
            self._batch_children[model] = children
        children[0].observe(rows)
        queue = children[1]
        for seconds in queue_seconds:
            queue.observe(seconds)

    def loaded(self, model: str, version: int, is_loaded: bool) -> None:
        """Track a model version going in or out of service."""
        if is_loaded:
            self._loaded.labels(model, str(version)).set(1)
            self._models.inc()
        else:
            self._loaded.remove(model, str(version))
            self._models.dec()

    def render(self) -> bytes:
        """The exposition text for ``/metrics`` (every worker's, under several)."""
        path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not path:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=path)  # type: ignore[no-untyped-call]
        return generate_latest(merged)
