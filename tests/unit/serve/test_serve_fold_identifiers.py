"""A k-folded model's fold computed by the service from the event identifiers a request
carries (serve/folds.py ``request_fold``): the same folds as training's hash, and a 400
for every request that cannot say them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mlaas4hep.errors import SpecError
from mlaas4hep.eventhash import assign_fold
from mlaas4hep.serve.codec import InferRequest
from mlaas4hep.serve.errors import InvalidInput
from mlaas4hep.serve.folds import fold_identifiers, fold_metadata, request_fold
from mlaas4hep.serve.metadata import ModelMetadata, TensorSpec

IDS = ("run", "luminosityBlock", "event")
SEED, K, N = 1234, 3, 50
TYPES = {np.float32: "FP32", np.float64: "FP64", np.int64: "INT64", np.uint64: "UINT64"}
TYPES |= {np.uint32: "UINT32", np.int32: "INT32"}


def _meta(folds: int | None = K, ids: tuple[str, ...] = IDS, seed: int | None = SEED) -> Any:
    return ModelMetadata(
        inputs=(TensorSpec("features", "FP32", (-1, 2)),),
        outputs=(TensorSpec("scores", "FP32", (-1, 1)),),
        folds=folds,
        fold_identifiers=ids if folds else (),
        fold_seed=seed if folds else None,
    )


def _request(**inputs: np.ndarray) -> InferRequest:
    types = {k: TYPES[v.dtype.type] for k, v in inputs.items()}
    return InferRequest("1", dict(inputs), types, None, False)


def _ids(n: int = N) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {
        "run": rng.integers(1, 10**6, n).astype(np.uint32),
        "luminosityBlock": rng.integers(1, 5000, n).astype(np.uint32),
        "event": rng.integers(0, 2**40, n).astype(np.uint64),
    }


X = np.zeros((N, 2), np.float32)


def test_identifiers_give_the_training_folds_and_leave_the_features() -> None:
    ids = _ids()
    expected = assign_fold([ids[n] for n in IDS], folds=K, seed=SEED)
    assert set(np.unique(expected)) == set(range(K))
    rest, fold = request_fold("m", _meta(), _request(features=X, **ids))
    np.testing.assert_array_equal(fold, expected)
    assert list(rest.inputs) == list(rest.datatypes) == ["features"]
    # any integer datatype that holds the values: the same folds
    wide = {n: v.astype(np.int64) for n, v in ids.items()}
    np.testing.assert_array_equal(request_fold("m", _meta(), _request(features=X, **wide))[1], fold)
    # neither fold nor identifiers: the mean (None); fold alone: as before
    assert request_fold("m", _meta(), _request(features=X))[1] is None
    given = np.zeros(N, np.int64)
    assert request_fold("m", _meta(), _request(features=X, fold=given))[1] is given


def test_raw_requests_keep_an_identifier_the_preprocessing_reads() -> None:
    ids, met = _ids(), np.ones(N, np.float32)
    raw = ["MET_pt", "run"]  # the model's raw input branches: it cuts on run
    rest, fold = request_fold("m", _meta(), _request(MET_pt=met, run=ids["run"]), raw)
    assert fold is None
    assert sorted(rest.inputs) == ["MET_pt", "run"]
    rest, fold = request_fold("m", _meta(), _request(MET_pt=met, **ids), raw)
    np.testing.assert_array_equal(fold, assign_fold([ids[n] for n in IDS], folds=K, seed=SEED))
    assert sorted(rest.inputs) == ["MET_pt", "run"]


@pytest.mark.parametrize(
    ("meta", "inputs", "match"),
    [
        (_meta(), {"run": _ids()["run"]}, r"not \['luminosityBlock', 'event'\]"),
        (_meta(), {**_ids(), "fold": np.zeros(N, np.int64)}, "send one of them"),
        (_meta(None), _ids(), r"not k-folded; it takes no identifier inputs \['run'"),
        (_meta(ids=(), seed=None), _ids(), "does not record its fold identifiers"),
        (_meta(), {**_ids(), "event": np.ones(N)}, r"'event' .* 1-D integer tensor .* FP64"),
        (_meta(), {**_ids(), "run": np.ones((N, 1), np.uint32)}, r"UINT32 \[50, 1\]"),
        (_meta(), {**_ids(), "run": np.ones(N - 1, np.uint32)}, "must have one length"),
    ],
)
def test_requests_that_cannot_say_the_folds_are_refused(
    meta: ModelMetadata, inputs: dict[str, np.ndarray], match: str
) -> None:
    with pytest.raises(InvalidInput, match=match):
        request_fold("m", meta, _request(features=X, **inputs))


def test_metadata_lists_and_round_trips_the_identifiers() -> None:
    meta = _meta()
    assert fold_identifiers(meta) == IDS
    assert fold_identifiers(_meta(ids=(), seed=None)) == ()
    assert fold_identifiers(_meta(None)) == ()
    listed = fold_metadata(K, fold_identifiers(meta))["optional_inputs"]
    assert [t["name"] for t in listed] == ["fold", *IDS]
    assert all(t["optional"] and t["shape"] == [-1] for t in listed)
    assert "UINT32" in listed[1]["parameters"]["datatypes"]
    document = meta.to_json()
    assert document["fold_identifiers"] == list(IDS)
    assert document["fold_seed"] == SEED
    assert ModelMetadata.from_json(document, "m") == meta
    old = {k: v for k, v in document.items() if not k.startswith("fold_")}
    assert ModelMetadata.from_json(old, "m").fold_identifiers == ()  # older bundles load
    for key, bad in (("fold_identifiers", "run"), ("fold_seed", -1), ("fold_seed", True)):
        with pytest.raises(SpecError, match=key):
            ModelMetadata.from_json({**document, key: bad}, "m")
