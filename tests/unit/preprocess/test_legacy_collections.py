"""convert-legacy: derived jagged branches join their source collection; files.txt paths.

A legacy ``new_branch`` such as ``log_Jet_pt = log(Jet_pt)`` has as many values per event
as ``nJet`` counts, so it must be a field of ``Jet`` with ``Jet``'s padding, never a
collection ``log`` cut out of its name. ``files.txt`` entries are relative to the
directory of ``files.txt``, like ``@list.txt`` entries in a spec.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlaas4hep.cli import main
from mlaas4hep.data.samples import write_sample_set
from mlaas4hep.errors import SpecError
from mlaas4hep.preprocess.legacy import LegacyInputs, LegacySchema, convert, read_inputs
from mlaas4hep.preprocess.pipeline import Preprocessor
from mlaas4hep.spec import load_spec

SCHEMA = LegacySchema(
    names=("run", "event", "luminosityBlock", "MET_pt", "nJet", "Jet_pt", "Jet_eta", "nMuon",
           "Muon_pt"),
    jagged=frozenset({"Jet_pt", "Jet_eta", "Muon_pt"}),
    max_counts={"Jet_pt": 14, "Jet_eta": 14, "Muon_pt": 4},
    collections={"Jet_pt": "Jet", "Jet_eta": "Jet", "Muon_pt": "Muon"},
)  # fmt: skip
PARAMS = {"identifier": ["run", "event", "luminosityBlock"], "branch": "Events", "epochs": 2}
FILES, LABELS = ["sig.root", "bkg.root"], ["1", "0"]


def converted(new_branch: dict[str, Any], **params: Any) -> Any:
    inputs = LegacyInputs({**PARAMS, **params}, FILES, LABELS, {"new_branch": new_branch})
    return convert(inputs, SCHEMA).preprocess


def jagged(definition: str, **extra: Any) -> dict[str, Any]:
    return {"def": definition, "type": "jagged", **extra}


def test_a_derived_jagged_branch_is_a_field_of_its_source_collection() -> None:
    pre = converted({"log_Jet_pt": jagged("np.log(Jet_pt)")})
    assert set(pre.features.objects) == {"Jet", "Muon"}  # no collection "log"
    jet = pre.features.objects["Jet"]
    assert jet.fields == ["pt", "eta", "log_Jet_pt"]
    assert jet.length == 14  # Jet's padding, not the default 10
    assert pre.define == {"log_Jet_pt": "log(Jet_pt)", "Jet_log_Jet_pt": "log_Jet_pt"}


def test_a_derived_branch_named_after_its_collection_needs_no_alias() -> None:
    pre = converted({"Jet_ptlog": jagged("log(Jet_pt + 1)")})
    assert pre.features.objects["Jet"].fields == ["pt", "eta", "ptlog"]
    assert pre.define == {"Jet_ptlog": "log(Jet_pt + 1)"}


def test_derived_from_derived_and_from_a_smaller_collection() -> None:
    pre = converted(
        {
            "log_Jet_pt": jagged("log(Jet_pt)", remove="True"),
            "twice_log_Jet_pt": jagged("2 * log_Jet_pt"),
            "mu_rel": jagged("Muon_pt / MET_pt"),
        }
    )
    objects = pre.features.objects
    assert objects["Jet"].fields == ["pt", "eta", "twice_log_Jet_pt"]
    assert (objects["Muon"].fields, objects["Muon"].length) == (["pt", "mu_rel"], 4)
    assert set(objects) == {"Jet", "Muon"}


def test_a_masked_branch_is_a_collection_of_its_own_padded_like_its_source() -> None:
    pre = converted({"good_jet_pt": jagged("Jet_pt[Jet_pt > 30]")})
    own = pre.features.objects["good_jet_pt"]
    assert (own.fields, own.length) == (["value"], 14)
    assert pre.define["good_jet_pt_value"] == "good_jet_pt"
    assert pre.features.objects["Jet"].fields == ["pt", "eta"]


def test_a_per_event_result_is_a_scalar_whatever_its_type_says() -> None:
    pre = converted({"sum_Jet_pt": jagged("sum(Jet_pt)"), "met2": jagged("MET_pt * 2")})
    assert pre.features.scalars[-2:] == ["sum_Jet_pt", "met2"]
    assert set(pre.features.objects) == {"Jet", "Muon"}


def test_mixing_two_collections_is_refused_with_the_reason() -> None:
    with pytest.raises(SpecError, match=r"new_branch\.bad\.def.*'Jet', 'Muon'"):
        converted({"bad": jagged("Jet_pt * Muon_pt")})


def test_an_alias_that_clashes_with_a_branch_is_refused() -> None:
    with pytest.raises(SpecError, match="rename the new_branch"):
        # "pt" would reach Jet through the alias Jet_pt, which is a branch of the tree
        converted({"pt": jagged("Jet_pt * 2")}, selected_branches=["nJet"])


def test_files_txt_entries_are_relative_to_the_list_file(tmp_path: Path) -> None:
    old = tmp_path / "old" / "inputs"
    old.mkdir(parents=True)
    (old / "params.json").write_text(json.dumps(PARAMS))
    (old / "labels.txt").write_text("1\n0\n1\n0\n1\n")
    entries = [
        "sig.root",  # next to files.txt
        "../../data/bkg_*.root",  # a glob, relative too
        "/abs/sig.root",
        "/store/mc/sig.root",  # a logical file name, for the redirector
        "root://host//store/x.root",
    ]
    (old / "files.txt").write_text("\n".join(entries) + "\n")
    inputs = read_inputs(old / "params.json", old / "files.txt", old / "labels.txt")
    assert inputs.files == [
        str(old / "sig.root"),
        str(tmp_path / "data" / "bkg_*.root"),
        "/abs/sig.root",
        "/store/mc/sig.root",
        "root://host//store/x.root",
    ]


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("legacy-collections")
    write_sample_set(root / "data", 1500, seed=5)
    return root


def test_convert_legacy_on_real_files(samples: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole command: a list file in another directory, a derived jagged define."""
    monkeypatch.chdir(samples)
    old = samples / "old"
    old.mkdir(exist_ok=True)
    (old / "params.json").write_text(json.dumps({
        "nevts": 2000, "chunk_size": 1000, "identifier": "run,event,luminosityBlock",
        "branch": "Events", "selected_branches": ["MET_pt", "nJet", "Jet_pt", "Jet_eta"],
    }))  # fmt: skip
    (old / "preproc.json").write_text(json.dumps({
        "new_branch": {"log_Jet_pt": {"def": "np.log(Jet_pt)", "type": "jagged",
                                      "cut_1": ["log_Jet_pt > 1", "all"]}},
    }))  # fmt: skip
    (old / "files.txt").write_text("../data/signal.root\n../data/background.root\n")
    (old / "labels.txt").write_text("1\n0\n")
    args = ["convert-legacy", "--params", "old/params.json", "--preproc", "old/preproc.json",
            "--files", "old/files.txt", "--labels", "old/labels.txt",
            "-o", "pipeline.yaml"]  # fmt: skip
    assert main(args) == 0
    spec = load_spec(samples / "pipeline.yaml")
    assert [d.files for d in spec.data.datasets] == [
        ["data/background.root"],
        ["data/signal.root"],
    ]
    objects = spec.preprocess.features.objects
    assert set(objects) == {"Jet"}
    assert objects["Jet"].fields == ["pt", "eta", "log_Jet_pt"]
    info = Preprocessor(spec).fit()  # the derived field has Jet's counts: it really runs
    length = objects["Jet"].length
    assert f"Jet_log_Jet_pt_{length - 1}" in info.names
    assert not any(n.startswith("log_") for n in info.names)
