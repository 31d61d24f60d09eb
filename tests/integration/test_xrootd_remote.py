"""Remote reading through a real XRootD origin, forwarding proxy and XCache on loopback.

The servers are Debian's ``xrootd`` with the configs of ``deploy/xrootd/`` (see
``xrootd_servers.py``). What must hold: every route gives the local read bit for bit; a
dead origin is retried and then reported clearly within the configured budget; a read
resumes where it failed when the origin comes back; the XCache keeps serving a fully
cached file while the origin is down.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import awkward as ak
import pytest
from XRootD import client
from xrootd_servers import XRootDStack, own_stack, xrootd_stack

from mlaas4hep.data.samples import write_sample
from mlaas4hep.data.stream import iterate_file, stream
from mlaas4hep.errors import DataSourceError
from mlaas4hep.spec import DataSpec, RemoteSpec

pytestmark = pytest.mark.xrootd
__all__ = ["own_stack", "xrootd_stack"]  # fixtures, imported for pytest

BRANCHES = ["event", "MET_pt", "nJet", "Jet_pt", "Jet_btagDeepB"]
# Small and quick to give up: the budget the failure tests check against.
FAST = RemoteSpec(open_timeout=2, read_timeout=2, retries=2, backoff=0.2, max_backoff=1.0)


@pytest.fixture(scope="module")
def many_baskets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20,000 events in baskets of 500: a read needs the server for every chunk."""
    path = tmp_path_factory.mktemp("baskets") / "baskets.root"
    return write_sample(path, "signal", 20_000, seed=5, basket_entries=500)


def read_local(path: Path, step: int = 1000) -> ak.Array:
    return ak.concatenate([c.arrays for c in iterate_file(str(path), "Events", BRANCHES, step)])


def read_bytes(url: str) -> bytes:
    """The whole file through the XRootD client (what a cache fill reads)."""
    handle = client.File()
    status, _ = handle.open(url, timeout=10)
    assert status.ok, status.message
    try:
        status, data = handle.read(timeout=10)
        assert status.ok, status.message
        return bytes(data)
    finally:
        handle.close(timeout=5)


def spec_for(url: str, **data: object) -> DataSpec:
    return DataSpec(
        tree="Events", datasets=[{"name": "s", "files": [url], "label": 1}], step_size=700, **data
    )


@pytest.mark.parametrize("route", ["origin", "proxy", "xcache"])
def test_every_route_reads_the_local_bytes(
    route: str, xrootd_stack: XRootDStack, sample_files: dict[str, Path]
) -> None:
    local = sample_files["signal"]
    url = xrootd_stack.put(local, f"{route}/signal.root")
    options: dict[str, object] = {
        "origin": {},
        "proxy": {"xrootd_proxy": xrootd_stack.proxy.url},
        "xcache": {"xrootd_proxy": xrootd_stack.xcache.url, "xrootd_proxy_mode": "direct"},
    }[route]
    spec = spec_for(url, **options)
    chunks = list(stream(spec, BRANCHES))
    expected_file = {
        "origin": url,
        "proxy": f"{xrootd_stack.proxy.url}//{url}",
        "xcache": f"{xrootd_stack.xcache.url}//{route}/signal.root",
    }[route]
    assert {c.file for c in chunks} == {expected_file}
    remote = ak.concatenate([c.arrays for c in chunks])
    assert ak.array_equal(remote, read_local(local))
    assert read_bytes(expected_file) == local.read_bytes()


