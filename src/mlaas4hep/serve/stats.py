"""Per-version inference statistics (the V2 statistics extension), kept where work happens.

One ``VersionStats`` per loaded model version, updated by the data plane (one call per
request) and by the batcher's observer (one call per execution), both on the event
loop: plain attribute additions, no lock, no allocation. They count since the version
was loaded, in this process (each uvicorn worker keeps its own).

Mapping to the protocol's fields:

- ``success`` / ``fail``: requests that did / did not get an answer, with the time from
  the request reaching the data plane to its response body being ready;
- ``queue``: time from enqueueing to the start of the request's batch (0 for batches run
  at once);
- ``compute_input``: decoding and checking the request's tensors (JSON or binary);
- ``compute_infer``: the model execution of the request's batch (each request of a batch
  is charged the batch's time, as Triton does); raw-column requests include their
  preprocessing;
- ``compute_output``: slicing and encoding the response;
- ``inference_count``: rows of successful requests; ``execution_count``: model runs;
- ``batch_stats``: executions and compute time per batch size (the first
  ``MAX_BATCH_SIZES`` distinct sizes; totals above stay exact past that).
"""

from __future__ import annotations

import time
from typing import Any

#: Distinct batch sizes tracked in ``batch_stats`` (a client choosing sizes must not be
#: able to grow the table without bound).
MAX_BATCH_SIZES = 512
_NS = 1e9


class VersionStats:
    """Cumulative counters of one model version (event loop only)."""

    __slots__ = (
        "_batches",
        "compute_infer_s",
        "compute_input_s",
        "compute_output_s",
        "execution_count",
        "fail_count",
        "fail_s",
        "inference_count",
        "last_inference",
        "queue_s",
        "run_count",
        "success_count",
        "success_s",
    )

    def __init__(self) -> None:
        self.success_count = self.fail_count = self.run_count = 0
        self.success_s = self.fail_s = self.queue_s = 0.0
        self.compute_input_s = self.compute_output_s = self.compute_infer_s = 0.0
        self.inference_count = self.execution_count = 0
        self.last_inference = 0.0  # seconds since the epoch
        self._batches: dict[int, list[float]] = {}  # size -> [executions, seconds]

    def succeeded(self, rows: int, total_s: float, input_s: float, output_s: float) -> None:
        """One answered request of *rows* rows and its phases (seconds)."""
        self.success_count += 1
        self.success_s += total_s
        self.compute_input_s += input_s
        self.compute_output_s += output_s
        self.inference_count += rows
        self.last_inference = time.time()

    def failed(self, total_s: float) -> None:
        """One request that reached the model but got an error."""
        self.fail_count += 1
        self.fail_s += total_s
        self.last_inference = time.time()

    def executed(self, rows: int, waits: list[float], run_s: float) -> None:
        """One model execution of *rows* rows for requests that queued *waits* seconds."""
        n = len(waits)
        self.execution_count += 1
        self.run_count += n  # queue and compute_infer are counted per request run
        self.queue_s += sum(waits)
        self.compute_infer_s += run_s * n
        entry = self._batches.get(rows)
        if entry is not None:
            entry[0] += 1
            entry[1] += run_s
        elif len(self._batches) < MAX_BATCH_SIZES:
            self._batches[rows] = [1.0, run_s]

    def to_json(self, name: str, version: int) -> dict[str, Any]:
        """The protocol's ``$model_stat`` object for this version."""
        done = self.success_count
        return {
            "name": name,
            "version": str(version),
            "last_inference": int(self.last_inference * 1000),
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": _duration(done, self.success_s),
                "fail": _duration(self.fail_count, self.fail_s),
                "queue": _duration(self.run_count, self.queue_s),
                "compute_input": _duration(done, self.compute_input_s),
                "compute_infer": _duration(self.run_count, self.compute_infer_s),
                "compute_output": _duration(done, self.compute_output_s),
                "cache_hit": _duration(0, 0.0),
                "cache_miss": _duration(0, 0.0),
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": _duration(int(count), 0.0),
                    "compute_infer": _duration(int(count), seconds),
                    "compute_output": _duration(int(count), 0.0),
                }
                for size, (count, seconds) in sorted(self._batches.items())
            ],
        }


def _duration(count: int, seconds: float) -> dict[str, int]:
    return {"count": count, "ns": int(seconds * _NS)}
