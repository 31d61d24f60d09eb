"""Partition-parallel preprocessing gives the local run's results bit for bit."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml

from mlaas4hep.data.samples import write_sample, write_sample_set
from mlaas4hep.preprocess.firstpass import Accumulator
from mlaas4hep.preprocess.normalize import FeatureStats
from mlaas4hep.preprocess.partitioned import (
    SerialDistributor,
    fit_partition,
    plan,
    run_partition,
)
from mlaas4hep.preprocess.pipeline import Preprocessor
from mlaas4hep.spec import PipelineSpec

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "tth-vs-qcd.yaml"


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> PipelineSpec:
    root = tmp_path_factory.mktemp("partitioned")
    files = write_sample_set(root, 2500, seed=5)
    extra = write_sample(root / "signal_2.root", "signal", 1300, seed=6)
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["data"]["datasets"][0]["files"] = [str(files["signal"]), str(extra)]
    raw["data"]["datasets"][1]["files"] = [str(files["background"])]
    raw["data"]["step_size"] = 700  # several partitions per file, a short last one
    raw["data"]["max_events"] = 3500  # cuts the second signal file
    return PipelineSpec.model_validate(raw)


def test_partitions_equal_the_local_first_pass_and_batches(spec: PipelineSpec) -> None:
    local = Preprocessor(spec)
    spread = Preprocessor(spec, distributor=SerialDistributor())
    a, b = local.fit(), spread.fit()
    assert json.dumps(a.to_dict(), sort_keys=True) == json.dumps(b.to_dict(), sort_keys=True)
    assert a.events["ttH"]["read"] == 3500
    for split in ("train", "validation", "test"):
        la, lb = list(local.batches(split)), list(spread.batches(split))
        assert len(la) == len(lb)
        for x, y in zip(la, lb, strict=True):
            np.testing.assert_array_equal(x.X, y.X)
            np.testing.assert_array_equal(x.w, y.w)


def test_pieces_join_into_partitions_that_read_the_same_chunks(spec: PipelineSpec) -> None:
    pieces = plan(spec, min_entries=1)
    assert len(pieces) == 10  # ttH: 4 + 2 (2500, then 1000 of 1300), QCD: 4 (2500 / 700)
    assert len(plan(spec)) == 3  # one per file
    joined = plan(spec, min_entries=1500)  # 3 pieces (2100), then the rest of the file
    assert [(p.entry_start, p.entry_stop) for p in joined[:2]] == [(0, 2100), (2100, 2500)]
    prep = Preprocessor(spec)
    one = [r for p in pieces for r in run_partition(spec, prep.branches, p)]
    many = [r for p in joined for r in run_partition(spec, prep.branches, p)]
    assert (
        [r.n_in for r in one]
        == [r.n_in for r in many]
        == [p.entry_stop - p.entry_start for p in pieces]
    )
    for a, b in zip(one, many, strict=True):
        np.testing.assert_array_equal(a.X, b.X)


def test_partial_sums_merge_exactly_in_order_and_closely_in_any_grouping(
    spec: PipelineSpec,
) -> None:
    prep = Preprocessor(spec)
    # Shipped as Dask ships results (pickled); our own objects, not untrusted data.
    shipped = [
        pickle.dumps(fit_partition(spec, prep.branches, p)) for p in plan(spec, min_entries=1500)
    ]
    partials = [acc for blob in shipped for acc in pickle.loads(blob)]  # noqa: S301
    assert len(partials) == 10  # one per chunk, whatever the partitions
    forward = Accumulator(prep.program)
    for acc in partials:
        forward.merge(acc)
    assert forward.info().to_dict() == prep.fit().to_dict()  # bit for bit
    halves = Accumulator(prep.program)
    left, right = Accumulator(prep.program), Accumulator(prep.program)
    for acc in partials[:4]:
        left.merge(acc)
    for acc in partials[4:]:
        right.merge(acc)
    halves.merge(right).merge(left)
    assert forward.events == halves.events
    assert forward.info().cutflow == halves.info().cutflow
    np.testing.assert_array_equal(forward.stats.count, halves.stats.count)
    np.testing.assert_allclose(forward.stats.mean, halves.stats.mean, rtol=1e-12)
    np.testing.assert_allclose(forward.stats.m2, halves.stats.m2, rtol=1e-10)
    np.testing.assert_array_equal(forward.stats.min, halves.stats.min)


def test_feature_stats_merge_matches_one_update() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, size=(1000, 3))
    x[5, 1] = np.nan
    whole = FeatureStats(3)
    whole.update(x)
    merged = FeatureStats(3)
    for piece in np.array_split(x, 7):
        part = FeatureStats(3)
        part.update(piece)
        merged.merge(part)
    np.testing.assert_array_equal(whole.count, merged.count)
    np.testing.assert_array_equal(whole.nonfinite, merged.nonfinite)
    np.testing.assert_allclose(whole.mean, merged.mean, rtol=1e-12)
    np.testing.assert_allclose(whole.m2, merged.m2, rtol=1e-10)
    empty = FeatureStats(3)
    empty.merge(whole)
    np.testing.assert_array_equal(empty.mean, whole.mean)  # a fresh merge is exact
    with pytest.raises(ValueError, match="cannot merge"):
        merged.merge(FeatureStats(2))
