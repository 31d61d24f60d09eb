"""Batches chain in the inference thread: the model never waits for a busy event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from mlaas4hep.serve.batching import Batcher
from mlaas4hep.serve.settings import BatchPolicy


class Recorder:
    """A fake model: doubles its input and records each batch's size and thread."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.batches: list[int] = []
        self.threads: set[str] = set()

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        time.sleep(self.delay)
        self.batches.append(len(inputs["x"]))
        self.threads.add(threading.current_thread().name)
        return {"y": inputs["x"] * 2}


def _rows(n: int, start: float) -> dict[str, np.ndarray]:
    return {"x": np.arange(start, start + n, dtype=np.float32).reshape(n, 1)}


def test_queued_batches_run_while_the_loop_is_busy() -> None:
    model = Recorder(delay=0.02)
    with ThreadPoolExecutor(1, thread_name_prefix="inference") as pool:
        batcher = Batcher(model, BatchPolicy(max_batch_size=2), pool)

        async def scenario() -> list[dict[str, np.ndarray]]:
            tasks = [asyncio.ensure_future(batcher.submit(_rows(1, 10 * i), 1)) for i in range(6)]
            await asyncio.sleep(0)  # every request is queued now
            time.sleep(0.5)  # the loop is busy: the thread goes on from batch to batch
            assert sum(model.batches) == 6
            assert batcher.queued == 0
            return await asyncio.gather(*tasks)

        results = asyncio.run(scenario())
    for i, out in enumerate(results):
        np.testing.assert_array_equal(out["y"], _rows(1, 10 * i)["x"] * 2)
    assert max(model.batches) <= 2
    assert model.threads == {"inference_0"}
    assert not batcher.busy


def test_results_and_statistics_are_recorded_on_the_loop() -> None:
    seen: list[tuple[int, str]] = []
    with ThreadPoolExecutor(1) as pool:
        batcher = Batcher(
            Recorder(delay=0.01),
            BatchPolicy(max_batch_size=4),
            pool,
            executed=lambda rows, waits, ran: seen.append((rows, threading.current_thread().name)),
        )

        async def scenario() -> None:
            await asyncio.gather(*(batcher.submit(_rows(2, i), 2) for i in range(5)))

        asyncio.run(scenario())
    assert sum(rows for rows, _ in seen) == 10
    assert {name for _, name in seen} == {threading.main_thread().name}


def test_a_shut_down_executor_fails_the_waiting_requests() -> None:
    pool = ThreadPoolExecutor(1)
    pool.shutdown()
    batcher = Batcher(Recorder(), BatchPolicy(), pool)
    with pytest.raises(RuntimeError, match="shutdown"):
        asyncio.run(batcher.submit(_rows(3, 0), 3))
    assert not batcher.busy


def test_a_failing_chained_batch_fails_only_its_requests() -> None:
    calls = 0

    def flaky(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        nonlocal calls
        calls += 1
        time.sleep(0.01)
        if calls == 2:
            raise ValueError("bad batch")
        return {"y": inputs["x"]}

    with ThreadPoolExecutor(1) as pool:
        batcher = Batcher(flaky, BatchPolicy(max_batch_size=1), pool)

        async def scenario() -> list[object]:
            return await asyncio.gather(
                *(batcher.submit(_rows(1, i), 1) for i in range(3)), return_exceptions=True
            )

        results = asyncio.run(scenario())
    assert [type(r).__name__ for r in results] == ["dict", "ValueError", "dict"]
