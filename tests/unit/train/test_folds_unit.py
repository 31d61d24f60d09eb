"""k-folding pieces without training: the fold hash, the combined ONNX graph, the checks
before any data is read, and the serving side's ``fold`` input."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from pydantic import ValidationError

from mlaas4hep.errors import SpecError, TrainingError
from mlaas4hep.preprocess.folds import event_folds
from mlaas4hep.preprocess.split import assign_fold, assign_split
from mlaas4hep.serve.codec import InferRequest
from mlaas4hep.serve.errors import InvalidInput
from mlaas4hep.serve.folds import take_fold, with_fold
from mlaas4hep.spec import PipelineSpec, TrainSpec
from mlaas4hep.train.fold_onnx import combine_folds
from mlaas4hep.train.folds import check_folds

N = 200_000


def _ids(n: int = N) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [
        np.ones(n, np.uint32),
        rng.integers(1, 500, n).astype(np.uint32),
        np.arange(n, dtype=np.uint64),
    ]


def test_folds_are_balanced_deterministic_and_independent_of_the_split() -> None:
    ids = _ids()
    fold = assign_fold(ids, folds=5, seed=42)
    assert fold.dtype == np.int64
    assert set(np.unique(fold)) == set(range(5))
    np.testing.assert_array_equal(fold, assign_fold(ids, folds=5, seed=42))
    assert (fold != assign_fold(ids, folds=5, seed=43)).mean() > 0.7  # the seed matters
    counts = np.bincount(fold) / N
    assert np.abs(counts - 0.2).max() < 0.005  # about 4 sigma at N events
    # a fold takes no split fraction: each holds the split's fractions of every code
    split = assign_split(ids, validation=0.2, test=0.1, seed=42)
    for f in range(5):
        share = np.bincount(split[fold == f], minlength=3) / (fold == f).sum()
        np.testing.assert_allclose(share, [0.7, 0.2, 0.1], atol=0.01)
    # an event's fold depends on its identifiers only: not on the other events
    np.testing.assert_array_equal(assign_fold([i[::7] for i in ids], folds=5, seed=42), fold[::7])


def _spec(**train: Any) -> PipelineSpec:
    return PipelineSpec.model_validate(
        {
            "name": "f",
            "data": {"datasets": [{"name": "a", "files": ["a.root"], "label": 1}]},
            "preprocess": {"features": {"scalars": ["x"]}},
            "model": {"kind": train.pop("kind", "mlp")},
            "train": train,
        }
    )


def test_event_folds_use_the_spec_identifiers_and_seed() -> None:
    spec = _spec(folds=3)
    ids = _ids(1000)
    columns = dict(zip(spec.data.identifiers, ids, strict=True))
    expected = assign_fold(ids, folds=3, seed=spec.preprocess.split.seed)
    np.testing.assert_array_equal(event_folds(spec, columns), expected)
    with pytest.raises(SpecError, match=r"\['event'\] are missing"):
        event_folds(spec, {k: v for k, v in columns.items() if k != "event"})
    with pytest.raises(SpecError, match="not k-folded"):
        event_folds(_spec(), columns)


def test_folds_spec_and_checks_before_any_data() -> None:
    assert TrainSpec().folds is None
    for bad in (1, 21):
        with pytest.raises(ValidationError, match="folds"):
            TrainSpec(folds=bad)
    check_folds(_spec())  # one model: nothing to check
    check_folds(_spec(folds=2, kind="xgboost"))
    with pytest.raises(SpecError, match="'deepsets'"):
        check_folds(_spec(folds=2, kind="deepsets"))
    tuned = _spec(folds=2).model_copy(update={"tune": {"space": {}}})
    with pytest.raises(SpecError, match="tune"):
        check_folds(tuned)
    with pytest.raises(TrainingError, match="--resume"):
        check_folds(_spec(folds=2), resume=True)
    with pytest.raises(TrainingError, match="Dask"):
        check_folds(_spec(folds=2), distributed=True)


def _linear(weight: float, opset: int = 17) -> Any:
    """features (n, 2) -> scores (n, 1) = features @ [[w], [1]]."""
    w = numpy_helper.from_array(np.array([[weight], [1.0]], np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["scores"])],
        "linear",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 1])],
        initializer=[w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_combined_graph_chooses_per_row_and_averages_by_default() -> None:
    weights = [1.0, 10.0, 100.0]
    combined = combine_folds([_linear(w) for w in weights])
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(combined.SerializeToString(), options)
    X = np.array([[1, 0], [2, 0], [3, 0], [4, 0]], np.float32)
    each = [X[:, :1] * w for w in weights]

    def run(fold: np.ndarray | None) -> np.ndarray:
        feeds = {"features": X} | ({} if fold is None else {"fold": fold})
        return np.asarray(sess.run(["scores"], feeds)[0])

    np.testing.assert_allclose(run(None), np.mean(each, axis=0), rtol=1e-6)
    for i in range(3):
        np.testing.assert_array_equal(run(np.full(4, i, np.int64)), each[i])
    chosen = run(np.array([2, 0, -1, 1], np.int64))
    np.testing.assert_array_equal(chosen[[0, 1, 3], 0], [X[0, 0] * 100, X[1, 0] * 1, X[3, 0] * 10])
    assert chosen[2, 0] == pytest.approx(3 * 111 / 3)
    assert [i.name for i in sess.get_inputs()] == ["features"]  # fold has a default


def test_combiner_refuses_what_it_cannot_merge() -> None:
    with pytest.raises(TrainingError, match="opset"):
        combine_folds([_linear(1.0, opset=12), _linear(2.0, opset=12)])
    two_inputs = _linear(1.0)
    two_inputs.graph.input.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"]))
    with pytest.raises(TrainingError, match="one input"):
        combine_folds([two_inputs, _linear(2.0)])
    with pytest.raises(TrainingError, match="at least 2"):
        combine_folds([_linear(1.0)])
    onnx.checker.check_model(combine_folds([_linear(1.0), _linear(2.0)]))


def _request(**inputs: np.ndarray) -> InferRequest:
    types = {k: "INT64" if v.dtype == np.int64 else "FP32" for k, v in inputs.items()}
    return InferRequest("1", dict(inputs), types, None, False)


def test_serving_takes_the_optional_fold_input() -> None:
    X = np.zeros((3, 2), np.float32)
    rest, fold = take_fold("m", 3, _request(features=X, fold=np.array([0, 2, -1])))
    assert list(rest.inputs) == ["features"]
    assert list(rest.datatypes) == ["features"]
    np.testing.assert_array_equal(with_fold("m", 3, rest.inputs, fold, 3)["fold"], [0, 2, -1])
    same, none = take_fold("m", 3, _request(features=X))
    assert none is None
    np.testing.assert_array_equal(with_fold("m", 3, same.inputs, None, 3)["fold"], [-1, -1, -1])
    assert with_fold("m", None, same.inputs, None, 3).keys() == {"features"}
    for bad, match in (
        (np.array([0, 3, 1]), r"holds 3; use 0\.\.2"),
        (np.array([-2, 0, 1]), "holds -2"),
        (np.array([[0, 1, 1]]), r"shape \[-1\]"),
    ):
        with pytest.raises(InvalidInput, match=match):
            take_fold("m", 3, _request(features=X, fold=bad))
    with pytest.raises(InvalidInput, match="not k-folded"):
        take_fold("m", None, _request(features=X, fold=np.array([0, 0, 0])))
    with pytest.raises(InvalidInput, match="2 rows"):
        with_fold("m", 3, same.inputs, np.array([0, 1]), 3)
