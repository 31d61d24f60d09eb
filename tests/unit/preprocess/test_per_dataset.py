"""Per-dataset cuts, defines and labels on generated ROOT files, checked against numpy."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
import uproot

from mlaas4hep.data.samples import write_sample
from mlaas4hep.errors import DataQualityError, ExpressionError, SpecError
from mlaas4hep.preprocess.firstpass import Accumulator
from mlaas4hep.preprocess.partitioned import SerialDistributor, fit_partition, plan
from mlaas4hep.preprocess.pipeline import Preprocessor
from mlaas4hep.preprocess.program import Program
from mlaas4hep.spec import PipelineSpec, validate_spec

SIGNAL, BACKGROUND = 2500, 3000


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("per-dataset")
    return {
        "signal": write_sample(root / "signal.root", "signal", SIGNAL, seed=21),
        "background": write_sample(root / "background.root", "background", BACKGROUND, seed=22),
    }


@pytest.fixture(scope="module")
def events(files: dict[str, Path]) -> dict[str, dict[str, np.ndarray[Any, Any]]]:
    """The columns the expectations need, read independently with uproot and numpy."""
    out = {}
    for kind, path in files.items():
        with uproot.open(path) as f:
            arr = f["Events"].arrays(["nJet", "nMuon", "nElectron", "MET_pt", "Jet_pt"])
        out[kind] = {
            "nJet": ak.to_numpy(arr.nJet).astype(np.int64),
            "nMuon": ak.to_numpy(arr.nMuon).astype(np.int64),
            "nElectron": ak.to_numpy(arr.nElectron).astype(np.int64),
            "HT": ak.to_numpy(ak.sum(arr.Jet_pt, axis=1)).astype(np.float64),
        }
    return out


def three_classes(files: dict[str, Path]) -> dict[str, Any]:
    """ttH, and the background split in two classes by its lepton count (dataset cuts);
    ttH counts only its muons as leptons (an override of the global define)."""
    sig, bkg = str(files["signal"]), str(files["background"])
    return {
        "name": "per-dataset",
        "data": {
            "step_size": 700,
            "datasets": [
                {"name": "ttH", "files": [sig], "class": "ttH", "cuts": ["nJet >= 4"],
                 "define": {"nLepton": "nMuon", "extra": "nJet * 2"}},
                {"name": "ttbar", "files": [bkg], "class": "ttbar",
                 "cuts": [{"name": "leptonic", "expr": "nLepton >= 1"}]},
                {"name": "QCD", "files": [bkg], "class": "QCD", "cuts": ["nLepton == 0"]},
            ],
        },
        "preprocess": {
            "define": {"nLepton": "nMuon + nElectron", "HT": "sum(Jet_pt) + 0 * nLepton"},
            "cuts": ["nJet >= 2"],
            "classes": ["QCD", "ttbar", "ttH"],
            "features": {"scalars": ["MET_pt", "nLepton", "HT"]},
        },
    }  # fmt: skip


def test_dataset_cuts_make_the_expected_cut_flow_and_class_counts(
    files: dict[str, Path], events: dict[str, dict[str, np.ndarray[Any, Any]]]
) -> None:
    prep = Preprocessor(validate_spec(three_classes(files)))
    info = prep.fit()
    assert (info.task, info.n_classes, info.class_names) == (
        "multiclass",
        3,
        ("QCD", "ttbar", "ttH"),
    )
    s, b = events["signal"], events["background"]
    lep_b = b["nMuon"] + b["nElectron"]
    base_s, base_b = s["nJet"] >= 2, b["nJet"] >= 2
    final = {
        "ttH": base_s & (s["nJet"] >= 4),
        "ttbar": base_b & (lep_b >= 1),
        "QCD": base_b & (lep_b == 0),
    }
    after_global = {"ttH": int(base_s.sum()), "ttbar": int(base_b.sum()), "QCD": int(base_b.sum())}
    read = {"ttH": SIGNAL, "ttbar": BACKGROUND, "QCD": BACKGROUND}
    rows = {r["cut"]: r for r in info.cutflow}
    assert list(rows) == ["nJet >= 2", "[ttH] nJet >= 4", "[ttbar] leptonic", "[QCD] nLepton == 0"]
    assert rows["nJet >= 2"]["after"] == sum(after_global.values())
    for ds, cut in (("ttH", "[ttH] nJet >= 4"), ("ttbar", "[ttbar] leptonic"),
                    ("QCD", "[QCD] nLepton == 0")):  # fmt: skip
        row = rows[cut]
        assert row["dataset"] == ds
        assert (row["datasets"][ds]["before"], row["datasets"][ds]["after"]) == (
            after_global[ds], int(final[ds].sum()))  # fmt: skip
        assert row["datasets"][ds]["cumulative"] == pytest.approx(final[ds].sum() / read[ds])
        # the other datasets pass a dataset's cut untouched: the table stays rectangular
        others = [o for o in read if o != ds]
        assert all(row["datasets"][o]["efficiency"] == 1.0 for o in others)
        assert row["after"] == sum(row["datasets"][o]["after"] for o in read)
    for ds in read:
        assert info.events[ds]["read"] == read[ds]
        assert info.events[ds]["passed"] == int(final[ds].sum())
    # class counts of the streamed events, class by class
    y = np.concatenate([batch.y for batch in prep.batches()])
    expected = [int(final[c].sum()) for c in ("QCD", "ttbar", "ttH")]
    assert np.bincount(y, minlength=3).tolist() == expected


def test_an_override_define_is_used_for_its_dataset_only(
    files: dict[str, Path], events: dict[str, dict[str, np.ndarray[Any, Any]]]
) -> None:
    prep = Preprocessor(validate_spec(three_classes(files)))
    got = {ds: np.concatenate([r.X for r in prep.chunks([ds])]) for ds in ("ttH", "ttbar")}
    s, b = events["signal"], events["background"]
    keep_s = (s["nJet"] >= 2) & (s["nJet"] >= 4)
    keep_b = (b["nJet"] >= 2) & (b["nMuon"] + b["nElectron"] >= 1)
    # nLepton (feature 1): the muons alone for ttH, muons + electrons for the others
    np.testing.assert_array_equal(got["ttH"][:, 1], s["nMuon"][keep_s])
    np.testing.assert_array_equal(got["ttbar"][:, 1], (b["nMuon"] + b["nElectron"])[keep_b])
    # the later global define HT reads the dataset's nLepton without failing or changing
    np.testing.assert_allclose(got["ttH"][:, 2], s["HT"][keep_s], rtol=1e-5)


def one_file(files: dict[str, Path], label: str, **pre: Any) -> dict[str, Any]:
    return {
        "name": "one-file",
        "data": {"datasets": [{"name": "ttH", "files": [str(files["signal"])], "label": label}]},
        "preprocess": {
            "define": {"nLepton": "nMuon + nElectron"},
            "features": {"scalars": ["MET_pt", "nJet"]},
            **pre,
        },
    }


def test_one_file_makes_a_binary_and_a_three_class_task_from_label_expressions(
    files: dict[str, Path], events: dict[str, dict[str, np.ndarray[Any, Any]]]
) -> None:
    s = events["signal"]
    lep = s["nMuon"] + s["nElectron"]
    binary = Preprocessor(validate_spec(one_file(files, "nLepton >= 1", task="binary")))
    assert binary.fit().task == "binary"
    y = np.concatenate([b.y for b in binary.batches()])
    assert y.dtype == np.float32
    assert np.bincount(y.astype(np.int64)).tolist() == [
        int((lep == 0).sum()),
        int((lep >= 1).sum()),
    ]
    label = "where(nLepton >= 2, 2, nLepton)"
    three = Preprocessor(
        validate_spec(one_file(files, label, classes=["hadronic", "one-lepton", "dilepton"]))
    )
    info = three.fit()  # task auto + three classes: multiclass
    assert (info.task, info.n_classes) == ("multiclass", 3)
    y = np.concatenate([b.y for b in three.batches()])
    assert np.bincount(y).tolist() == [int((lep == n).sum()) for n in (0, 1)] + [
        int((lep >= 2).sum())
    ]


def test_a_regression_on_one_file_needs_no_second_dataset(files: dict[str, Path]) -> None:
    spec = validate_spec(one_file(files, "log(MET_pt + 1)"))
    prep = Preprocessor(spec)
    assert prep.fit().task == "regression"
    assert next(prep.batches()).y.dtype == np.float32


@pytest.mark.parametrize(
    ("change", "error", "pattern"),
    [
        # an unknown branch in a dataset's define: the dataset, the field, a caret
        (lambda d: d["data"]["datasets"][0]["define"].update(extra="Jet_ptt"), ExpressionError,
         r"(?s)in data\.datasets\[ttH\]\.define\.extra: unknown name 'Jet_ptt'.*\n    \^"),
        (lambda d: d["data"]["datasets"][1]["cuts"].append("nLepton + MET_pt"), ExpressionError,
         r"data\.datasets\[ttbar\]\.cuts\[1\] must be a condition"),
        (lambda d: d["data"]["datasets"][2]["cuts"].append("Jet_pt > 3"), ExpressionError,
         r"data\.datasets\[QCD\]\.cuts\[1\] must be one value per event"),
    ],
)  # fmt: skip
def test_bad_dataset_expressions_name_the_dataset_and_field(
    files: dict[str, Path], change: Any, error: type[Exception], pattern: str
) -> None:
    raw = three_classes(files)
    change(raw)
    with pytest.raises(error, match=pattern):
        Preprocessor(validate_spec(raw)).fit()


def test_a_classification_label_expression_must_be_integer_valued(files: dict[str, Path]) -> None:
    raw = one_file(files, "nLepton / 2", classes=["a", "b", "c"])
    with pytest.raises(ExpressionError) as info:
        Preprocessor(validate_spec(raw)).fit()
    text = str(info.value)
    assert "in data.datasets[ttH].label: a multiclass label must be integer-valued" in text
    assert "per-event float" in text
    assert "    nLepton / 2\n            ^" in text  # the caret under the division
    raw = one_file(files, "where(nLepton > 5, 3, 0)", classes=["a", "b", "c"])
    with pytest.raises(DataQualityError, match=r"data\.datasets\[ttH\]\.label .* gave 3\.0"):
        Preprocessor(validate_spec(raw)).fit()


def test_unknown_or_conflicting_classes_are_spec_errors(files: dict[str, Path]) -> None:
    raw = three_classes(files)
    raw["data"]["datasets"][1]["class"] = "tt-bar"
    with pytest.raises(SpecError) as info:
        validate_spec(raw)
    assert "data.datasets[1] ('ttbar').class 'tt-bar' is not one of preprocess.classes" in str(
        info.value
    )
    assert "['QCD', 'ttbar', 'ttH']" in str(info.value)
    del raw["preprocess"]["classes"]
    with pytest.raises(SpecError, match=r"preprocess.classes is not set"):
        validate_spec(raw)
    raw = three_classes(files)
    raw["data"]["datasets"][0]["label"] = 2
    with pytest.raises(SpecError, match="has both label"):
        validate_spec(raw)
    raw = three_classes(files)
    raw["preprocess"]["label"] = "nJet > 3"
    with pytest.raises(SpecError, match=r"own class and preprocess.label is set too"):
        validate_spec(raw)
    raw = three_classes(files)
    raw["data"]["datasets"][0]["define"] = {"sum": "nJet"}
    with pytest.raises(SpecError, match="word of the expression language"):
        validate_spec(raw)
    raw = one_file(files, "nLepton >= 1", task="multiclass")
    with pytest.raises(SpecError, match=r"needs preprocess.classes"):
        Preprocessor(validate_spec(raw))


def test_partitions_honour_dataset_steps(files: dict[str, Path]) -> None:
    spec = validate_spec(three_classes(files))
    local = Preprocessor(spec).fit()
    spread = Preprocessor(spec, distributor=SerialDistributor()).fit()
    assert json.dumps(local.to_dict(), sort_keys=True) == json.dumps(
        spread.to_dict(), sort_keys=True
    )
    # a worker's sums travel pickled, with per-dataset flows of different lengths
    parts = plan(spec, min_entries=1)
    branches = Preprocessor(spec).branches
    sums = [a for p in parts for a in fit_partition(spec, branches, p)]
    accs = [pickle.loads(pickle.dumps(a)) for a in sums]  # noqa: S301 (our own bytes)
    total = Accumulator(Program(spec))
    for acc in accs:
        total.merge(acc)
    assert total.info().cutflow == local.cutflow
    assert {ds: len(c) for ds, c in total.flow.items()} == {"ttH": 3, "ttbar": 3, "QCD": 3}


def test_apply_runs_the_global_steps_unless_given_a_dataset(files: dict[str, Path]) -> None:
    spec = validate_spec(three_classes(files))
    with uproot.open(files["signal"]) as f:
        arrays = f["Events"].arrays(entry_stop=500)
    columns = dict(zip(ak.fields(arrays), ak.unzip(arrays), strict=True))
    nj = ak.to_numpy(arrays.nJet)
    plain = Program(spec, purpose="apply", identifiers=[])
    mine = Program(spec, purpose="apply", identifiers=[], dataset="ttH")
    a, b = plain.apply(columns), mine.apply(columns)
    np.testing.assert_array_equal(a.passed, nj >= 2)  # the global cut only
    np.testing.assert_array_equal(b.passed, nj >= 4)  # and ttH's own cut
    nlep = ak.to_numpy(arrays.nMuon + arrays.nElectron)
    np.testing.assert_array_equal(a.X[:, 1], nlep[nj >= 2])
    np.testing.assert_array_equal(b.X[:, 1], ak.to_numpy(arrays.nMuon)[nj >= 4])
    with pytest.raises(SpecError, match=r"no dataset 'tth'.*closest: 'ttH'"):
        Program(spec, purpose="apply", dataset="tth")


def test_a_spec_with_per_dataset_steps_round_trips(files: dict[str, Path]) -> None:
    spec = validate_spec(three_classes(files))
    again = PipelineSpec.model_validate(copy.deepcopy(spec.model_dump(mode="json")))
    assert again == spec
    assert spec.model_dump(mode="json")["data"]["datasets"][0]["class"] == "ttH"


def test_a_dataset_weight_may_use_the_dataset_s_own_defines(files: dict[str, Path]) -> None:
    raw = three_classes(files)
    raw["data"]["datasets"][0]["define"]["kfactor"] = "where(nJet > 5, 1.5, 1.0)"
    raw["data"]["datasets"][0]["weight"] = "kfactor"
    raw["data"]["datasets"][1]["weight"] = "nLepton"
    prep = Preprocessor(validate_spec(raw))
    w = {ds: np.concatenate([r.w for r in prep.chunks([ds])]) for ds in ("ttH", "ttbar")}
    x = {ds: np.concatenate([r.X for r in prep.chunks([ds])]) for ds in ("ttH", "ttbar")}
    assert set(np.unique(w["ttH"]).tolist()) == {1.0, 1.5}
    np.testing.assert_array_equal(w["ttbar"], x["ttbar"][:, 1])  # nLepton, >= 1 there
    raw["data"]["datasets"][1]["weight"] = "kfactor"  # ttH's define: unknown for ttbar
    with pytest.raises(ExpressionError, match=r"in data\.datasets\[ttbar\]\.weight: unknown"):
        Preprocessor(validate_spec(raw)).fit()
