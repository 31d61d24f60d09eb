"""The feature stream as the training loop consumes it.

``BatchSource`` is what the loop needs from preprocessing (``Preprocessor`` satisfies it).
``EpochBatches`` is one epoch of train batches: re-iterable (XGBoost reads it several
times), positioned (a resumed epoch skips the chunks already trained on), shuffled by the
source with a seed fixed by ``(seed, epoch)`` (the ``Preprocessor`` mixes the datasets and
shuffles within a buffer), checked for NaN/inf, and read one or two chunks ahead in a
background thread so reading ROOT overlaps training.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

import numpy as np

from mlaas4hep.errors import DataQualityError

if TYPE_CHECKING:
    from mlaas4hep.preprocess.pipeline import FeatureBatch

Split = Literal["train", "validation", "test"]
T = TypeVar("T")
_DONE = object()


class BatchSource(Protocol):
    """Anything that yields ``FeatureBatch`` chunks of one split (a ``Preprocessor``)."""

    def batches(
        self, split: Split | None = None, *, shuffle: bool = False, seed: int = 0
    ) -> Iterator[FeatureBatch]: ...


def check_finite(batch: FeatureBatch, names: tuple[str, ...], where: str) -> None:
    """Raise ``DataQualityError`` naming every feature (and count) with NaN/inf values."""
    bad = ~np.isfinite(batch.X)
    if bad.any() or not np.isfinite(batch.y).all() or not np.isfinite(batch.w).all():
        counts = bad.sum(axis=0)
        per_feature = [f"{names[i]!r}: {int(c)}" for i, c in enumerate(counts) if c]
        extra = []
        if not np.isfinite(batch.y).all():
            extra.append(f"label: {int((~np.isfinite(batch.y)).sum())}")
        if not np.isfinite(batch.w).all():
            extra.append(f"weight: {int((~np.isfinite(batch.w)).sum())}")
        msg = (
            f"NaN/inf values in the {where} data ({', '.join(per_feature + extra)} events in "
            "one chunk); fix the inputs, add a cut, or set preprocess.nonfinite: drop"
        )
        raise DataQualityError(msg)


@dataclass(frozen=True)
class EpochBatches:
    """One epoch of train chunks, starting after the first ``skip`` chunks."""

    source: BatchSource
    names: tuple[str, ...]
    epoch: int
    seed: int
    skip: int = 0
    shuffle: bool = True
    prefetch: int = 2

    def __iter__(self) -> Iterator[FeatureBatch]:
        return prefetched(self._chunks(), self.prefetch)

    def _chunks(self) -> Iterator[FeatureBatch]:
        seed = self.seed + 1_000_003 * self.epoch
        it = self.source.batches("train", shuffle=self.shuffle, seed=seed)
        for index, batch in enumerate(it):
            if index < self.skip or len(batch.y) == 0:
                continue
            check_finite(batch, self.names, "train")
            yield batch


def prefetched(items: Iterable[T], depth: int) -> Iterator[T]:
    """Iterate ``items`` in a background thread, up to ``depth`` items ahead.

    Exceptions raised while producing reach the consumer; when the consumer stops early
    (an error, an interrupt) the producer thread stops at its next item.
    """
    if depth <= 0:
        yield from items
        return
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _put(q, item, stop):
                    return
            _put(q, _DONE, stop)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            _put(q, exc, stop)

    thread = threading.Thread(target=produce, name="mlaas4hep-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join(timeout=10)


def _put(q: queue.Queue[object], item: object, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
        except queue.Full:
            continue
        return True
    return False
