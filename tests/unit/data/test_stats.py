from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
from hypothesis import given, settings
from hypothesis import strategies as st

from mlaas4hep.data import stats as stats_mod
from mlaas4hep.data.samples import write_sample
from mlaas4hep.data.stats import OVERALL, CollectionStats, ScalarStats, first_pass
from mlaas4hep.errors import BranchNotFoundError
from mlaas4hep.spec import DataSpec

floats = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(floats, min_size=1, max_size=200), st.data())
def test_merge_of_any_split_equals_the_whole(values: list[float], data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(values)))
    whole = ScalarStats().update(np.array(values))
    parts = (
        ScalarStats()
        .update(np.array(values[:cut]))
        .merge(ScalarStats().update(np.array(values[cut:])))
    )
    assert parts.count == whole.count == len(values)
    assert parts.min == min(values)
    assert parts.max == max(values)
    assert math.isclose(parts.mean, float(np.mean(values)), rel_tol=1e-9, abs_tol=1e-6)
    assert math.isclose(parts.std, float(np.std(values)), rel_tol=1e-6, abs_tol=1e-4)


def test_non_finite_values_are_counted_apart() -> None:
    s = ScalarStats().update(np.array([1.0, np.nan, np.inf, -np.inf, 3.0]))
    assert (s.count, s.nan, s.inf, s.min, s.max, s.mean, s.std) == (2, 1, 2, 1.0, 3.0, 2.0, 1.0)
    assert math.isclose(s.sumsq, 10.0)
    empty = ScalarStats().update(np.array([np.nan]))
    assert empty.count == 0
    assert math.isnan(empty.mean)
    assert empty.summary()["min"] is None
    back = ScalarStats.from_dict(json.loads(json.dumps(s.merge(empty).to_dict())))
    assert back == s.merge(empty)
    assert back.nan == 2


def test_collection_stats() -> None:
    pt = ak.Array([[50.0, 30.0], [], [40.0, 20.0, 10.0], [25.0]])
    arrays = ak.zip({"Jet_pt": pt}, depth_limit=1)
    c = (
        CollectionStats()
        .update(arrays[:2], ["Jet_pt"])
        .merge(CollectionStats().update(arrays[2:], ["Jet_pt"]))
    )
    assert c.multiplicity == {0: 1, 1: 1, 2: 1, 3: 1}
    assert c.max_multiplicity == 3
    assert c.events == 4
    assert c.fields["Jet_pt"].count == 6
    assert c.fields["Jet_pt"].mean == 175.0 / 6
    assert CollectionStats.from_dict(json.loads(json.dumps(c.to_dict()))) == c


BRANCHES = ["MET_pt", "nJet", "Jet_pt", "Jet_btagDeepB", "Muon_charge"]


def test_first_pass_matches_numpy(sample_data_spec: DataSpec, sample_files) -> None:
    result = first_pass(sample_data_spec, BRANCHES)
    assert set(result) == {"signal", "background", OVERALL}
    assert result[OVERALL].entries == 6000
    with uproot.open(sample_files["signal"]) as f:
        a = f["Events"].arrays(BRANCHES)
    sig = result["signal"]
    assert math.isclose(sig.scalars["MET_pt"].mean, float(np.mean(a.MET_pt)), rel_tol=1e-6)
    assert math.isclose(sig.scalars["MET_pt"].std, float(np.std(a.MET_pt)), rel_tol=1e-5)
    assert sig.scalars["nJet"].max == ak.max(a.nJet)
    jets = sig.collections["Jet"]
    assert jets.max_multiplicity == ak.max(ak.num(a.Jet_pt))
    assert jets.multiplicity == dict(
        zip(*np.unique(ak.num(a.Jet_pt).to_numpy(), return_counts=True), strict=True)
    )
    assert jets.fields["Jet_pt"].min == ak.min(a.Jet_pt)
    assert set(sig.collections) == {"Jet", "Muon"}
    assert sig.collections["Muon"].fields["Muon_charge"].max == 1
    total = result[OVERALL].scalars["MET_pt"]
    assert total.count == 6000
    assert total.max == max(result["signal"].scalars["MET_pt"].max,
                            result["background"].scalars["MET_pt"].max)  # fmt: skip


def test_first_pass_max_events_and_missing_branch(sample_data_spec: DataSpec) -> None:
    spec = sample_data_spec.model_copy(update={"max_events": 1234})
    result = first_pass(spec, ["MET_pt"], datasets=["background"])
    assert result["background"].entries == result[OVERALL].entries == 1234
    assert "signal" not in result
    with pytest.raises(BranchNotFoundError, match="closest: 'MET_pt'"):
        first_pass(spec, ["MET_Pt"])


def _spec(path: Path) -> DataSpec:
    return DataSpec(datasets=[{"name": "s", "files": [str(path)]}], step_size=500)


def test_cache_is_used_and_never_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_sample(tmp_path / "data" / "s.root", "signal", 1200, seed=1)
    cache = tmp_path / "cache"
    first = first_pass(_spec(path), ["MET_pt", "Jet_pt"], cache_dir=cache)[OVERALL]
    assert len(list(cache.glob("stats-*.json"))) == 1
    assert not list(cache.glob(".*"))  # no temporary file left behind

    def no_reading(*args, **kwargs):
        raise AssertionError("the cache should have answered")

    with monkeypatch.context() as m:
        m.setattr(stats_mod, "iterate_partition", no_reading)
        again = first_pass(_spec(path), ["Jet_pt", "MET_pt"], cache_dir=cache)[OVERALL]
    assert again.to_dict() == first.to_dict()

    # Another branch set is another key.
    other = first_pass(_spec(path), ["MET_pt"], cache_dir=cache)[OVERALL]
    assert set(other.scalars) == {"MET_pt"}
    assert len(list(cache.glob("stats-*.json"))) == 2

    # Rewriting the file (new content, later mtime) must not reuse the old result.
    old = os.stat(path)
    write_sample(path, "signal", 1200, seed=2)
    os.utime(path, ns=(old.st_mtime_ns + 10**9, old.st_mtime_ns + 10**9))
    fresh = first_pass(_spec(path), ["MET_pt", "Jet_pt"], cache_dir=cache)[OVERALL]
    assert fresh.scalars["MET_pt"].mean != first.scalars["MET_pt"].mean


def test_damaged_cache_is_recomputed(tmp_path: Path, sample_files) -> None:
    path = tmp_path / "s.root"
    shutil.copyfile(sample_files["signal"], path)
    cache = tmp_path / "cache"
    good = first_pass(_spec(path), ["MET_pt"], cache_dir=cache)[OVERALL].to_dict()
    (entry,) = cache.glob("stats-*.json")
    entry.write_text("{not json")
    assert first_pass(_spec(path), ["MET_pt"], cache_dir=cache)[OVERALL].to_dict() == good
    doc = json.loads(entry.read_text())
    doc["stats"]["entries"] = 1
    doc["key"]["branches"] = ["forged"]
    entry.write_text(json.dumps(doc))
    assert first_pass(_spec(path), ["MET_pt"], cache_dir=cache)[OVERALL].to_dict() == good


def test_first_pass_on_rntuple_equals_ttree(rntuple_file: Path, sample_files) -> None:
    names = ["MET_pt", "nJet", "Jet_pt", "Muon_charge"]
    spec_rn = _spec(rntuple_file)
    spec_tt = _spec(sample_files["signal"]).model_copy(update={"max_events": 1500})
    got = first_pass(spec_rn, names)[OVERALL].to_dict()
    want = first_pass(spec_tt, names)[OVERALL].to_dict()
    assert got == want
    assert got["entries"] == 1500
