"""Raw event columns (serve/raw.py): decoding, checking and loading, without a server."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from mlaas4hep.errors import InvalidInput, SpecError
from mlaas4hep.serve.manager import ModelManager
from mlaas4hep.serve.metadata import NUMPY_TO_V2
from mlaas4hep.serve.metrics import InferenceMetrics
from mlaas4hep.serve.raw import (
    Column,
    RawLoader,
    RawPreprocessor,
    RawSupport,
    RunModel,
    counts_name,
    decode_columns,
)
from mlaas4hep.serve.repository import ModelRepository, VersionPolicy
from mlaas4hep.serve.settings import BatchPolicy

Array = np.ndarray


class Fake:
    """A RawPreprocessor with the branch types of a small NanoAOD-like bundle."""

    def __init__(self, branches: Mapping[str, str]) -> None:
        self._branches = dict(branches)

    @property
    def branches(self) -> Mapping[str, str]:
        return self._branches

    def score(self, columns: Mapping[str, Column]) -> tuple[Array, Array]:
        raise AssertionError("not called here")


BRANCHES = {
    "Jet_pt": "var * float32",
    "MET_pt": "float32",
    "nJet": "int32",
    "Muon_pt": "var * float32",
}
SUPPORT = RawSupport.of(Fake(BRANCHES))


def decode(tensors: dict[str, Array]) -> dict[str, Column]:
    datatypes = {k: NUMPY_TO_V2[v.dtype] for k, v in tensors.items()}
    return decode_columns("m", SUPPORT.inputs, tensors, datatypes)


def good() -> dict[str, Array]:
    return {
        "Jet_pt": np.arange(3, dtype=np.float32),
        "MET_pt": np.ones(2, np.float32),
        "nJet": np.array([1, 2], np.int32),
        "Muon_pt": np.ones(1, np.float32),
        "nMuon": np.array([0, 1], np.uint32),
    }


def test_counts_name_is_nanoaods_counter() -> None:
    assert counts_name("Jet_pt") == "nJet"
    assert counts_name("FatJet_msoftdrop") == "nFatJet"
    assert counts_name("tracks") == "ntracks"


def test_metadata_lists_values_and_counters() -> None:
    tensors = {t["name"]: t for t in SUPPORT.tensors()}
    assert tensors["Jet_pt"]["parameters"] == {"counts": "nJet"}
    assert tensors["nJet"] == {
        "name": "nJet",
        "datatype": "INT32",
        "shape": [-1],
        "parameters": {"counts_of": "Jet"},
    }
    assert tensors["nMuon"]["datatype"] == "INT64"
    assert "parameters" not in tensors["MET_pt"]


def test_decodes_flat_and_jagged_columns() -> None:
    sent = good()
    columns = decode(sent)
    jet, muon = columns["Jet_pt"], columns["Muon_pt"]
    assert isinstance(jet, tuple)
    assert isinstance(muon, tuple)
    values, counts = jet
    assert values is sent["Jet_pt"]  # no copy
    np.testing.assert_array_equal(counts, [1, 2])
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(muon[1], [0, 1])
    assert isinstance(columns["MET_pt"], np.ndarray)
    assert "nMuon" not in columns  # a counter only, not a branch the model reads


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"nMuon": None}, "missing ['nMuon'], unknown []"),
        ({"extra": np.ones(2, np.float32)}, "unknown ['extra']"),
        ({"MET_pt": np.ones(2, np.float64)}, "'MET_pt' must be FP32, the request says FP64"),
        ({"MET_pt": np.ones((2, 1), np.float32)}, "must be a 1-D tensor"),
        ({"MET_pt": np.ones(3, np.float32)}, "one value per event"),
        ({"Jet_pt": np.ones(4, np.float32)}, "'Jet_pt' has 4 values but 'nJet' counts 3"),
        ({"nMuon": np.array([1.0, 0.0], np.float32)}, "must have an integer datatype"),
        ({"nMuon": np.array([-1, 2], np.int64)}, "negative counts"),
        ({"nMuon": np.array([2**64 - 1, 2], np.uint64)}, "negative counts"),
        # a sum that wraps around to the number of values sent
        ({"nMuon": np.array([2**63 - 1, 2**63 - 1], np.uint64)}, "counts more than 1"),
    ],
)
def test_bad_columns_are_invalid_input(change: dict[str, Array | None], fragment: str) -> None:
    tensors = good()
    for name, value in change.items():
        if value is None:
            del tensors[name]
        else:
            tensors[name] = value
    with pytest.raises(InvalidInput) as info:
        decode(tensors)
    assert fragment in str(info.value)


def test_no_events_is_invalid() -> None:
    tensors = {k: v[:0] for k, v in good().items()}
    with pytest.raises(InvalidInput, match="no events"):
        decode(tensors)


@pytest.mark.parametrize("branch_type", ["string", "var * var * float32", ""])
def test_a_type_raw_columns_cannot_carry(branch_type: str) -> None:
    with pytest.raises(SpecError, match="numbers and lists of numbers"):
        RawSupport.of(Fake({"x": branch_type}))


def _manager(tmp_path: Path, loader: RawLoader) -> ModelManager:
    repo = ModelRepository(tmp_path / "repo", VersionPolicy(latest=1), BatchPolicy())
    return ModelManager(repo, ThreadPoolExecutor(1), InferenceMetrics(), 1, raw_loader=loader)


def test_manager_asks_the_loader_and_keeps_features_only_models(
    tmp_path: Path, model_dir: Path
) -> None:
    seen: list[Path] = []

    def no_preprocessing(vdir: Path, run: RunModel) -> RawPreprocessor | None:
        seen.append(vdir)
        return None

    manager = _manager(tmp_path, no_preprocessing)
    manager.repository.publish("m", model_dir)
    asyncio.run(manager.sync())
    assert seen == [manager.repository.root / "m" / "1"]
    assert manager.get("m").raw == RawSupport()  # no reason: the old error messages stay


def test_a_preprocessing_that_fails_disables_raw_columns_only(
    tmp_path: Path, model_dir: Path
) -> None:
    def broken(vdir: Path, run: RunModel) -> RawPreprocessor | None:
        msg = f"{str(vdir)!r}: features.json records no input branches"
        raise SpecError(msg)

    manager = _manager(tmp_path, broken)
    manager.repository.publish("m", model_dir)
    asyncio.run(manager.sync())
    loaded = manager.get("m")  # still in service for its feature tensor
    assert loaded.raw.preprocessor is None
    assert loaded.raw.reason == "m version 1: features.json records no input branches"


def test_a_graph_that_is_not_a_bundles_takes_no_raw_columns(
    tmp_path: Path, model_dir: Path
) -> None:
    manager = _manager(tmp_path, lambda vdir, run: Fake(BRANCHES))
    manager.repository.publish("m", model_dir)  # outputs "score", a bundle's are "scores"
    asyncio.run(manager.sync())
    assert "does not map 'features' to 'scores'" in manager.get("m").raw.reason
