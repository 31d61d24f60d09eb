"""Buffer shuffling of feature batches: bounded memory, seeded order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from mlaas4hep.preprocess.info import FeatureBatch


def shuffled(
    batches: Iterator[FeatureBatch], size: int, rng: np.random.Generator
) -> Iterator[FeatureBatch]:
    """Buffer shuffle: fill to *size* events, shuffle, emit half, keep half to mix on."""
    buf: list[FeatureBatch] = []
    held = 0
    for b in batches:
        buf.append(b)
        held += len(b)
        if held >= size:
            merged = permuted(buf, rng)
            half = len(merged) // 2
            yield take(merged, slice(0, half))
            buf, held = [take(merged, slice(half, None))], len(merged) - half
    if held:
        yield permuted(buf, rng)


def permuted(parts: list[FeatureBatch], rng: np.random.Generator) -> FeatureBatch:
    """The batches concatenated, in a random order."""
    order = rng.permutation(sum(len(p) for p in parts))
    merged = FeatureBatch(
        np.concatenate([p.X for p in parts]),
        np.concatenate([p.y for p in parts]),
        np.concatenate([p.w for p in parts]),
        np.concatenate([p.split for p in parts]),
    )
    return take(merged, order)


def take(b: FeatureBatch, idx: Any) -> FeatureBatch:
    """The rows *idx* (slice or index array) of a batch."""
    return FeatureBatch(b.X[idx], b.y[idx], b.w[idx], b.split[idx])
