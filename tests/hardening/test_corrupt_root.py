"""Corrupted ROOT files: a clear, typed mlaas4hep error, never a raw exception.

A small NanoAOD-like file (several baskets per branch) is truncated at arbitrary offsets and
has bytes overwritten at arbitrary places (hypothesis, a bounded number of examples). Reading
its schema and every entry of every branch either works (a flip in bytes nobody checks) or
raises a ``DataSourceError`` with a one-line message naming the file. Then the same through
the CLI, and through the service: a job on a corrupted upload fails with that message while
a job on good data, submitted at the same time, succeeds.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from hardening_servers import Service
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlaas4hep.cli import main
from mlaas4hep.data.samples import write_sample, write_sample_set
from mlaas4hep.data.schema import inspect_tree
from mlaas4hep.data.stream import iterate_file
from mlaas4hep.errors import DataSourceError

EVENTS = 400
TRUNCATIONS = 200
FLIPS = 300
READ_BUDGET_S = 30.0  # must not hang (uproot takes ~8 s on a basket claiming 4e8 entries)


@pytest.fixture(scope="module")
def good_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("corrupt") / "good.root"
    write_sample(path, "signal", EVENTS, seed=5, basket_entries=100)
    return path.read_bytes()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One directory for every hypothesis example (function-scoped tmp_path would be shared).
    return tmp_path_factory.mktemp("corrupt-examples")


def read_everything(path: Path) -> int:
    """Inspect the file and read every branch of every entry; return the entries read."""
    schema = inspect_tree(str(path), "Events")
    entries = 0
    for chunk in iterate_file(str(path), "Events", schema.names(), 100):
        entries += len(chunk)
    return entries


def outcome(data: bytes, scratch: Path) -> tuple[str, float]:
    """Write *data* to a file, read it all; return ('ok' | error class name, seconds)."""
    with tempfile.NamedTemporaryFile(dir=scratch, suffix=".root", delete=False) as fh:
        fh.write(data)
    path = Path(fh.name)
    start = time.perf_counter()
    try:
        read_everything(path)
    except DataSourceError as exc:
        text = str(exc)
        assert "\n" not in text, text
        assert path.name in text, text
        assert 20 < len(text) < 600, text
        return type(exc).__name__, time.perf_counter() - start
    finally:
        path.unlink()
    return "ok", time.perf_counter() - start


class Tally:
    """Outcomes of the hypothesis examples, for the figures."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.slowest = 0.0

    def add(self, result: tuple[str, float]) -> None:
        self.counts[result[0]] += 1
        self.slowest = max(self.slowest, result[1])
        assert result[1] < READ_BUDGET_S


def test_good_file_reads(good_file: bytes, scratch: Path) -> None:
    assert outcome(good_file, scratch)[0] == "ok"


