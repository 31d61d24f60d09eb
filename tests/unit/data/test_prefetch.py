"""Background reading and ordered parallel processing keep order, errors and bounds."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from mlaas4hep.data.prefetch import ordered_map, prefetch


def test_prefetch_keeps_order_and_reraises() -> None:
    assert list(prefetch(iter(range(50)), depth=2)) == list(range(50))

    def failing() -> Iterator[int]:
        yield 1
        raise OSError("disk gone")

    it = prefetch(failing())
    assert next(it) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(it)


def test_prefetch_stays_bounded_and_stops_when_closed() -> None:
    produced: list[int] = []
    closed = threading.Event()

    def source() -> Iterator[int]:
        try:
            for i in range(1000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    it = prefetch(source(), depth=1)
    assert next(it) == 0
    time.sleep(0.2)
    assert len(produced) <= 3  # one consumed, one queued, one waiting to be queued
    it.close()
    assert closed.wait(5)


@pytest.mark.parametrize("workers", [1, 3])
def test_ordered_map_keeps_order(workers: int) -> None:
    def slow_square(x: int) -> int:
        time.sleep(0.001 * (x % 3))
        return x * x

    assert list(ordered_map(slow_square, range(40), workers)) == [x * x for x in range(40)]

    def boom(x: int) -> int:
        if x == 5:
            raise ValueError("bad chunk 5")
        return x

    with pytest.raises(ValueError, match="bad chunk 5"):
        list(ordered_map(boom, range(10), workers))
