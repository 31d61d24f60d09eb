"""Reweighting histograms on a real Dask cluster equal the local ones bit for bit.

A scheduler and two workers from the ``dask`` CLI (``dask_cluster.LocalCluster``); the
first pass runs one partition per 700-entry chunk, spread over both workers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from dask_cluster import LocalCluster

from mlaas4hep.data.samples import write_sample_set
from mlaas4hep.jobs.dask_map import distributor_at
from mlaas4hep.preprocess import partitioned
from mlaas4hep.preprocess.pipeline import Preprocessor
from mlaas4hep.spec import PipelineSpec

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).parents[2] / "examples" / "reweight-flat-pt.yaml"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("dask-cluster"), env={})
    try:
        yield cluster.start(2)
    finally:
        cluster.stop()


def test_reweighting_on_the_cluster_equals_the_local_run(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    files = write_sample_set(tmp_path, 1400, seed=31)
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["data"]["datasets"][0]["files"] = [str(files["signal"])]
    raw["data"]["datasets"][1].update(files=[str(files["background"])], weight="genWeight")
    raw["data"].update(step_size=700, max_events=None)
    raw["preprocess"]["reweight"] = [
        {  # 2D, QCD to ttH: the target's histogram is merged across partitions too
            "variables": [
                {"expr": "lead_pt", "n": 8, "lo": 20, "hi": 260},
                {"expr": "MET_pt", "edges": [0, 20, 40, 80, 200]},
            ],
            "target": "ttH",
        }
    ]
    spec = PipelineSpec.model_validate(raw)
    here = Preprocessor(spec)
    local = here.fit()
    with distributor_at(cluster.address) as dask:
        pieces = partitioned.plan(spec, min_entries=1)
        assert len(pieces) == 4  # 2 chunks of 700 per file
        merged, _ = partitioned.first_pass(spec, here.program, here.branches, dask, pieces)
        spread = Preprocessor(spec, distributor=dask)
        there = spread.fit()
        assert merged.info().reweight == there.reweight == local.reweight  # floats equal
        rule = local.reweight["rules"][0]
        assert np.asarray(rule["histograms"]["class:QCD"]["sum_w2"]).sum() > 0
        for a, b in zip(here.batches("train"), spread.batches("train"), strict=True):
            np.testing.assert_array_equal(a.w, b.w)
    assert json.dumps(local.to_dict(), sort_keys=True) == json.dumps(
        there.to_dict(), sort_keys=True
    )