def test_truncated_files_give_a_typed_error(good_file: bytes, scratch: Path, figures) -> None:
    tally = Tally()

    @settings(max_examples=TRUNCATIONS, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
    @given(st.integers(min_value=0, max_value=len(good_file) - 1))
    def check(cut: int) -> None:
        result = outcome(good_file[:cut], scratch)
        tally.add(result)
        assert result[0] != "ok", f"a file cut at {cut} of {len(good_file)} bytes was read"

    check()
    figures.record(
        "corrupt_root",
        file_bytes=len(good_file),
        truncations=sum(tally.counts.values()),
        truncation_outcomes=dict(tally.counts),
        truncation_slowest_s=round(tally.slowest, 3),
    )


def test_overwritten_bytes_give_a_typed_error_or_read(
    good_file: bytes, scratch: Path, figures
) -> None:
    tally = Tally()
    size = len(good_file)
    edits = st.lists(
        st.tuples(st.integers(0, size - 1), st.integers(0, 255)), min_size=1, max_size=16
    )

    @settings(max_examples=FLIPS, deadline=None, database=None)
    @given(edits)
    def check(changes: list[tuple[int, int]]) -> None:
        data = bytearray(good_file)
        for offset, value in changes:
            data[offset] = value
        tally.add(outcome(bytes(data), scratch))  # "ok" is allowed: ROOT has no checksums

    check()
    figures.record(
        "corrupt_root",
        byte_edit_examples=sum(tally.counts.values()),
        byte_edit_outcomes=dict(tally.counts),
        byte_edit_slowest_s=round(tally.slowest, 3),
    )


@pytest.mark.parametrize("command", ["inspect", "stats"])
def test_cli_reports_a_damaged_file_in_one_line(
    command: str, good_file: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = {
        "truncated.root": good_file[: len(good_file) // 3],
        "damaged.root": _damage_baskets(good_file),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        status = main([command, str(tmp_path / name)])
        err = capsys.readouterr().err
        assert status == 2, (name, err)
        assert err.startswith(f"mlaas4hep {command}: error: "), err
        assert "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err


# ---- through the service -----------------------------------------------------------------

TINY_SPEC = {
    "version": 1,
    "name": "corrupt-check",
    "data": {
        "tree": "Events",
        "datasets": [
            {"name": "sig", "files": ["dataset:SIGNAL"], "label": 1},
            {"name": "bkg", "files": ["dataset:background.root"], "label": 0},
        ],
        "step_size": 500,
    },
    "preprocess": {"features": {"scalars": ["MET_pt", "nJet", "nMuon"]}},
    "model": {"kind": "sgd"},
    "train": {"epochs": 1},
}


def spec_for(signal: str) -> dict[str, Any]:
    """The tiny spec with its signal read from the uploaded dataset *signal*."""
    doc: dict[str, Any] = copy.deepcopy(TINY_SPEC)
    doc["data"]["datasets"][0]["files"] = [f"dataset:{signal}"]
    return doc


def test_service_refuses_corrupt_uploads_and_runs_the_good_job(
    tmp_path: Path, good_file: bytes, figures
) -> None:
    samples = write_sample_set(tmp_path / "samples", 1000, seed=8)
    signal = samples["signal"].read_bytes()
    corrupt = {
        "truncated.root": signal[: int(len(signal) * 0.6)],
        "damaged.root": _damage_baskets(signal),
    }
    branches = ["run", "luminosityBlock", "event", "MET_pt", "nJet", "nMuon"]
    for data in corrupt.values():  # the premise: reading these bytes fails
        (tmp_path / "check.root").write_bytes(data)
        with pytest.raises(DataSourceError):
            list(iterate_file(str(tmp_path / "check.root"), "Events", branches, 500))
    config = {"executor": {"workers": 2, "heartbeat_s": 0.5, "poll_s": 0.2}}
    srv = Service(tmp_path / "srv", config).start()
    try:
        with httpx.Client(base_url=srv.url + "/api/v1", headers=srv.headers(), timeout=60) as c:
            # Uploads are parsed (tree, branches, streamers) by a bounded worker before they
            # are accepted, so these files are refused at upload, naming the damage.
            refused = {}
            for name, data in corrupt.items():
                r = c.post("/datasets", params={"name": name}, content=data)
                assert r.status_code == 422, r.text
                refused[name] = reason = r.json()["detail"]
                assert name in reason, reason
                assert "truncated" in reason or "damaged" in reason or "not a ROOT" in reason
                assert "Traceback" not in reason
                assert "\n" not in reason.strip(), reason
            uploads = {"signal.root": signal, "background.root": samples["background"]}
            for name, data in uploads.items():
                body = data if isinstance(data, bytes) else data.read_bytes()
                r = c.post("/datasets", params={"name": name}, content=body)
                assert r.status_code == 201, r.text
            r = c.post("/jobs", json=spec_for("signal.root"))
            assert r.status_code == 201, r.text
            start = time.monotonic()
            final = {"good": _wait(c, r.json()["id"])}
            seconds = time.monotonic() - start
            assert c.get("/jobs").status_code == 200  # still answering
        assert final["good"]["state"] == "succeeded", final["good"]
        assert httpx.get(srv.url + "/healthz", timeout=10).status_code == 200
        assert srv.alive()
    finally:
        srv.stop()
    figures.record(
        "corrupt_root",
        service_jobs=len(final),
        service_seconds=round(seconds, 1),
        service_reasons=refused,
    )


def _damage_baskets(data: bytes) -> bytes:
    """Overwrite 1 kB in every 10 kB after the header: compressed baskets and metadata."""
    out = bytearray(data)
    noise = bytes((i * 131 + 7) % 256 for i in range(1024))
    for offset in range(4096, len(out) - 1024, 10_240):
        out[offset : offset + 1024] = noise
    return bytes(out)


def _wait(client: httpx.Client, job_id: str, timeout: float = 240.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, object] = client.get(f"/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
