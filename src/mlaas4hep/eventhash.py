"""The hash of an event's identifiers, and the fold it draws: one definition for every layer.

Which events are train, validation or test (``preprocess.split.assign_split``) and which
fold of a k-folded pipeline an event is in (``assign_fold``) depend only on the event's
identifier values (e.g. run, luminosityBlock, event) and the split's seed: never on the
chunking, the file order or the other events. Training, ``apply`` and the inference
service (which computes the fold from identifiers a client sends, serve/folds.py, and may
not import the preprocessing) all call this module, so they agree bit for bit.

The hash is splitmix64 (Steele, Lea, Flood 2014) mixing of each identifier in turn,
vectorised in numpy with wrapping uint64 arithmetic. An integer identifier is hashed by
its value (signed values sign-extended to 64 bits), a float one by the bit pattern of its
float64 value (equal floats hash equal), so an event's hash does not depend on the width
of the integer type that carries it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mlaas4hep.errors import DataQualityError

Array = np.ndarray[Any, Any]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
#: Mixed into the event hash before drawing the fold, so the fold is independent of the
#: split draw (which uses the unmixed hash).
FOLD_SALT = np.uint64(0xD1B54A32D192ED03)


def splitmix64(x: Array) -> Array:
    """The splitmix64 finaliser of a uint64 array (a bijection with good avalanche)."""
    z = x + _GOLDEN
    # in place: one temporary per step instead of three (this runs on every chunk)
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


def as_uint64(column: Array) -> Array:
    """An identifier column as the uint64 values that are hashed (see the module doc)."""
    if column.dtype.kind == "f":  # the bit pattern: equal floats hash equal
        return column.astype(np.float64).view(np.uint64)
    if column.dtype.kind not in "iub":
        raise DataQualityError(f"identifier column of dtype {column.dtype} cannot be hashed")
    return (
        column.astype(np.int64).view(np.uint64)
        if column.dtype.kind == "i"
        else (column.astype(np.uint64))
    )


def event_hash(identifiers: Sequence[Array], seed: int) -> Array:
    """A uint64 hash per event of the identifier columns (same length) and *seed*."""
    if not identifiers:
        raise DataQualityError("no identifier columns to hash: set data.identifiers")
    h = np.full(len(identifiers[0]), np.uint64(seed), dtype=np.uint64)
    for column in identifiers:
        h ^= splitmix64(as_uint64(np.asarray(column)))
        h = splitmix64(h)
    return h


def assign_fold(identifiers: Sequence[Array], *, folds: int, seed: int) -> Array:
    """Fold index per event (int64 in ``[0, folds)``) for k-folding (``train.folds``).

    From the same hash of the identifiers and *seed* as ``assign_split``, mixed once more
    with a fixed salt: the fold does not depend on the split fractions, and each fold holds
    the same expected fractions of train/validation/test codes. Fold = the top 53 bits of
    ``splitmix64(event_hash ^ salt)``, as ``u`` in ``[0, 1)``, times *folds*, rounded down.
    """
    n = len(identifiers[0]) if identifiers else 0
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    k = splitmix64(event_hash(identifiers, seed) ^ FOLD_SALT) >> np.uint64(11)
    # k < 2**53 and folds <= 64 (< 2**6): the product fits in uint64 exactly
    return ((k * np.uint64(folds)) >> np.uint64(53)).astype(np.int64)
