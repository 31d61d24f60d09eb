"""The reweighting's run artifacts: its plots (PNG + PDF) and ``reweight.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mlaas4hep.preprocess.labels import plan_labels
from mlaas4hep.preprocess.pipeline import FeatureInfo
from mlaas4hep.preprocess.reweight import REWEIGHT_FILE, plan_reweighting
from mlaas4hep.preprocess.reweight_hist import ReweightHistograms
from mlaas4hep.spec import PipelineSpec, load_spec
from mlaas4hep.train.bundle import write_bundle
from mlaas4hep.train.reweight_plots import plot_reweighting

AXES = [
    {"expr": "abs(eta)", "edges": [0, 0.5, 1.0, 1.5, 2.5]},
    {"expr": "pt", "n": 6, "lo": 20, "hi": 200},
]


def spec() -> PipelineSpec:
    return load_spec(
        {
            "name": "rw",
            "data": {
                "datasets": [
                    {"name": "sig", "files": ["s.root"], "label": 1},
                    {"name": "bkg", "files": ["b.root"], "label": 0},
                ]
            },
            "preprocess": {
                "features": {"scalars": ["pt"]},
                "reweight": [
                    {"variables": AXES, "target": "sig", "max_weight": 5},
                    {"variables": AXES[1:], "classes": ["sig"]},
                ],
            },
        }
    )


def document(s: PipelineSpec) -> dict[str, Any]:
    """Histograms of two generated classes, filled in two chunks."""
    hists = ReweightHistograms(plan_reweighting(s, plan_labels(s)))
    rng = np.random.default_rng(3)
    for chunk in range(2):
        n = 4000
        y = (np.arange(n) % 2).astype(np.float32)
        pt = 20 + rng.exponential(np.where(y == 1, 60.0, 30.0))
        columns = {"abs(eta)": np.abs(rng.normal(0, 1.2, n)), "pt": pt}
        w = np.ones(n, dtype=np.float32)
        hists.fill(columns, y, w, "sig" if chunk else "bkg", np.ones(n, dtype=bool))
    return hists.document()


def test_each_variable_of_each_reweighting_is_plotted(tmp_path: Path) -> None:
    made = plot_reweighting(tmp_path, document(spec()))
    names = [p.name for p in made]
    assert names == ["reweight_0_abs_eta.png", "reweight_0_pt.png", "reweight_1_pt.png"]
    for png in made:
        assert png.stat().st_size > 1000
        assert png.with_suffix(".pdf").stat().st_size > 1000
    assert plot_reweighting(tmp_path / "none", {}) == []


def test_the_bundle_saves_the_histograms_and_factor_maps(tmp_path: Path) -> None:
    s, doc = spec(), document(spec())
    info = FeatureInfo(
        names=("pt",), task="binary", n_classes=1, class_names=("bkg", "sig"),
        normalize="standard", offset=np.zeros(1, np.float32), scale=np.ones(1, np.float32),
        stats={}, reweight=doc,
    )  # fmt: skip
    write_bundle(tmp_path, s, info, {}, [])
    saved = json.loads((tmp_path / REWEIGHT_FILE).read_text())
    assert saved == json.loads(json.dumps(doc))
    first = saved["rules"][0]
    assert np.asarray(first["classes"]["bkg"]["factors"]).shape == (4, 6)
    assert np.asarray(first["histograms"]["class:bkg"]["sum_w"]).shape == (4, 6)
    assert max(np.asarray(first["classes"]["bkg"]["factors"]).ravel()) <= 5
    assert "to class:sig, factors clipped at 5" in (tmp_path / "README.md").read_text()
    assert FeatureInfo.from_dict(info.to_dict()).reweight == doc
