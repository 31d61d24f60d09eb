"""Deterministic train/validation/test split by a hash of the event identifiers.

An event's split depends only on its identifier values (e.g. run, luminosityBlock,
event) and the seed: never on the chunking, the file order or the other events. The hash
is splitmix64 (Steele, Lea, Flood 2014) mixing of each identifier in turn, vectorised in
numpy with wrapping uint64 arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mlaas4hep.errors import DataQualityError

TRAIN, VALIDATION, TEST = 0, 1, 2
SPLIT_CODES = {"train": TRAIN, "validation": VALIDATION, "test": TEST}

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The splitmix64 finaliser of a uint64 array (a bijection with good avalanche)."""
    z = x + _GOLDEN
    # in place: one temporary per step instead of three (this runs on every chunk)
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


def _as_uint64(column: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    if column.dtype.kind == "f":  # the bit pattern: equal floats hash equal
        return column.astype(np.float64).view(np.uint64)
    if column.dtype.kind not in "iub":
        raise DataQualityError(f"identifier column of dtype {column.dtype} cannot be hashed")
    return (
        column.astype(np.int64).view(np.uint64)
        if column.dtype.kind == "i"
        else (column.astype(np.uint64))
    )


def event_hash(identifiers: Sequence[np.ndarray[Any, Any]], seed: int) -> np.ndarray[Any, Any]:
    """A uint64 hash per event of the identifier columns (same length) and *seed*."""
    if not identifiers:
        raise DataQualityError("no identifier columns to hash: set data.identifiers")
    h = np.full(len(identifiers[0]), np.uint64(seed), dtype=np.uint64)
    for column in identifiers:
        h ^= splitmix64(_as_uint64(np.asarray(column)))
        h = splitmix64(h)
    return h


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


#: Mixed into the event hash before drawing the fold, so the fold is independent of the
#: split draw (which uses the unmixed hash).
_FOLD_SALT = np.uint64(0xD1B54A32D192ED03)


def assign_fold(
    identifiers: Sequence[np.ndarray[Any, Any]], *, folds: int, seed: int
) -> np.ndarray[Any, Any]:
    """Fold index per event (int64 in ``[0, folds)``) for k-folding (``train.folds``).

    From the same hash of the identifiers and *seed* as ``assign_split``, mixed once more
    with a fixed salt: the fold does not depend on the split fractions, and each fold holds
    the same expected fractions of train/validation/test codes. Fold = the top 53 bits of
    ``splitmix64(event_hash ^ salt)``, as ``u`` in ``[0, 1)``, times *folds*, rounded down.
    """
    n = len(identifiers[0]) if identifiers else 0
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    k = splitmix64(event_hash(identifiers, seed) ^ _FOLD_SALT) >> np.uint64(11)
    # k < 2**53 and folds <= 20 (< 2**5): the product fits in uint64 exactly
    return ((k * np.uint64(folds)) >> np.uint64(53)).astype(np.int64)
