"""Per-dataset cuts, defines and labels on a real Dask cluster equal the local run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dask_cluster import LocalCluster

from mlaas4hep.data.samples import write_sample_set
from mlaas4hep.jobs.dask_map import distributor_at
from mlaas4hep.preprocess.pipeline import Preprocessor
from mlaas4hep.spec import validate_spec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("per-dataset-dask"), env={})
    try:
        yield cluster.start(1)
    finally:
        cluster.stop()


def spec_doc(files: dict[str, Path]) -> dict[str, Any]:
    sig, bkg = str(files["signal"]), str(files["background"])
    return {
        "name": "per-dataset-dask",
        "data": {
            "step_size": 800,  # several partitions per file
            "datasets": [
                {"name": "ttH", "files": [sig], "class": "ttH", "cuts": ["nJet >= 4"],
                 "define": {"nLepton": "nMuon"}},
                {"name": "ttbar", "files": [bkg], "class": "ttbar", "cuts": ["nLepton >= 1"]},
                {"name": "QCD", "files": [bkg], "label": "where(nJet > 3, 1, 0)"},
            ],
        },
        "preprocess": {
            "define": {"nLepton": "nMuon + nElectron"},
            "cuts": ["nJet >= 2"],
            "classes": ["QCD", "ttbar", "ttH"],
            "features": {"scalars": ["MET_pt", "nLepton", "nJet"]},
        },
    }  # fmt: skip


def test_dask_partitions_honour_per_dataset_settings(cluster: LocalCluster, tmp_path: Path) -> None:
    spec = validate_spec(spec_doc(write_sample_set(tmp_path, 2000, seed=41)))
    local = Preprocessor(spec)
    with distributor_at(cluster.address) as dist:
        spread = Preprocessor(spec, distributor=dist)
        a, b = local.fit().to_dict(), spread.fit().to_dict()
        assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
        assert [r["cut"] for r in a["cutflow"]] == [
            "nJet >= 2", "[ttH] nJet >= 4", "[ttbar] nLepton >= 1"
        ]  # fmt: skip
        ya = np.concatenate([x.y for x in local.batches()])
        yb = np.concatenate([x.y for x in spread.batches()])
    np.testing.assert_array_equal(ya, yb)
    assert set(np.unique(ya).tolist()) == {0, 1, 2}  # QCD's expression gives 0 and 1
