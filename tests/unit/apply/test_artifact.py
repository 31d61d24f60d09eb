"""The bundle contract (``mlaas4hep.artifact``): format versions, output column names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlaas4hep import artifact
from mlaas4hep.artifact import BundleFeatures, output_columns, read_features
from mlaas4hep.cli.apply import output_path
from mlaas4hep.errors import SpecError

V1 = {
    "input": "features",
    "output": "scores",
    "features": ["a", "b"],
    "task": "binary",
    "n_classes": 2,
    "class_names": ["bkg", "sig"],
    "normalize": "standard",
    "offset": [0.0, 1.0],
    "scale": [1.0, 2.0],
}


def test_round_trip_and_version_1_bundles_still_load(tmp_path: Path) -> None:
    doc = BundleFeatures(("a",), "regression", 0, (), "none", (0.0,), (1.0,), ("run", "event"),
                         {"event": "uint64"}, "Events")  # fmt: skip
    assert BundleFeatures.from_json(doc.to_json(), "x") == doc
    (tmp_path / artifact.FEATURES_FILE).write_text(json.dumps(V1))
    old = read_features(tmp_path)
    assert old.format == "mlaas4hep-bundle/1"
    assert old.identifiers == ()
    assert old.branches == {}
    assert old.features == ("a", "b")


def test_unknown_format_and_broken_documents_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="unknown bundle format"):
        BundleFeatures.from_json(V1 | {"format": "mlaas4hep-bundle/9"}, "f.json")
    with pytest.raises(SpecError, match=r"f\.json"):
        BundleFeatures.from_json({"features": ["a"], "task": "ranking"}, "f.json")
    (tmp_path / artifact.FEATURES_FILE).write_text("[1, 2]")
    with pytest.raises(SpecError, match="JSON object"):
        read_features(tmp_path)


def test_output_columns_per_task() -> None:
    assert output_columns("m", "binary", ("b", "s")) == ("m_score",)
    assert output_columns("m", "multiclass", ("a", "b", "c")) == (
        "m_score_a",
        "m_score_b",
        "m_score_c",
    )
    assert output_columns("m", "regression", ()) == ("m_value",)
    assert artifact.pass_column("m") == "m_pass"


def test_class_names_become_column_names() -> None:
    # Dataset names allow ". + -" (three-class.yaml has "ttH-extra"); a column cannot.
    names = output_columns("m", "multiclass", ["QCD", "ttH", "ttH-extra", "a.b+c"])
    assert names == ("m_score_QCD", "m_score_ttH", "m_score_ttH_extra", "m_score_a_b_c")
    clash = output_columns("m", "multiclass", ["t-t", "t_t"])
    assert clash == ("m_score_t_t_0", "m_score_t_t_1")


def test_output_file_names(tmp_path: Path) -> None:
    class M:
        def __init__(self, name: str) -> None:
            self.name = name

    models = [M("tth"), M("qcd")]
    got = output_path(tmp_path, "root://host//store/x/ttH_1.root", models, "root")  # type: ignore[arg-type]
    assert got == tmp_path / "ttH_1.tth+qcd.friend.root"
    got = output_path(tmp_path, "/data/a.b.root", models[:1], "parquet")  # type: ignore[arg-type]
    assert got == tmp_path / "a.b.tth.friend.parquet"
