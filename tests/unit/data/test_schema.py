from __future__ import annotations

from pathlib import Path

import pytest

from mlaas4hep.data import schema as schema_module
from mlaas4hep.data.schema import inspect_tree
from mlaas4hep.errors import BranchNotFoundError, NotRootFileError


def test_ttree_schema(sample_files: dict[str, Path]) -> None:
    schema = inspect_tree(str(sample_files["signal"]))
    assert (schema.tree, schema.entries) == ("Events", 3000)
    assert schema.names()[:3] == ["run", "luminosityBlock", "event"]
    kinds = {b.name: (b.kind, b.collection, b.dtype) for b in schema.branches}
    assert kinds["MET_pt"] == ("flat", None, "float32")
    assert kinds["event"] == ("flat", None, "uint64")
    assert kinds["nJet"] == ("counter", "Jet", "int32")
    assert kinds["Jet_pt"] == ("jagged", "Jet", "float32")
    assert kinds["Muon_charge"] == ("jagged", "Muon", "int32")
    assert schema.collections() == {
        "Jet": ["Jet_pt", "Jet_eta", "Jet_phi", "Jet_mass", "Jet_btagDeepB"],
        "Muon": ["Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge"],
        "Electron": ["Electron_pt", "Electron_eta", "Electron_phi"],
    }
    jet = schema.branch("Jet_pt")
    assert 0 < jet.compressed_bytes < jet.uncompressed_bytes
    assert schema.compressed_bytes < sample_files["signal"].stat().st_size
    assert schema.to_dict()["branches"][0]["name"] == "run"


def test_missing_branches_name_the_closest(sample_files: dict[str, Path]) -> None:
    schema = inspect_tree(str(sample_files["signal"]), "Events")
    schema.require(["Jet_pt", "nJet"])
    with pytest.raises(BranchNotFoundError, match=r"'Jet_btag': closest: .*'Jet_btagDeepB'"):
        schema.require(["MET_pt", "Jet_btag"])
    with pytest.raises(BranchNotFoundError, match="closest: 'MET_pt'"):
        schema.branch("MET_Pt")


def test_rntuple_schema_uses_nanoaod_names(rntuple_file: Path) -> None:
    schema = inspect_tree(str(rntuple_file))
    assert schema.entries == 1500
    assert schema.branch("Jet_pt").kind == "jagged"
    assert schema.branch("nJet").kind == "counter"
    assert schema.branch("MET_pt").kind == "flat"
    assert schema.collections()["Muon"] == ["Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge"]


def test_a_tree_listing_no_branches_is_a_damaged_file(
    sample_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Damaged metadata can read back as an empty branch list (uproot cannot write one).
    monkeypatch.setattr(schema_module, "_ttree_branches", lambda tree: [])
    with pytest.raises(NotRootFileError, match=r"signal\.root'?: tree 'Events' lists no branches"):
        inspect_tree(str(sample_files["signal"]))
