from __future__ import annotations

import shutil
from pathlib import Path

import awkward as ak
import pytest
import uproot

from mlaas4hep.data import stream as stream_module
from mlaas4hep.data.stream import iterate_file, iterate_partition, partitions, stream
from mlaas4hep.errors import BranchNotFoundError, SpecError
from mlaas4hep.spec import DataSpec

BRANCHES = ["Jet_pt", "MET_pt", "nJet", "event", "Muon_charge"]


def _uproot(path: Path, names: list[str], stop: int | None = None) -> ak.Array:
    with uproot.open(path) as f:
        return f["Events"].arrays(filter_name=names, entry_stop=stop)


def test_iterate_file_equals_uproot(sample_files: dict[str, Path]) -> None:
    chunks = list(iterate_file(str(sample_files["signal"]), None, BRANCHES, 700, dataset="s"))
    assert [(c.entry_start, c.entry_stop) for c in chunks] == [
        (0, 700), (700, 1400), (1400, 2100), (2100, 2800), (2800, 3000),
    ]  # fmt: skip
    assert all(c.arrays.fields == BRANCHES and c.dataset == "s" for c in chunks)
    got = ak.concatenate([c.arrays for c in chunks])
    want = _uproot(sample_files["signal"], BRANCHES)
    for name in BRANCHES:
        assert ak.array_equal(got[name], want[name])
    assert str(got.type.content) == (
        "{Jet_pt: var * float32, MET_pt: float32, nJet: int32, event: uint64, "
        "Muon_charge: var * int32}"
    )


def test_entry_range(sample_files: dict[str, Path]) -> None:
    path = str(sample_files["signal"])
    chunks = list(iterate_file(path, "Events", ["MET_pt"], 400, entry_start=100, entry_stop=900))
    assert [(c.entry_start, len(c)) for c in chunks] == [(100, 400), (500, 400)]
    assert list(iterate_file(path, None, ["MET_pt"], 10, entry_start=3000)) == []
    clipped = list(iterate_file(path, None, ["MET_pt"], 10_000, entry_stop=10**9))
    assert len(clipped[0]) == 3000


def test_stream_datasets_labels_and_exact_max_events(
    tmp_path: Path, sample_files: dict[str, Path]
) -> None:
    for i in range(3):  # three files of 3000 events: max_events spans file boundaries
        shutil.copyfile(sample_files["background"], tmp_path / f"bkg_{i}.root")
    spec = DataSpec(
        datasets=[
            {"name": "sig", "files": [str(sample_files["signal"])], "label": 1},
            {"name": "bkg", "files": [str(tmp_path / "bkg_*.root")], "label": 0.0},
        ],
        step_size=1000,
        max_events=7500,
    )
    chunks = list(stream(spec, ["MET_pt"]))
    per = {ds: sum(len(c) for c in chunks if c.dataset == ds) for ds in ("sig", "bkg")}
    assert per == {"sig": 3000, "bkg": 7500}
    assert all(len(c) <= 1000 for c in chunks)
    assert {(c.dataset, c.label) for c in chunks} == {("sig", 1), ("bkg", 0.0)}
    assert [c.file for c in chunks if c.dataset == "bkg"][-1].endswith("bkg_2.root")
    only = list(stream(spec, ["MET_pt"], datasets=["bkg"]))
    assert {c.dataset for c in only} == {"bkg"}
    with pytest.raises(SpecError, match=r"'bgk'.*closest: 'bkg'"):
        list(stream(spec, ["MET_pt"], datasets=["bgk"]))


def test_partitions_cover_what_stream_reads(sample_data_spec: DataSpec) -> None:
    spec = sample_data_spec.model_copy(update={"max_events": 2500, "step_size": 1000})
    parts = partitions(spec)
    assert [(p.dataset, p.entry_start, p.entry_stop) for p in parts] == [
        ("signal", 0, 1000), ("signal", 1000, 2000), ("signal", 2000, 2500),
        ("background", 0, 1000), ("background", 1000, 2000), ("background", 2000, 2500),
    ]  # fmt: skip
    from_parts = [c for p in parts for c in iterate_partition(p, ["event"], 400)]
    streamed = list(stream(spec, ["event"]))
    assert ak.array_equal(
        ak.concatenate([c.arrays for c in from_parts]),
        ak.concatenate([c.arrays for c in streamed]),
    )
    assert len(partitions(spec, split=False)) == 2


def test_missing_branch_and_no_expression_evaluation(sample_files: dict[str, Path]) -> None:
    path = str(sample_files["signal"])
    with pytest.raises(BranchNotFoundError, match="'Jet_PT': closest: 'Jet_pt'"):
        next(iterate_file(path, None, ["MET_pt", "Jet_PT"], 100))
    # Names are matched exactly, never handed to uproot's expression engine (eval).
    for evil in ["__import__('os').system('false')", "MET_pt * 2", "Jet_*"]:
        with pytest.raises(BranchNotFoundError):
            next(iterate_file(path, None, [evil], 100))


@pytest.mark.parametrize(
    ("branches", "step", "match"),
    [([], 10, "no branches"), (["MET_pt"], 0, "step_size"), (["MET_pt"], "10 MB", "step_size")],
)
def test_bad_requests(sample_files: dict[str, Path], branches, step, match) -> None:
    with pytest.raises(SpecError, match=match):
        next(iterate_file(str(sample_files["signal"]), None, branches, step))


def test_rntuple_reads_like_the_ttree(rntuple_file: Path, sample_files: dict[str, Path]) -> None:
    names = ["nJet", "Jet_pt", "MET_pt", "Muon_charge"]
    got = ak.concatenate([c.arrays for c in iterate_file(str(rntuple_file), None, names, 600)])
    want = _uproot(sample_files["signal"], names, stop=1500)
    assert got.fields == names
    assert len(got) == 1500
    for name in names:
        assert ak.array_equal(got[name], want[name], check_parameters=False)


class _Clusters:
    """A tree whose wanted branches share basket boundaries at *bounds*."""

    def __init__(self, bounds: list[int]) -> None:
        self.bounds = bounds

    def common_entry_offsets(self, filter_name: object) -> list[int]:
        return self.bounds


@pytest.mark.parametrize(
    ("bounds", "start", "stop", "step", "expected"),
    [
        # clusters of 300: chunks end on the last boundary in their second half
        ([0, 300, 600, 900, 1200], 0, 1200, 500, [(0, 300), (300, 600), (600, 900), (900, 1200)]),
        # a start inside a cluster, a stop before the end
        ([0, 100, 200, 300, 400], 150, 380, 200, [(150, 300), (300, 380)]),
        # baskets longer than half a chunk: chunks would share them, so no ranges
        ([0, 5000], 0, 5000, 2000, None),
        # ... unless one chunk covers it all
        ([0, 5000], 0, 5000, 8000, [(0, 5000)]),
    ],
)
def test_cluster_ranges_end_on_shared_basket_boundaries(
    bounds: list[int],
    start: int,
    stop: int,
    step: int,
    expected: list[tuple[int, int]] | None,
) -> None:
    tree = _Clusters(bounds)
    assert stream_module._cluster_ranges(tree, frozenset(), start, stop, step) == expected
