"""Dynamic batching: coalesce concurrent requests for one model version into one call.

One ``Batcher`` per loaded model version, living on the event loop. A request is queued
and, if no batch is running, a drain task starts at once, so an idle server adds no delay
(unless ``max_queue_delay_ms`` asks to wait for company). While a batch runs in the
executor, newcomers queue up and leave together as the next batch, up to
``max_batch_size`` rows. The queue is bounded: past ``max_queue_size`` requests or
``max_queue_rows`` rows, ``submit`` raises ``Overloaded`` at once instead of letting
latency grow without bound.

Batches of at most ``inline_rows`` rows run on the event loop itself: for small models a
thread hand-off costs more than the inference (see ``OnnxModel.inline_rows``).

Requests are checked before they are queued (shapes, dtypes), so one bad request never
fails a batch it shares with others.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlaas4hep.serve.errors import Overloaded
from mlaas4hep.serve.settings import BatchPolicy

Tensors = dict[str, np.ndarray[Any, Any]]
RunFn = Callable[[Mapping[str, np.ndarray[Any, Any]]], Tensors]
# Called once per batch with (rows in the batch, seconds each request waited in the queue).
BatchObserver = Callable[[int, list[float]], None]
# Called once per batch with (rows, queue waits, seconds the model ran): the statistics.
ExecutionObserver = Callable[[int, list[float], float], None]


@dataclass
class _Pending:
    inputs: Mapping[str, np.ndarray[Any, Any]]
    rows: int
    future: asyncio.Future[Tensors]
    enqueued: float = field(default_factory=time.perf_counter)


class Batcher:
    """Queue and coalesce requests for one model version (``submit`` from the event loop).

    With an executor and no queue delay, batches chain in the inference thread: when one
    finishes, the thread takes the next from the queue at once (under a lock) and hands
    the results back to the loop, so the model never waits for the loop to come round to
    a drain task between batches. Otherwise (no executor, or ``max_queue_delay_ms`` to
    wait for company) a drain task on the loop takes the batches.
    """

    def __init__(
        self,
        run: RunFn,
        policy: BatchPolicy,
        executor: Executor | None,
        observe: BatchObserver | None = None,
        name: str = "model",
        inline_rows: int = 0,
        executed: ExecutionObserver | None = None,
    ) -> None:
        self._run = run
        self._policy = policy
        self._executor = executor
        self._observe = observe
        self._executed = executed
        self._name = name
        self._inline_rows = inline_rows
        # The queue and its counters are shared with the inference thread: under _lock.
        self._lock = threading.Lock()
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._draining = False
        self._task: asyncio.Task[None] | None = None  # kept so it is not garbage-collected

    @property
    def queued(self) -> int:
        """Requests waiting (not counting the batch being run)."""
        return len(self._queue)

    @property
    def busy(self) -> bool:
        """True while a batch runs or requests wait."""
        return self._draining

    async def submit(self, inputs: Mapping[str, np.ndarray[Any, Any]], rows: int) -> Tensors:
        """Queue one checked request of *rows* rows; return its outputs (rows sliced back).

        Raises Overloaded when the queue is full, or whatever the model run raised.
        """
        policy = self._policy
        if not self._draining and rows <= self._inline_rows and policy.max_queue_delay_ms <= 0:
            return self._run_now(inputs, rows)
        loop = asyncio.get_running_loop()
        pending = _Pending(inputs, rows, loop.create_future())
        with self._lock:
            if len(self._queue) >= policy.max_queue_size or (
                self._queue and self._queued_rows + rows > policy.max_queue_rows
            ):
                msg = (
                    f"model {self._name!r} is overloaded ({len(self._queue)} requests, "
                    f"{self._queued_rows} rows queued); retry later"
                )
                raise Overloaded(msg, retry_after=1.0)
            self._queue.append(pending)
            self._queued_rows += rows
            start, self._draining = not self._draining, True
        if start:
            if self._executor is None or policy.max_queue_delay_ms > 0:
                self._task = loop.create_task(self._drain())
            else:
                self._chain(loop)
        return await pending.future

    def _run_now(self, inputs: Mapping[str, np.ndarray[Any, Any]], rows: int) -> Tensors:
        # Idle and cheap: run on the loop right away, no task, no future, no queue.
        start = time.perf_counter()
        outputs = self._run(inputs)
        if self._observe is not None:
            self._observe(rows, [0.0])
        if self._executed is not None:
            self._executed(rows, [0.0], time.perf_counter() - start)
        return outputs

    # ---- batches chained in the inference thread --------------------------------------

    def _chain(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run the next batch in the executor (from the loop or the inference thread)."""
        assert self._executor is not None
        try:
            self._executor.submit(self._work, loop)
        except RuntimeError as exc:  # shut down: whoever still waits is told why
            with self._lock:
                batch, self._draining = list(self._queue), False
                self._queue.clear()
                self._queued_rows = 0
            self._post(loop, batch, None, exc, 0.0, 0.0)

    def _work(self, loop: asyncio.AbstractEventLoop) -> None:
        # In the inference thread: one batch, its results to the loop, then the next.
        with self._lock:
            if not self._queue:
                self._draining = False
                return
            batch = self._take()
        start = time.perf_counter()
        outputs, error = None, None
        try:
            outputs = self._run(_merge([p.inputs for p in batch]))
        except Exception as exc:  # delivered to every waiting request, not swallowed
            error = exc
        self._post(loop, batch, outputs, error, start, time.perf_counter() - start)
        self._chain(loop)

    def _post(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[_Pending],
        outputs: Tensors | None,
        error: Exception | None,
        start: float,
        ran: float,
    ) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(self._finish, batch, outputs, error, start, ran)

    # ---- batches drained by a task on the loop ------------------------------------------

    async def _drain(self) -> None:
        try:
            while self._queue:
                await self._maybe_wait()
                with self._lock:
                    batch = self._take()
                await self._run_batch(batch)
        finally:
            self._draining = False

    async def _maybe_wait(self) -> None:
        delay = self._policy.max_queue_delay_ms / 1000.0
        if delay <= 0 or self._queued_rows >= self._policy.max_batch_size:
            return
        deadline = self._queue[0].enqueued + delay
        while self._queued_rows < self._policy.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            await asyncio.sleep(min(remaining, 0.0005))

    async def _run_batch(self, batch: list[_Pending]) -> None:
        start = time.perf_counter()
        merged = _merge([p.inputs for p in batch])
        outputs, error = None, None
        try:
            if self._executor is None or sum(p.rows for p in batch) <= self._inline_rows:
                outputs = self._run(merged)
            else:
                loop = asyncio.get_running_loop()
                outputs = await loop.run_in_executor(self._executor, self._run, merged)
        except Exception as exc:  # delivered to every waiting request, not swallowed
            error = exc
        self._finish(batch, outputs, error, start, time.perf_counter() - start)

    # ---- shared -------------------------------------------------------------------------

    def _take(self) -> list[_Pending]:
        # Under _lock.
        batch = [self._queue.popleft()]
        rows = batch[0].rows
        while self._queue and rows + self._queue[0].rows <= self._policy.max_batch_size:
            item = self._queue.popleft()
            batch.append(item)
            rows += item.rows
        self._queued_rows -= rows
        return batch

    def _finish(
        self,
        batch: list[_Pending],
        outputs: Tensors | None,
        error: Exception | None,
        start: float,
        ran: float,
    ) -> None:
        """On the loop: record the batch and answer each of its requests."""
        if outputs is None:
            failure = error or RuntimeError("the inference threads were shut down")
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(failure)
            return
        if self._observe is not None or self._executed is not None:
            rows, waits = sum(p.rows for p in batch), [start - p.enqueued for p in batch]
            if self._observe is not None:
                self._observe(rows, waits)
            if self._executed is not None:
                self._executed(rows, waits, ran)
        _deliver(batch, outputs)


def _merge(requests: list[Mapping[str, np.ndarray[Any, Any]]]) -> Mapping[str, Any]:
    if len(requests) == 1:
        return requests[0]
    return {name: np.concatenate([r[name] for r in requests]) for name in requests[0]}


def _deliver(batch: list[_Pending], outputs: Tensors) -> None:
    if len(batch) == 1:
        if not batch[0].future.done():
            batch[0].future.set_result(outputs)
        return
    offset = 0
    for p in batch:
        end = offset + p.rows
        if not p.future.done():  # a cancelled client no longer waits
            p.future.set_result({k: v[offset:end] for k, v in outputs.items()})
        offset = end
