"""``mlaas4hep.eventhash`` (the event hash and the fold draw, moved out of
``preprocess/split.py`` so that the inference service computes the same folds) is bit for
bit the implementation training used: compared with a verbatim copy of the code as it was
in ``preprocess/split.py``, on random identifiers of every dtype a ROOT branch can have."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from mlaas4hep import eventhash
from mlaas4hep.errors import DataQualityError
from mlaas4hep.preprocess import split

# ---- the previous implementation (preprocess/split.py before the move), verbatim --------
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_FOLD_SALT = np.uint64(0xD1B54A32D192ED03)


def _old_splitmix64(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    z = x + _GOLDEN
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


def _old_as_uint64(column: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    if column.dtype.kind == "f":
        return column.astype(np.float64).view(np.uint64)
    return (
        column.astype(np.int64).view(np.uint64)
        if column.dtype.kind == "i"
        else (column.astype(np.uint64))
    )


def _old_event_hash(ids: Sequence[np.ndarray[Any, Any]], seed: int) -> np.ndarray[Any, Any]:
    h = np.full(len(ids[0]), np.uint64(seed), dtype=np.uint64)
    for column in ids:
        h ^= _old_splitmix64(_old_as_uint64(np.asarray(column)))
        h = _old_splitmix64(h)
    return h


def _old_assign_fold(ids: Sequence[np.ndarray[Any, Any]], *, folds: int, seed: int) -> Any:
    k = _old_splitmix64(_old_event_hash(ids, seed) ^ _FOLD_SALT) >> np.uint64(11)
    return ((k * np.uint64(folds)) >> np.uint64(53)).astype(np.int64)


# ------------------------------------------------------------------------------------------

N = 20_000


def _columns(rng: np.random.Generator) -> dict[str, np.ndarray[Any, Any]]:
    """Identifier columns of every dtype a branch can have, full ranges and edge values."""
    full = rng.integers(0, 2**63, N, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    floats = rng.normal(0, 1e6, N)
    floats[:4] = [0.0, -0.0, np.inf, np.nan]
    return {
        "uint64": full,
        "int64": rng.integers(-(2**63), 2**63 - 1, N, dtype=np.int64),
        "uint32": rng.integers(0, 2**32, N, dtype=np.uint64).astype(np.uint32),
        "int32": rng.integers(-(2**31), 2**31, N).astype(np.int32),
        "int16": rng.integers(-(2**15), 2**15, N).astype(np.int16),
        "uint8": rng.integers(0, 256, N).astype(np.uint8),
        "bool": rng.integers(0, 2, N).astype(np.bool_),
        "float64": floats,
        "float32": floats.astype(np.float32),
    }


@pytest.mark.parametrize("seed", [0, 42, 2**63 - 1])
def test_hash_and_folds_are_bit_for_bit_the_previous_ones(seed: int) -> None:
    columns = _columns(np.random.default_rng(seed % 1000))
    for name, column in columns.items():
        ids = [column, columns["uint32"], columns["uint64"]]
        old = _old_event_hash(ids, seed)
        np.testing.assert_array_equal(eventhash.event_hash(ids, seed), old, err_msg=name)
        np.testing.assert_array_equal(split.event_hash(ids, seed), old, err_msg=name)
        for k in (2, 3, 5, 20, 64):
            fold = eventhash.assign_fold(ids, folds=k, seed=seed)
            np.testing.assert_array_equal(fold, _old_assign_fold(ids, folds=k, seed=seed))
            np.testing.assert_array_equal(split.assign_fold(ids, folds=k, seed=seed), fold)
        ref = _old_splitmix64(columns["uint64"])
        np.testing.assert_array_equal(eventhash.splitmix64(columns["uint64"].copy()), ref)
        assert split.splitmix64 is eventhash.splitmix64


def test_the_value_rule_integer_width_does_not_matter_floats_hash_their_bits() -> None:
    rng = np.random.default_rng(7)
    run = rng.integers(1, 2**31, 1000).astype(np.uint32)
    event = rng.integers(0, 2**31, 1000).astype(np.uint64)
    ref = eventhash.assign_fold([run, event], folds=5, seed=3)
    # what a client sends in any integer datatype that holds the values: the same folds
    for a, b in ((np.int64, np.int64), (np.uint64, np.int32), (np.int32, np.uint32)):
        same = eventhash.assign_fold([run.astype(a), event.astype(b)], folds=5, seed=3)
        np.testing.assert_array_equal(same, ref)
    # floats: the bit pattern of the float64 value; float32 widened exactly hashes equal
    x = rng.normal(size=1000).astype(np.float32)
    np.testing.assert_array_equal(
        eventhash.event_hash([x], 1), eventhash.event_hash([x.astype(np.float64)], 1)
    )
    as_bits = x.astype(np.float64).view(np.uint64)
    np.testing.assert_array_equal(eventhash.event_hash([x], 1), eventhash.event_hash([as_bits], 1))
    assert (
        eventhash.event_hash([run.astype(np.float64)], 1) != eventhash.event_hash([run], 1)
    ).all()
    # a negative int is its two's complement: -1 hashes as 2**64 - 1
    minus = np.array([-1], np.int32)
    top = np.array([2**64 - 1], np.uint64)
    np.testing.assert_array_equal(eventhash.event_hash([minus], 0), eventhash.event_hash([top], 0))


def test_errors_and_empty_input() -> None:
    with pytest.raises(DataQualityError, match=r"set data\.identifiers"):
        eventhash.event_hash([], 0)
    with pytest.raises(DataQualityError, match="cannot be hashed"):
        eventhash.event_hash([np.array(["a"])], 0)
    assert eventhash.assign_fold([np.zeros(0, np.uint64)], folds=3, seed=0).shape == (0,)