@pytest.mark.parametrize("readahead", [0, 1, 3])
def test_readahead_gives_the_same_chunks(
    readahead: int, xrootd_stack: XRootDStack, many_baskets: Path
) -> None:
    url = xrootd_stack.put(many_baskets, f"readahead{readahead}/baskets.root")
    remote = RemoteSpec(readahead=readahead)
    # 1250 entries a chunk over baskets of 500: the chunks end on basket boundaries
    chunks = list(iterate_file(url, "Events", BRANCHES, 1250, remote=remote))
    ranges = [(c.entry_start, c.entry_stop) for c in chunks]
    assert ranges[0][0] == 0
    assert ranges[-1][1] == 20_000
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert all(0 < stop - start <= 1250 for start, stop in ranges)
    if readahead:
        assert all(stop % 500 == 0 for _, stop in ranges)
    assert ak.array_equal(ak.concatenate([c.arrays for c in chunks]), read_local(many_baskets))
    # stopping early leaves nothing behind that blocks
    early = iterate_file(url, "Events", BRANCHES, 1000, remote=remote)
    assert len(next(early)) == 1000
    early.close()


def test_store_names_go_to_the_redirector(
    xrootd_stack: XRootDStack, sample_files: dict[str, Path]
) -> None:
    xrootd_stack.put(sample_files["background"], "store/mc/bkg.root")
    spec = DataSpec(
        datasets=[{"name": "b", "files": ["/store/mc/bkg.root"], "label": 0}],
        redirector=xrootd_stack.origin.url,
        step_size=1000,
    )
    remote = ak.concatenate([c.arrays for c in stream(spec, BRANCHES)])
    assert ak.array_equal(remote, read_local(sample_files["background"]))


def test_origin_killed_mid_read_fails_within_the_budget(
    own_stack: XRootDStack, many_baskets: Path
) -> None:
    url = own_stack.put(many_baskets)
    chunks = iterate_file(url, "Events", BRANCHES, 1000, remote=FAST)
    first = next(chunks)
    assert (first.entry_start, first.entry_stop) == (0, 1000)
    own_stack.origin.kill()
    started = time.monotonic()
    got = [first]  # the chunk read ahead before the kill may still come through
    with pytest.raises(DataSourceError) as info:
        got.extend(chunks)
    elapsed = time.monotonic() - started
    assert len(got) <= 1 + FAST.readahead
    message = str(info.value)
    assert url in message
    # the operation, at the chunk that failed: right after the last one delivered
    assert f"reading entries from {got[-1].entry_stop} of" in message
    assert "after 3 attempt(s)" in message  # the first try and FAST.retries retries
    assert "last error:" in message
    # Each try is bounded by read_timeout (+1 s resolution), plus the backoff waits.
    budget = (FAST.retries + 1) * (FAST.read_timeout + 1) + FAST.retries * FAST.max_backoff
    assert elapsed < budget, (elapsed, budget)


def test_read_resumes_at_the_failed_chunk_when_the_origin_returns(
    own_stack: XRootDStack, many_baskets: Path
) -> None:
    url = own_stack.put(many_baskets)
    patient = RemoteSpec(open_timeout=2, read_timeout=3, retries=8, backoff=0.3, max_backoff=1.0)
    chunks = iterate_file(url, "Events", BRANCHES, 1000, remote=patient)
    got = [next(chunks)]
    own_stack.origin.kill()
    restart = threading.Timer(1.5, own_stack.origin.start)
    restart.start()
    try:
        got.extend(chunks)
    finally:
        restart.join()
    # Resumed, not restarted: consecutive ranges, each entry exactly once.
    assert [(c.entry_start, c.entry_stop) for c in got] == [
        (s, s + 1000) for s in range(0, 20_000, 1000)
    ]
    assert ak.array_equal(ak.concatenate([c.arrays for c in got]), read_local(many_baskets))


def test_xcache_serves_a_cached_file_while_the_origin_is_down(
    own_stack: XRootDStack, sample_files: dict[str, Path]
) -> None:
    local = sample_files["signal"]
    own_stack.put(local, "cached/signal.root")
    via_cache = f"{own_stack.xcache.url}//cached/signal.root"
    assert read_bytes(via_cache) == local.read_bytes()  # fills the cache completely
    assert (own_stack.cache / "cached" / "signal.root.cinfo").exists()
    own_stack.origin.kill()
    spec = spec_for(via_cache, remote=FAST)
    remote = ak.concatenate([c.arrays for c in stream(spec, BRANCHES)])
    assert ak.array_equal(remote, read_local(local))
