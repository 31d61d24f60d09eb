"""Conversion of old MLaaS4HEP inputs (params.json, preproc.json, files/labels.txt)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlaas4hep.errors import SpecError
from mlaas4hep.preprocess.legacy import LegacyInputs, LegacySchema, convert, read_inputs
from mlaas4hep.spec import load_spec

SCHEMA = LegacySchema(
    names=("run", "event", "luminosityBlock", "MET_pt", "nJet", "Jet_pt", "Jet_eta", "Jet_mass",
           "nMuon", "Muon_pt"),
    jagged=frozenset({"Jet_pt", "Jet_eta", "Jet_mass", "Muon_pt"}),
    max_counts={"Jet_pt": 9, "Jet_eta": 9, "Jet_mass": 9, "Muon_pt": 3},
)  # fmt: skip
PARAMS = {
    "nevts": 30000,
    "shuffle": True,
    "chunk_size": 10000,
    "epochs": 5,
    "batch_size": 100,
    "identifier": ["run", "event", "luminosityBlock"],
    "branch": "Events",
    "selected_branches": "",
    "exclude_branches": "Muon_pt",
    "hist": "pdfs",
    "redirector": "root://cms-xrd-global.cern.ch",
    "verbose": 1,
}
PREPROC = {
    "new_branch": {
        "jet_ht": {"def": "Jet_pt*2", "type": "jagged", "cut_1": ["jet_ht<500", "all"],
                   "cut_2": ["jet_ht>20", "any"], "remove": "False",
                   "keys_to_remove": ["Jet_mass"]},
        "met_log": {"def": "np.log(MET_pt + 1)", "type": "flat", "cut_1": "met_log > 1",
                    "remove": "True"},
    },
    "flat_cut": {"nMuon": {"cut": "1<=nMuon<=4", "remove": "False"}},
    "jagged_cut": {"Jet_eta": {"cut": ["Jet_eta<2.4", "all"], "remove": "False"}},
}  # fmt: skip
FILES = ["/store/mc/ttH.root", "local/bkg1.root", "local/bkg2.root"]
LABELS = ["1", "0", "0"]


def test_full_conversion() -> None:
    spec = convert(LegacyInputs(PARAMS, FILES, LABELS, PREPROC, "model.py"), SCHEMA)
    data = spec.data
    assert [(d.name, d.files, d.label) for d in data.datasets] == [
        ("background", ["local/bkg1.root", "local/bkg2.root"], 0),
        ("signal", ["/store/mc/ttH.root"], 1),
    ]
    assert data.tree == "Events"
    assert data.redirector == "root://cms-xrd-global.cern.ch"
    assert (data.step_size, data.max_events) == (10000, 15000)
    assert data.identifiers == ["run", "event", "luminosityBlock"]
    pre = spec.preprocess
    # jet_ht derives from Jet_pt: a field of Jet (reached through an alias), not a "jet"
    assert pre.define == {
        "jet_ht": "Jet_pt*2", "met_log": "log(MET_pt + 1)", "Jet_jet_ht": "jet_ht"
    }  # fmt: skip
    assert pre.cuts == [
        "all(jet_ht<500)", "any(jet_ht>20)", "met_log > 1", "1<=nMuon<=4", "all(Jet_eta<2.4)"
    ]  # fmt: skip
    assert pre.features.scalars == ["MET_pt", "nJet", "nMuon"]  # met_log removed
    jet = pre.features.objects["Jet"]
    assert (jet.fields, jet.length, jet.pad, jet.sort_by, jet.mask) == (
        ["pt", "eta", "jet_ht"],
        9,
        0.0,
        None,
        False,
    )  # Jet_mass dropped by keys_to_remove, Muon_pt excluded
    assert set(pre.features.objects) == {"Jet"}
    assert pre.normalize == "minmax"
    assert (spec.train.epochs, spec.train.batch_size) == (5, 100)
    assert (spec.model.kind, spec.model.module, spec.model.function, spec.model.framework) == (
        "python", "model.py", "model", "keras"
    )  # fmt: skip
    assert load_spec(spec.to_yaml()) == spec


def test_selected_branches_as_list_and_all_events() -> None:
    params = {**PARAMS, "selected_branches": ["MET_pt", "Jet_pt"], "exclude_branches": [],
              "nevts": -1}  # fmt: skip
    spec = convert(LegacyInputs(params, FILES, LABELS), SCHEMA)
    assert spec.data.max_events is None
    assert spec.preprocess.features.scalars == ["MET_pt"]
    assert spec.preprocess.features.objects["Jet"].fields == ["pt"]
    assert spec.model.kind == "mlp"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"labels": ["1", "0"]}, "matched line by line"),
        ({"labels": ["1", "x", "0"]}, "'x'"),
        ({"params": {**PARAMS, "selected_branches": "MET_pt,Jet_ptt"}}, "'Jet_ptt'"),
        ({"preproc": {"new_branch": {"a": {"def": "__import__('os')"}}}}, "new_branch.a.def"),
        ({"preproc": {"flat_cut": {"nMuon": {"cut": "nMuon.real > 1"}}}}, "attribute access"),
        ({"preproc": {"jagged_cut": {"Jet_eta": {"cut": ["Jet_eta<2", "most"]}}}}, "'all'|'any'"),
        ({"preproc": {"new_cut": {}}}, "unknown sections"),
    ],
)
def test_bad_inputs_are_spec_errors(change: dict[str, object], message: str) -> None:
    kwargs = {"params": PARAMS, "files": FILES, "labels": LABELS, "preproc": None, **change}
    with pytest.raises(SpecError) as info:
        convert(LegacyInputs(**kwargs), SCHEMA)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_read_inputs_from_files(tmp_path: Path) -> None:
    (tmp_path / "params.json").write_text(json.dumps(PARAMS))
    (tmp_path / "preproc.json").write_text(json.dumps(PREPROC))
    (tmp_path / "files.txt").write_text("\n".join(FILES) + "\n\n# a comment\n")
    (tmp_path / "labels.txt").write_text("1\n0\n0\n")
    inputs = read_inputs(tmp_path / "params.json", tmp_path / "files.txt",
                         tmp_path / "labels.txt", tmp_path / "preproc.json")  # fmt: skip
    # relative entries are relative to files.txt's directory, like @list.txt in a spec
    assert inputs.files == [FILES[0], *(str(tmp_path / f) for f in FILES[1:])]
    assert inputs.labels == LABELS
    assert inputs.preproc == PREPROC
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(SpecError, match="as JSON"):
        read_inputs(tmp_path / "bad.json", tmp_path / "files.txt", tmp_path / "labels.txt")
