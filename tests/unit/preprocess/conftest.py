"""Small hand-made NanoAOD-like chunks and an in-memory stream for the preprocess tests."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np
import pytest

from mlaas4hep.spec import DataSpec, PipelineSpec, validate_spec


def make_events(n: int, seed: int, *, signal: bool) -> ak.Array:
    """n events with run/luminosityBlock/event, MET, jets and muons (a record array)."""
    rng = np.random.default_rng(seed)
    njet = rng.poisson(5.0 if signal else 3.0, n).astype(np.int32)
    nmu = rng.poisson(0.6, n).astype(np.int32)
    tot, totmu = int(njet.sum()), int(nmu.sum())
    jet = {
        "pt": rng.exponential(50.0 if signal else 30.0, tot).astype(np.float32) + 20,
        "eta": rng.normal(0, 1.5, tot).astype(np.float32),
        "phi": rng.uniform(-np.pi, np.pi, tot).astype(np.float32),
        "btagDeepB": rng.uniform(0, 1, tot).astype(np.float32),
    }
    cols: dict[str, Any] = {
        "run": np.full(n, 1, dtype=np.uint32),
        "luminosityBlock": (np.arange(n) // 100 + 1).astype(np.uint32),
        "event": (np.arange(n, dtype=np.uint64) * 2 + (1 if signal else 0) + seed * 10_000_000),
        "MET_pt": rng.exponential(40.0 if signal else 25.0, n).astype(np.float32),
        "nJet": njet,
        "nMuon": nmu,
        "genWeight": rng.choice([1.0, -1.0], n, p=[0.9, 0.1]).astype(np.float32),
    }
    for k, v in jet.items():
        cols[f"Jet_{k}"] = ak.unflatten(v, njet)
    cols["Muon_pt"] = ak.unflatten(rng.exponential(20, totmu).astype(np.float32) + 5, nmu)
    return ak.Array(cols)


@dataclass(frozen=True)
class FakeChunk:
    arrays: ak.Array
    dataset: str
    file: str
    entry_start: int
    entry_stop: int


class FakeSource:
    """An in-memory replacement of ``mlaas4hep.data``: files are arrays, chunked by step_size."""

    def __init__(self, files: dict[str, list[tuple[str, ak.Array]]]) -> None:
        self.files = files  # dataset -> [(file name, events)]
        self.reads: list[tuple[str, int]] = []

    def names(self, data: DataSpec) -> list[str]:
        first = next(iter(self.files.values()))[0][1]
        return list(ak.fields(first))

    def stream(
        self, data: DataSpec, branches: Sequence[str], datasets: Sequence[str] | None
    ) -> Iterator[FakeChunk]:
        for ds in data.datasets:
            if datasets is not None and ds.name not in datasets:
                continue
            yield from self._dataset(data, ds.name, branches)

    def _dataset(self, data: DataSpec, name: str, branches: Sequence[str]) -> Iterator[FakeChunk]:
        left = data.max_events or 10**18
        for fname, events in self.files[name]:
            for start in range(0, len(events), data.step_size):
                stop = min(start + data.step_size, len(events), start + left)
                if stop <= start:
                    return
                left -= stop - start
                self.reads.append((fname, start))
                yield FakeChunk(events[start:stop][list(branches)], name, fname, start, stop)


def spec_dict(**preprocess: Any) -> dict[str, Any]:
    pre = {
        "define": {"HT": "sum(Jet_pt[Jet_pt > 30])", "nGoodJet": "count(Jet_pt[Jet_pt > 30])"},
        "cuts": ["nGoodJet >= 2", "MET_pt > 10"],
        "features": {
            "scalars": ["MET_pt", "HT", "nGoodJet"],
            "objects": {
                "Jet": {"fields": ["pt", "eta"], "sort_by": "pt", "length": 4, "mask": True}
            },
        },
    }
    pre.update(preprocess)
    return {
        "name": "test",
        "data": {
            "tree": "Events",
            "datasets": [
                {"name": "sig", "files": ["sig.root"], "label": 1},
                {"name": "bkg", "files": ["bkg.root"], "label": 0},
            ],
            "step_size": 300,
        },
        "preprocess": pre,
    }


@pytest.fixture
def source() -> FakeSource:
    return FakeSource(
        {
            "sig": [
                ("sig_a.root", make_events(700, 1, signal=True)),
                ("sig_b.root", make_events(500, 2, signal=True)),
            ],
            "bkg": [("bkg_a.root", make_events(900, 3, signal=False))],
        }
    )


def make_spec(**preprocess: Any) -> PipelineSpec:
    return validate_spec(spec_dict(**preprocess))
