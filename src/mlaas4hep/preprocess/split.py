"""Deterministic train/validation/test split by a hash of the event identifiers.

An event's split depends only on its identifier values (e.g. run, luminosityBlock,
event) and the seed: never on the chunking, the file order or the other events. The hash
and the fold draw of k-folding live in ``mlaas4hep.eventhash`` (the lowest layer, so the
inference service computes the same folds); they are re-exported here under their names.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mlaas4hep.eventhash import assign_fold, event_hash, splitmix64

__all__ = [
    "SPLIT_CODES",
    "TEST",
    "TRAIN",
    "VALIDATION",
    "assign_fold",
    "assign_split",
    "event_hash",
    "splitmix64",
]

TRAIN, VALIDATION, TEST = 0, 1, 2
SPLIT_CODES = {"train": TRAIN, "validation": VALIDATION, "test": TEST}


def assign_split(
    identifiers: Sequence[np.ndarray[Any, Any]], *, validation: float, test: float, seed: int
) -> np.ndarray[Any, Any]:
    """Split code per event (uint8: 0 train, 1 validation, 2 test) from its identifiers.

    The fractions are expectations: each event independently lands in test with
    probability *test*, in validation with *validation*, else in train.
    """
    n = len(identifiers[0]) if identifiers else 0
    if n == 0 or (validation == 0 and test == 0):
        return np.zeros(n, dtype=np.uint8)
    # top 53 bits k -> uniform u = k * 2**-53 in [0, 1); u >= x  <=>  k >= ceil(x * 2**53)
    # exactly, so compare the integers (no float conversion of every event)
    k = event_hash(identifiers, seed) >> np.uint64(11)
    out = np.zeros(n, dtype=np.uint8)
    out[k >= _threshold(1.0 - test - validation)] = VALIDATION
    out[k >= _threshold(1.0 - test)] = TEST
    return out


def _threshold(x: float) -> np.uint64:
    return np.uint64(math.ceil(max(x, 0.0) * 2.0**53))
