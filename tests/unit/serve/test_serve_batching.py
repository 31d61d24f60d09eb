"""Dynamic batching: coalescing, no added latency when idle, bounded queues, errors."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from mlaas4hep.serve.batching import Batcher
from mlaas4hep.serve.errors import Overloaded
from mlaas4hep.serve.settings import BatchPolicy


class SlowDouble:
    """A fake model: doubles its input, records batch sizes, waits for a gate if given."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[int] = []
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.gate.wait(5)
        time.sleep(self.delay)
        x = inputs["x"]
        self.batches.append(len(x))
        return {"y": x * 2}


def _rows(n: int, start: float = 0) -> dict[str, np.ndarray]:
    return {"x": np.arange(start, start + n, dtype=np.float32).reshape(n, 1)}


@pytest.fixture
def executor() -> Any:
    with ThreadPoolExecutor(1) as pool:
        yield pool


async def _gather(batcher: Batcher, sizes: list[int]) -> list[dict[str, np.ndarray]]:
    """Submit the first request, let its batch start, then all the others at once."""
    first = asyncio.ensure_future(batcher.submit(_rows(sizes[0]), sizes[0]))
    await asyncio.sleep(0.005)
    rest = [batcher.submit(_rows(n, 100 * i), n) for i, n in enumerate(sizes) if i]
    return [await first, *await asyncio.gather(*rest)]


def test_concurrent_requests_are_coalesced_and_sliced_back(executor: ThreadPoolExecutor) -> None:
    model = SlowDouble(delay=0.02)
    batcher = Batcher(model, BatchPolicy(max_batch_size=10), executor)
    sizes = [1, 2, 3, 4, 5, 1]
    results = asyncio.run(_gather(batcher, sizes))
    for i, (n, out) in enumerate(zip(sizes, results, strict=True)):
        np.testing.assert_array_equal(out["y"], _rows(n, 100 * i)["x"] * 2)
    # The first request runs alone (the server was idle); the rest wait and coalesce,
    # never above max_batch_size.
    assert model.batches[0] == 1
    assert len(model.batches) < len(sizes)
    assert max(model.batches) <= 10
    assert sum(model.batches) == sum(sizes)


def test_a_request_larger_than_max_batch_runs_alone(executor: ThreadPoolExecutor) -> None:
    model = SlowDouble()
    batcher = Batcher(model, BatchPolicy(max_batch_size=4), executor)
    (out,) = asyncio.run(_gather(batcher, [9]))
    assert out["y"].shape == (9, 1)
    assert model.batches == [9]


def test_queue_delay_waits_for_company(executor: ThreadPoolExecutor) -> None:
    model = SlowDouble()
    batcher = Batcher(model, BatchPolicy(max_batch_size=8, max_queue_delay_ms=300), executor)

    async def staggered() -> None:
        first = asyncio.ensure_future(batcher.submit(_rows(1), 1))
        await asyncio.sleep(0.01)
        await asyncio.gather(first, batcher.submit(_rows(1), 1))

    asyncio.run(staggered())
    assert model.batches == [2]


def test_idle_inline_path_adds_no_task(executor: ThreadPoolExecutor) -> None:
    model = SlowDouble()
    batcher = Batcher(model, BatchPolicy(), executor, inline_rows=4)

    async def one() -> None:
        await batcher.submit(_rows(2), 2)
        assert not batcher.busy

    asyncio.run(one())
    assert model.batches == [2]


def test_full_queue_answers_overloaded_at_once(executor: ThreadPoolExecutor) -> None:
    model = SlowDouble()
    model.gate.clear()  # the first batch blocks until we let it go
    seen: list[tuple[int, int]] = []
    batcher = Batcher(
        model,
        BatchPolicy(max_batch_size=1, max_queue_size=2),
        executor,
        observe=lambda rows, waits: seen.append((rows, len(waits))),
        name="m/1",
    )

    async def flood() -> list[Any]:
        tasks = [asyncio.ensure_future(batcher.submit(_rows(1), 1))]
        await asyncio.sleep(0.02)  # the first batch is now running (blocked on the gate)
        tasks += [asyncio.ensure_future(batcher.submit(_rows(1), 1)) for _ in range(4)]
        await asyncio.sleep(0.02)
        model.gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(flood())
    refused = [r for r in results if isinstance(r, Overloaded)]
    assert len(refused) == 2  # 1 running + 2 queued are accepted
    assert "model 'm/1' is overloaded" in str(refused[0])
    assert refused[0].retry_after > 0
    assert sum(rows for rows, _ in seen) == 3


def test_row_bound_of_the_queue(executor: ThreadPoolExecutor) -> None:
    model = SlowDouble()
    model.gate.clear()
    batcher = Batcher(model, BatchPolicy(max_batch_size=1, max_queue_rows=5), executor)

    async def flood() -> list[Any]:
        tasks = [asyncio.ensure_future(batcher.submit(_rows(1), 1))]
        await asyncio.sleep(0.02)
        tasks += [asyncio.ensure_future(batcher.submit(_rows(n), n)) for n in (4, 1, 2)]
        await asyncio.sleep(0.02)
        model.gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(flood())
    assert [isinstance(r, Overloaded) for r in results] == [False, False, False, True]


def test_a_failing_batch_fails_each_of_its_requests(executor: ThreadPoolExecutor) -> None:
    def broken(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise RuntimeError("boom")

    batcher = Batcher(broken, BatchPolicy(), executor)
    results = asyncio.run(_gather_errors(batcher))
    assert all(isinstance(r, RuntimeError) for r in results)


async def _gather_errors(batcher: Batcher) -> list[Any]:
    return await asyncio.gather(
        *(batcher.submit(_rows(1), 1) for _ in range(3)), return_exceptions=True
    )
