"""Overlap work on a stream: a producer thread ahead of the consumer, ordered thread maps.

``prefetch`` reads the next chunk in a background thread while the current one is
processed: reading (decompression, mostly outside the GIL) and preprocessing (numpy,
largely outside the GIL too) then overlap, so a pass costs about the larger of the two
instead of their sum. ``ordered_map`` runs a function on several items at once and keeps
their order: the preprocessor processes chunks with it, and the remote reader fetches the
next chunks while one is decompressed. Memory stays bounded: at most ``depth`` items wait
in the queue, plus the one being produced and ``workers`` in flight.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_POLL_S = 0.05


class _End:
    """Marks the end of the stream (or carries the producer's exception)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def prefetch(source: Iterable[T], depth: int = 1) -> Iterator[T]:
    """Iterate *source* in a daemon thread, *depth* items ahead; same items, same order.

    An exception raised by *source* is re-raised here, in the consumer. Closing the
    returned generator early stops the thread and closes *source*.
    """
    q: queue.Queue[T | _End] = queue.Queue(maxsize=max(depth, 1))
    stop = threading.Event()

    def produce() -> None:
        it = iter(source)
        try:
            for item in it:
                if not _put(q, item, stop):
                    return
            _put(q, _End(), stop)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            _put(q, _End(exc), stop)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="mlaas4hep-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=10)


def _put(q: queue.Queue[T | _End], item: T | _End, stop: threading.Event) -> bool:
    """Put *item*, giving up (False) when the consumer has gone away."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def ordered_map(
    fn: Callable[[T], R], source: Iterable[T], workers: int, name: str = "mlaas4hep-cpu"
) -> Generator[R, None, None]:
    """``map(fn, source)`` on *workers* threads, results in order, bounded look-ahead.

    At most ``workers`` items are processed at once and results are yielded in input
    order; with ``workers <= 1`` this is the plain ``map``. Exceptions surface at the item
    that raised them; closing the generator early cancels what has not started. *name*
    prefixes the threads' names (for profilers and stack dumps).
    """
    if workers <= 1:
        yield from map(fn, source)
        return
    pending: deque[Future[R]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) as pool:
        try:
            for item in source:
                pending.append(pool.submit(fn, item))
                if len(pending) >= workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
