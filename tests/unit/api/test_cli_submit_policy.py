"""`mlaas4hep submit` goes through the API and so through the one submission policy."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml
from api_helpers import make_client
from jobs_helpers import pipeline_doc

from mlaas4hep.client import Client
from mlaas4hep.errors import PermissionDenied, SpecError
from mlaas4hep.jobs.service import pipeline_validator


def _forward(tc: object, request: httpx.Request) -> httpx.Response:
    r = tc.request(  # type: ignore[attr-defined]
        request.method,
        request.url.raw_path.decode(),
        content=request.content,
        headers=dict(request.headers),
    )
    return httpx.Response(r.status_code, headers=r.headers, content=r.content)


def test_cli_submission_checks_lists_expressions_and_scopes(tmp_path: Path) -> None:
    with make_client(tmp_path, run_executor=False, spec_validator=pipeline_validator) as tc:
        alice = Client("http://test", "token-alice", transport=httpx.MockTransport(
            lambda req: _forward(tc, req)))  # fmt: skip
        doc = pipeline_doc("cli")
        for d in doc["data"]["datasets"]:
            d["files"] = ["@files.txt"]
        spec = yaml.safe_dump(doc).encode()
        listing = tmp_path / "files.txt"
        listing.write_text("/data/a.root\nROOT://eos//data/b.root\n")
        job = alice.submit(spec, [listing])
        assert job["state"] == "queued"
        stored = json.loads(tc.app.state.service.get(job["id"], None).spec)  # type: ignore[attr-defined]
        assert stored["data"]["datasets"][0]["files"] == ["/data/a.root", "ROOT://eos//data/b.root"]
        listing.write_text("/data/a.root\n/elsewhere/b.root\n")  # alice: storage.read:/data
        with pytest.raises(PermissionDenied, match=r"/elsewhere/b\.root"):
            alice.submit(spec, [listing])
        doc["preprocess"]["cuts"] = ["MET_pt >> 1"]
        with pytest.raises(SpecError, match=r"(?s)preprocess\.cuts\[0\].*\^"):
            alice.submit(yaml.safe_dump(doc).encode(), [listing])
