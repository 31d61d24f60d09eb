"""The first pass reports its progress: entries read so far and the entries in all, counted
from the files' metadata (``max_events`` honoured), locally and partition by partition."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import yaml

from mlaas4hep.data.samples import write_sample, write_sample_set
from mlaas4hep.data.stream import count_entries, stream
from mlaas4hep.preprocess.partitioned import SerialDistributor
from mlaas4hep.preprocess.pipeline import Preprocessor
from mlaas4hep.spec import PipelineSpec

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "tth-vs-qcd.yaml"


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> PipelineSpec:
    root = tmp_path_factory.mktemp("firstpass")
    files = write_sample_set(root, 2500, seed=5)
    extra = write_sample(root / "signal_2.root", "signal", 1300, seed=6)
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["data"]["datasets"][0]["files"] = [str(files["signal"]), str(extra)]
    raw["data"]["datasets"][1]["files"] = [str(files["background"])]
    raw["data"]["step_size"] = 700
    raw["data"]["max_events"] = 3500  # ttH: 2500 + 1000 of 1300; QCD: all 2500
    return PipelineSpec.model_validate(raw)


def test_entries_are_counted_from_the_metadata_up_to_max_events(spec: PipelineSpec) -> None:
    assert count_entries(spec.data) == 6000
    assert count_entries(spec.data, datasets=["QCD"]) == 2500
    stop = threading.Event()
    stop.set()
    assert count_entries(spec.data, stop=stop) is None  # no longer wanted


@pytest.mark.parametrize("where", ["local", "partitions"])
def test_the_first_pass_reports_entries_read_and_the_total(spec: PipelineSpec, where: str) -> None:
    distributor = SerialDistributor() if where == "partitions" else None
    seen: list[tuple[int, int | None]] = []
    info = Preprocessor(spec, distributor=distributor).fit(
        progress=lambda read, total: seen.append((read, total))
    )
    read = [r for r, _ in seen]
    assert read == sorted(read)
    assert read[0] > 0
    assert seen[-1] == (6000, 6000)
    assert sum(e["read"] for e in info.events.values()) == 6000
    assert {t for _, t in seen} <= {None, 6000}
    if where == "local":  # one report per 700-entry chunk, then the final one
        assert len(seen) == 10 + 1
        assert read[:2] == [700, 1400]


def test_a_cached_first_pass_reports_nothing(spec: PipelineSpec, tmp_path: Path) -> None:
    Preprocessor(spec, cache_dir=tmp_path).fit()
    seen: list[tuple[int, int | None]] = []
    Preprocessor(spec, cache_dir=tmp_path).fit(progress=lambda r, t: seen.append((r, t)))
    assert seen == []


def test_an_injected_stream_is_not_counted_against_the_files(spec: PipelineSpec) -> None:
    real = Preprocessor(spec)
    seen: list[int | None] = []
    injected = Preprocessor(
        spec,
        stream_fn=lambda data, branches, datasets: stream(data, branches, datasets=datasets),
        names_fn=lambda _: real.branches,
    )
    injected.fit(progress=lambda _, total: seen.append(total))
    assert seen[:-1] == [None] * (len(seen) - 1)  # no count: another data source
    assert seen[-1] == 6000  # the end still says how many were read
