from __future__ import annotations

from pathlib import Path

import awkward as ak
import pytest
import uproot

RNTUPLE_EVENTS = 1500


@pytest.fixture(scope="session")
def rntuple_file(tmp_path_factory: pytest.TempPathFactory, sample_files: dict[str, Path]) -> Path:
    """The first 1500 events of the signal sample as an RNTuple (fields ``Jet.pt``, ...)."""
    with uproot.open(sample_files["signal"]) as f:
        arrays = f["Events"].arrays(entry_stop=RNTUPLE_EVENTS)
    content: dict[str, ak.Array] = {}
    for coll in ("Jet", "Muon", "Electron"):
        fields = [n for n in arrays.fields if n.startswith(coll + "_")]
        content[coll] = ak.zip({n[len(coll) + 1 :]: arrays[n] for n in fields})
    grouped = {n for n in arrays.fields if n.split("_")[0] in content}
    counters = {f"n{c}" for c in content}  # RNTuple collections carry their own sizes
    for name in arrays.fields:
        if name not in grouped and name not in counters:
            content[name] = arrays[name]
    path = tmp_path_factory.mktemp("rntuple") / "signal_rntuple.root"
    with uproot.recreate(path) as f:
        f["Events"] = content  # a dict of awkward arrays: uproot writes an RNTuple
    return path
