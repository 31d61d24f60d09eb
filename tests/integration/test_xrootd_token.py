"""A token-protected XRootD origin (ztn over TLS + SciTokens) read with the job's token.

The job's environment is built exactly as the executor builds it: the submitter's token
stored by ``jobs.credentials.store_token`` and handed over as ``BEARER_TOKEN_FILE``; the
CA of the storage comes from ``X509_CERT_DIR`` (passed through to jobs). The read runs in
a child process, like a job, because the XRootD client reads those variables itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from xrootd_servers import TEST_AUDIENCE, TEST_ISSUER, TokenOrigin, token_origin

from mlaas4hep.auth.local_issuer import LocalIssuer
from mlaas4hep.jobs.credentials import store_token, token_env
from mlaas4hep.jobs.layout import JobPaths

pytestmark = pytest.mark.xrootd
__all__ = ["token_origin"]  # the fixture, imported for pytest


def job_read(origin: TokenOrigin, url: str, tmp_path: Path, token: str | None):
    """``mlaas4hep stats URL`` with the environment a job with ``token`` gets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEARER_TOKEN")}
    env["X509_CERT_DIR"] = str(origin.cadir)
    env["XDG_RUNTIME_DIR"] = str(tmp_path)  # no stray bt_u<uid> token file is found
    if token is not None:
        paths = JobPaths(tmp_path / "job")
        paths.root.mkdir()
        store_token(paths, token)
        env |= token_env(paths)
    cmd = [sys.executable, "-m", "mlaas4hep.cli", "stats", url, "--branches", "MET_pt", "--json"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)


def issuer(origin: TokenOrigin) -> LocalIssuer:
    return LocalIssuer(origin.issuer_dir, audience=TEST_AUDIENCE, issuer=TEST_ISSUER)


def test_job_token_reads_protected_storage(
    token_origin: TokenOrigin, sample_files: dict[str, Path], tmp_path: Path
) -> None:
    url = token_origin.put(sample_files["signal"], "protected.root")
    token = issuer(token_origin).mint("alice", ["compute.create", "storage.read:/"])
    proc = job_read(token_origin, url, tmp_path, token)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert "MET_pt" in json.dumps(result)
    assert token not in proc.stdout + proc.stderr  # never printed


def test_refused_without_a_token(
    token_origin: TokenOrigin, sample_files: dict[str, Path], tmp_path: Path
) -> None:
    url = token_origin.put(sample_files["signal"], "protected.root")
    proc = job_read(token_origin, url, tmp_path, None)
    assert proc.returncode == 2
    assert "Auth failed" in proc.stderr
    assert url in proc.stderr


def test_refused_without_the_storage_scope(
    token_origin: TokenOrigin, sample_files: dict[str, Path], tmp_path: Path
) -> None:
    url = token_origin.put(sample_files["signal"], "protected.root")
    token = issuer(token_origin).mint("alice", ["compute.create", "storage.read:/other"])
    proc = job_read(token_origin, url, tmp_path, token)
    assert proc.returncode == 2
    assert "permission denied" in proc.stderr.lower()
    assert token not in proc.stdout + proc.stderr
