from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from mlaas4hep.data.samples import write_sample
from mlaas4hep.errors import SpecError

NANO = {
    "run": "uint32",
    "luminosityBlock": "uint32",
    "event": "uint64",
    "MET_pt": "float32",
    "MET_phi": "float32",
    "nJet": "int32",
    "Jet_pt": "float32",
    "Jet_eta": "float32",
    "Jet_phi": "float32",
    "Jet_mass": "float32",
    "Jet_btagDeepB": "float32",
    "nMuon": "int32",
    "Muon_pt": "float32",
    "Muon_eta": "float32",
    "Muon_phi": "float32",
    "Muon_charge": "int32",
    "nElectron": "int32",
    "Electron_pt": "float32",
    "Electron_eta": "float32",
    "Electron_phi": "float32",
    "genWeight": "float32",
}


def _arrays(path: Path) -> ak.Array:
    with uproot.open(path) as f:
        return f["Events"].arrays()


def test_nanoaod_layout(sample_files: dict[str, Path]) -> None:
    with uproot.open(sample_files["signal"]) as f:
        assert f.classnames() == {"Events;1": "TTree"}
        tree = f["Events"]
        assert tree.keys() == list(NANO)
        assert tree["Jet_pt"].count_branch.name == "nJet"
        arrays = tree.arrays()
        types = {k: str(ak.flatten(arrays[k], axis=None).type.content) for k in NANO}
        assert types == NANO
        assert f.file.compression.__class__.__name__ == "ZSTD"


def test_signal_and_background_differ_and_never_share_ids(
    sample_files: dict[str, Path],
) -> None:
    sig, bkg = _arrays(sample_files["signal"]), _arrays(sample_files["background"])
    for a in (sig, bkg):
        assert len(np.unique(a.event)) == len(a)
        assert ak.all(a.nJet == ak.num(a.Jet_pt))
        assert ak.all(a.Jet_pt[:, :-1] >= a.Jet_pt[:, 1:])  # pt-ordered like NanoAOD
    assert not set(sig.event.to_list()) & set(bkg.event.to_list())
    assert ak.mean(sig.nJet) > ak.mean(bkg.nJet) + 1
    nb = lambda a: ak.mean(ak.sum(a.Jet_btagDeepB > 0.5, axis=1))  # noqa: E731
    assert nb(sig) > 1.5 * nb(bkg)
    # overlapping, not separable: plenty of background events look like signal
    assert ak.mean(bkg.nJet >= 6) > 0.1


def test_deterministic_and_chunked(tmp_path: Path) -> None:
    a = write_sample(tmp_path / "a.root", "background", 2500, seed=3, basket_entries=1000)
    b = write_sample(tmp_path / "b.root", "background", 2500, seed=3, basket_entries=1000)
    c = write_sample(tmp_path / "c.root", "background", 2500, seed=4, basket_entries=1000)
    assert ak.array_equal(_arrays(a), _arrays(b))
    assert not ak.array_equal(_arrays(a).MET_pt, _arrays(c).MET_pt)
    with uproot.open(a) as f:
        assert f["Events"].num_entries == 2500
        assert f["Events"]["Jet_pt"].num_baskets == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.root", "b.root", "c.root"]


@pytest.mark.parametrize(
    ("kind", "events"), [("ttbar", 10), ("signal", -1)], ids=["bad-kind", "negative-events"]
)
def test_bad_arguments(tmp_path: Path, kind: str, events: int) -> None:
    with pytest.raises(SpecError, match=repr(kind) if kind == "ttbar" else "events"):
        write_sample(tmp_path / "x.root", kind, events)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
