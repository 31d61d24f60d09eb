"""Reading through a real XRootD server gives exactly what reading the local file gives."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import awkward as ak
import pytest

from mlaas4hep.cli import main
from mlaas4hep.data.schema import inspect_tree
from mlaas4hep.data.sources import file_identity, open_tree
from mlaas4hep.data.stats import OVERALL, first_pass
from mlaas4hep.data.stream import iterate_file, stream
from mlaas4hep.errors import DataSourceError, MissingFileError, NotRootFileError
from mlaas4hep.spec import DataSpec

pytestmark = pytest.mark.xrootd

BRANCHES = ["event", "MET_pt", "nJet", "Jet_pt", "Jet_btagDeepB", "Muon_charge"]


@pytest.fixture(scope="module")
def remote_signal(xrootd_server, sample_files: dict[str, Path]) -> str:
    return xrootd_server.put(sample_files["signal"])


def _read_all(path: str, step: int) -> ak.Array:
    return ak.concatenate([c.arrays for c in iterate_file(path, "Events", BRANCHES, step)])


def test_remote_read_equals_local(remote_signal: str, sample_files: dict[str, Path]) -> None:
    local = _read_all(str(sample_files["signal"]), 700)
    remote = _read_all(remote_signal, 700)
    assert len(remote) == len(local) > 0
    assert remote.fields == BRANCHES
    assert ak.array_equal(remote, local)


def test_stream_spec_over_root_url(remote_signal: str, sample_files: dict[str, Path]) -> None:
    spec = DataSpec(
        datasets=[{"name": "sig", "files": [remote_signal], "label": 1}],
        step_size=1000,
        max_events=2500,
    )
    chunks = list(stream(spec, ["MET_pt", "Jet_pt"]))
    assert [len(c) for c in chunks] == [1000, 1000, 500]
    assert all(c.file == remote_signal and c.label == 1 for c in chunks)
    local = _read_all(str(sample_files["signal"]), 5000)[:2500]
    remote = ak.concatenate([c.arrays for c in chunks])
    assert ak.array_equal(remote.Jet_pt, local.Jet_pt)


def test_remote_schema_identity_and_stats(
    remote_signal: str, sample_files: dict[str, Path]
) -> None:
    local_path = str(sample_files["signal"])
    assert inspect_tree(remote_signal).branches == inspect_tree(local_path).branches
    ident = file_identity(remote_signal)
    assert ident["size"] == sample_files["signal"].stat().st_size
    assert ident["url"] == remote_signal
    assert ident["mtime"] > 0

    def stats(path: str) -> dict:
        spec = DataSpec(datasets=[{"name": "s", "files": [path]}], step_size=800)
        return first_pass(spec, ["MET_pt", "Jet_pt"])[OVERALL].to_dict()

    assert stats(remote_signal) == stats(local_path)


def test_cli_inspect_remote(remote_signal: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", remote_signal + ":Events"]) == 0
    assert "Jet_pt" in capsys.readouterr().out


def test_missing_file_on_live_server(xrootd_server) -> None:
    url = xrootd_server.url_for("no/such/file.root")
    with pytest.raises(MissingFileError, match=r"no/such/file\.root"), open_tree(url):
        pass


def test_unreachable_host_fails_fast_naming_the_url() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"root://127.0.0.1:{port}//store/data.root"
    started = time.monotonic()
    with (
        pytest.raises(DataSourceError, match=f"cannot reach root://127.0.0.1:{port}"),
        open_tree(url),
    ):
        pass
    assert time.monotonic() - started < 10


def test_cli_unreachable_host_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["inspect", f"root://127.0.0.1:{port}//x.root"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "cannot reach" in err[0]


def test_remote_not_root_file(xrootd_server, tmp_path: Path) -> None:
    text = tmp_path / "text.root"
    text.write_text("just some text, long enough to fill a ROOT header " * 20)
    url = xrootd_server.put(text)
    with pytest.raises(NotRootFileError, match=r"text\.root"), open_tree(url):
        pass
