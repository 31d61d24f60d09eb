"""The remote reading policy without any server: proxy URLs, transient errors, backoff."""

from __future__ import annotations

import random
import time

import pytest

from mlaas4hep.data.remote import Retrier, is_transient, through_proxy
from mlaas4hep.errors import DataSourceError, MissingFileError
from mlaas4hep.spec import DataSpec, RemoteSpec


@pytest.mark.parametrize(
    ("url", "mode", "expected"),
    [
        ("root://origin:1094//a/b.root", "forward", "root://p:1095//root://origin:1094//a/b.root"),
        ("root://origin:1094//a/b.root", "direct", "root://p:1095//a/b.root"),
        ("xroot://origin//a.root?x=1", "direct", "root://p:1095//a.root?x=1"),
        ("https://web/a.root", "forward", "https://web/a.root"),
        ("/local/a.root", "direct", "/local/a.root"),
    ],
)
def test_through_proxy(url: str, mode: str, expected: str) -> None:
    assert through_proxy(url, "root://p:1095/", mode) == expected


@pytest.mark.parametrize(
    "error",
    [
        OSError("File did not vector_read properly: [ERROR] Operation expired"),
        OSError("[FATAL] Socket error: Connection reset by peer"),
        ConnectionResetError(104, "reset"),
        TimeoutError(),
        ValueError("I/O operation on closed file"),
        DataSourceError("cannot reach root://h:1094 for 'x' (Connection refused)"),
    ],
)
def test_transient_errors(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        MissingFileError("'root://h//x.root' does not exist ([3011] No such file)"),
        OSError("[ERROR] Server responded with an error: [3010] Unable to open; permission denied"),
        ValueError("not a ROOT file"),
    ],
)
def test_permanent_errors(error: BaseException) -> None:
    assert not is_transient(error)


def test_transient_cause_is_found() -> None:
    outer = RuntimeError("uproot wrapped it")
    outer.__cause__ = ConnectionResetError("peer went away")
    assert is_transient(outer)


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    spec = RemoteSpec(backoff=1.0, max_backoff=5.0, retries=10)
    retrier = Retrier("root://h//f.root", spec, rng=random.Random(1))
    for failures, full in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (8, 5.0)]:
        delays = [retrier.delay(failures) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays)
        assert max(delays) - min(delays) > full / 4  # really jittered


def test_budget_spent_names_url_operation_and_last_error() -> None:
    spec = RemoteSpec(retries=2, backoff=0.01, max_backoff=0.01)
    retrier = Retrier("root://h:1094//f.root", spec)
    error = OSError("[ERROR] Operation expired")
    started = time.monotonic()
    retrier.failed(error, "reading entries from 5 of")
    retrier.failed(error, "reading entries from 5 of")
    with pytest.raises(DataSourceError) as info:
        retrier.failed(error, "reading entries from 5 of")
    assert time.monotonic() - started < 1
    text = str(info.value)
    assert text.startswith("reading entries from 5 of 'root://h:1094//f.root' failed after 3")
    assert "last error: [ERROR] Operation expired" in text
    assert info.value.__cause__ is error


def test_progress_resets_the_budget() -> None:
    retrier = Retrier("root://h//f.root", RemoteSpec(retries=1, backoff=0.0))
    for _ in range(5):
        retrier.failed(OSError("Operation expired"), "reading")
        retrier.succeeded()


@pytest.mark.parametrize("field", ["redirector", "xrootd_proxy"])
@pytest.mark.parametrize("value", ["http://p:8080", "root://p:1094//store", "p:1094"])
def test_proxy_and_redirector_must_be_xrootd_hosts(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=field):
        DataSpec(datasets=[{"name": "a", "files": ["x.root"]}], **{field: value})


def test_remote_spec_defaults_and_bounds() -> None:
    spec = DataSpec(datasets=[{"name": "a", "files": ["x.root"]}])
    assert spec.remote == RemoteSpec(
        open_timeout=10, read_timeout=60, retries=3, backoff=1.0, max_backoff=30.0
    )
    with pytest.raises(ValueError, match=r"remote\.read_timeout"):
        DataSpec(datasets=[{"name": "a", "files": ["x.root"]}], remote={"read_timeout": 0})
