"""The job's storage credential: who gets the token, where it is kept, what the job sees."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mlaas4hep.jobs.credentials import (
    TOKEN_ENV,
    bearer_token,
    credentials_dir,
    store_token,
    token_env,
    wants_token,
)
from mlaas4hep.jobs.layout import JobPaths


@pytest.mark.parametrize(
    ("scopes", "network", "expected"),
    [
        ({"compute.create", "storage.read:/store"}, True, True),
        ({"storage.read:/"}, True, True),
        ({"storage.read:/store"}, False, False),  # local inputs: the token stays home
        ({"compute.create", "storage.create:/models"}, True, False),
        (set(), True, False),
    ],
)
def test_wants_token(scopes: set[str], network: bool, expected: bool) -> None:
    assert wants_token(scopes, network) is expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer  x ", "x"),
        ("Basic dXNlcg==", None),
        ("Bearer ", None),
        (None, None),
    ],
)
def test_bearer_token(header: str | None, expected: str | None) -> None:
    assert bearer_token(header) == expected


def test_token_is_private_to_the_job(tmp_path: Path) -> None:
    paths = JobPaths(tmp_path / "job")
    paths.root.mkdir()
    assert token_env(paths) == {}
    store_token(paths, "header.payload.signature")
    path = credentials_dir(paths) / "bearer_token"
    assert path.read_text() == "header.payload.signature"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(credentials_dir(paths).stat().st_mode) == 0o700
    assert token_env(paths) == {TOKEN_ENV: str(path)}
    store_token(paths, "renewed")  # a retry of the submission replaces it atomically
    assert path.read_text() == "renewed"
    assert [p.name for p in credentials_dir(paths).iterdir()] == ["bearer_token"]
