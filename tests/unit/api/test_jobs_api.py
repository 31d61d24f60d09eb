"""The job routes through the ASGI app: submission, ownership, idempotency, errors."""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from api_helpers import auth, make_client
from fastapi.testclient import TestClient

from mlaas4hep.jobs.layout import job_paths

JOBS = "/api/v1/jobs"


def submit(client: TestClient, user: str = "alice", **fake: Any) -> dict[str, Any]:
    r = client.post(JOBS, json={"name": "demo", "fake": fake}, headers=auth(user))
    assert r.status_code == 201, r.text
    return r.json()


def wait(
    client: TestClient, job_id: str, user: str = "alice", timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"{JOBS}/{job_id}", headers=auth(user)).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_submit_run_and_download(client: TestClient) -> None:
    job = submit(client, steps=2)
    assert job["state"] == "queued"
    assert job["links"]["self"] == f"{JOBS}/{job['id']}"
    done = wait(client, job["id"])
    assert done["state"] == "succeeded", done
    assert done["progress"]["epoch"] == 2
    assert done["progress"]["metrics"] == {"loss": 0.5}
    arts = client.get(f"{JOBS}/{job['id']}/artifacts", headers=auth("alice")).json()["items"]
    names = {a["name"] for a in arts}
    assert {"model.onnx", "metrics.json", "plots/roc.png", "bundle.tar.gz"} <= names
    model = client.get(f"{JOBS}/{job['id']}/artifacts/model.onnx", headers=auth("alice"))
    assert model.content == b"onnx"
    bundle = client.get(f"{JOBS}/{job['id']}/artifacts/bundle.tar.gz", headers=auth("alice"))
    with tarfile.open(fileobj=io.BytesIO(bundle.content)) as tar:
        assert any(n.endswith("/model.onnx") for n in tar.getnames())
    logs = client.get(f"{JOBS}/{job['id']}/logs", headers=auth("alice"))
    assert "fake job done" in logs.text
    followed = client.get(f"{JOBS}/{job['id']}/logs?follow=true", headers=auth("alice"))
    assert followed.text == logs.text


def test_follow_streams_until_the_job_ends(client: TestClient) -> None:
    job = submit(client, steps=5, sleep=0.1)
    with client.stream("GET", f"{JOBS}/{job['id']}/logs?follow=true", headers=auth("alice")) as r:
        text = "".join(r.iter_text())
    assert "fake job done" in text
    assert "attempt 1 ended: succeeded" in text


def test_failed_job_reports_the_reason(client: TestClient) -> None:
    job = submit(client, exit=2, message="preprocess.cuts[0]: unknown name 'nJets'")
    done = wait(client, job["id"])
    assert done["state"] == "failed"
    assert done["reason"] == "preprocess.cuts[0]: unknown name 'nJets'"
    r = client.get(f"{JOBS}/{job['id']}/artifacts", headers=auth("alice"))
    assert r.status_code == 404
    assert "artifacts exist once it succeeded" in r.json()["detail"]


def test_yaml_and_multipart_bodies(idle: TestClient, tmp_path: Path) -> None:
    r = idle.post(
        JOBS,
        content=b"name: yaml-job\nfake: {steps: 1}\n",
        headers={**auth("alice"), "Content-Type": "application/yaml"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "yaml-job"
    r = idle.post(
        JOBS,
        files=[
            ("spec", ("pipeline.yaml", b"name: mp\n", "application/yaml")),
            ("files", ("mymodel.py", b"def build(n): ...\n", "text/x-python")),
        ],
        headers=auth("alice"),
    )
    assert r.status_code == 201, r.text
    paths = job_paths(tmp_path / "data", r.json()["id"])
    assert (paths.input / "mymodel.py").read_bytes() == b"def build(n): ...\n"
    bad = idle.post(
        JOBS,
        files=[("spec", ("p.yaml", b"name: x\n")), ("files", ("../evil.py", b"x"))],
        headers=auth("alice"),
    )
    assert bad.status_code == 422
    assert "invalid file name" in bad.json()["detail"]


@pytest.mark.parametrize(
    ("body", "ctype", "fragment"),
    [
        (b"name: [unclosed", "application/yaml", "not valid YAML/JSON"),
        (b"- a list\n", "application/yaml", "a pipeline spec is a mapping"),
        (b"\xff\xfe", "application/json", "not UTF-8"),
        (b"{}", "application/pdf", "unsupported content type"),
    ],
)
def test_malformed_bodies_are_422_problems(
    idle: TestClient, body: bytes, ctype: str, fragment: str
) -> None:
    r = idle.post(JOBS, content=body, headers={**auth("alice"), "Content-Type": ctype})
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["status"] == 422
    assert fragment in problem["detail"]
    assert "Traceback" not in r.text


def test_oversized_spec_is_413(tmp_path: Path) -> None:
    with make_client(tmp_path, run_executor=False, uploads={"spec_bytes": 1000}) as c:
        r = c.post(JOBS, json={"name": "x", "pad": "y" * 5000}, headers=auth("alice"))
    assert r.status_code == 413
    assert "limit" in r.json()["detail"]


def test_invalid_pipeline_spec_lists_field_paths(tmp_path: Path) -> None:
    from mlaas4hep.jobs.service import pipeline_validator

    with make_client(tmp_path, run_executor=False, spec_validator=pipeline_validator) as c:
        spec = {"name": "x", "data": {"datasets": []}, "model": {"kind": "nope"}}
        r = c.post(JOBS, json=spec, headers=auth("alice"))
    assert r.status_code == 422
    assert "data.datasets" in r.json()["detail"]


@pytest.mark.parametrize(
    ("files", "needed"),
    [
        (["/etc/passwd"], "storage.read:/etc/passwd"),
        (["/data/../etc/shadow"], "storage.read:/etc/shadow"),
        (["root://eos.cern.ch//store/user/b/x.root"], "storage.read:/store/user/b/x.root"),
        (["../../other-job/x.root"], "storage.read:../../other-job/x.root"),
    ],
)
def test_reading_input_data_needs_a_storage_scope(
    idle: TestClient, files: list[str], needed: str
) -> None:
    spec = {"name": "x", "data": {"datasets": [{"name": "a", "files": files}]}}
    r = idle.post(JOBS, json=spec, headers=auth("alice"))
    assert r.status_code == 403
    assert repr(needed) in r.json()["detail"]


def test_granted_paths_are_accepted_and_paths_on_the_callers_machine_refused(
    idle: TestClient,
) -> None:
    spec = {"name": "x", "data": {"datasets": [{"name": "a", "files": ["/data/ttH/*.root"]}]}}
    assert idle.post(JOBS, json=spec, headers=auth("alice")).status_code == 201
    assert idle.post(JOBS, json=spec, headers=auth("bob")).status_code == 403
    local = {"name": "x", "data": {"datasets": [{"name": "a", "files": ["local.root"]}]}}
    r = idle.post(JOBS, json=local, headers=auth("alice"))
    assert r.status_code == 422
    assert "mlaas4hep datasets upload" in r.json()["detail"]


def test_idempotency_key(idle: TestClient) -> None:
    headers = {**auth("alice"), "Idempotency-Key": "abc-1"}
    first = idle.post(JOBS, json={"name": "a"}, headers=headers)
    replay = idle.post(JOBS, json={"name": "a"}, headers=headers)
    assert first.status_code == 201
    assert replay.status_code == 200
    assert replay.json()["id"] == first.json()["id"]
    other = idle.post(JOBS, json={"name": "b"}, headers=headers)
    assert other.status_code == 422
    assert "'abc-1'" in other.json()["detail"]
    listed = idle.get(JOBS, headers=auth("alice")).json()["items"]
    assert len(listed) == 1


def test_other_users_get_404_everywhere(idle: TestClient) -> None:
    job = submit(idle, "alice")
    base = f"{JOBS}/{job['id']}"
    for method, path in [
        ("GET", base),
        ("GET", f"{base}/logs"),
        ("GET", f"{base}/artifacts"),
        ("GET", f"{base}/artifacts/model.onnx"),
        ("POST", f"{base}/cancel"),
        ("DELETE", base),
    ]:
        r = idle.request(method, path, headers=auth("bob"))
        assert r.status_code == 404, (method, path, r.text)
        assert job["id"] in r.json()["detail"]  # the id they sent, nothing about the owner
        assert "alice" not in r.text
    assert idle.get(JOBS, headers=auth("bob")).json()["items"] == []
    assert idle.get(base, headers=auth("admin")).status_code == 200


def test_auth_errors(idle: TestClient) -> None:
    r = idle.get(JOBS)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.headers["content-type"] == "application/problem+json"
    assert idle.get(JOBS, headers={"Authorization": "Bearer nope"}).status_code == 401
    r = idle.post(JOBS, json={"name": "x"}, headers=auth("reader"))
    assert r.status_code == 403
    assert "compute.create" in r.json()["detail"]


def test_cancel_queued_then_delete(idle: TestClient) -> None:
    job = submit(idle)
    base = f"{JOBS}/{job['id']}"
    assert idle.delete(base, headers=auth("alice")).status_code == 409
    r = idle.post(f"{base}/cancel", headers=auth("alice"))
    assert r.status_code == 202
    assert r.json()["state"] == "cancelled"
    assert idle.delete(base, headers=auth("alice")).status_code == 204
    assert idle.get(base, headers=auth("alice")).status_code == 404


def test_cancel_running_job(client: TestClient) -> None:
    job = submit(client, steps=600, sleep=0.1)
    deadline = time.monotonic() + 20
    while client.get(f"{JOBS}/{job['id']}", headers=auth("alice")).json()["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r = client.post(f"{JOBS}/{job['id']}/cancel", headers=auth("alice"))
    assert r.json()["cancel_requested"] is True
    assert wait(client, job["id"])["state"] == "cancelled"


def test_list_filters_and_pages(idle: TestClient) -> None:
    ids = [submit(idle)["id"] for _ in range(3)]
    idle.post(f"{JOBS}/{ids[0]}/cancel", headers=auth("alice"))
    page = idle.get(f"{JOBS}?limit=2", headers=auth("alice")).json()
    assert [j["id"] for j in page["items"]] == ids[::-1][:2]
    rest = idle.get(f"{JOBS}?limit=2&cursor={page['next_cursor']}", headers=auth("alice")).json()
    assert [j["id"] for j in rest["items"]] == [ids[0]]
    cancelled = idle.get(f"{JOBS}?state=cancelled", headers=auth("alice")).json()["items"]
    assert [j["id"] for j in cancelled] == [ids[0]]
    bad = idle.get(f"{JOBS}?state=bogus&limit=0", headers=auth("alice"))
    assert bad.status_code == 422
    assert {e["loc"] for e in bad.json()["errors"]} == {"query.state.0", "query.limit"}


def test_unexpected_errors_are_500_problems_without_traceback(tmp_path: Path) -> None:
    def broken(doc: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("secret internals")

    with make_client(tmp_path, run_executor=False, spec_validator=broken) as c:
        r = c.post(JOBS, json={"name": "x"}, headers=auth("alice"))
    assert r.status_code == 500
    assert "secret internals" not in r.text
    assert "reference" in r.json()["detail"]


def test_health_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    ready = client.get("/readyz").json()
    assert ready["checks"]["database"] == "ok"
    assert ready["checks"]["executor"] == "ok"
    spec = client.get("/openapi.json").json()
    assert "/api/v1/jobs/{job_id}/cancel" in spec["paths"]
    assert "Problem" in spec["components"]["schemas"]
    json.dumps(spec)


def test_inference_routes_share_the_app_and_its_authenticator(tmp_path: Path) -> None:
    from mlaas4hep.api.app import model_policy
    from mlaas4hep.auth.principal import Principal

    with make_client(tmp_path, run_executor=False, with_inference=True) as c:
        assert c.get("/v2/health/live", headers=auth("alice")).status_code == 200
        assert c.get("/v2/health/ready", headers=auth("alice")).status_code == 200
        r = c.post("/v2/models/nope/infer", json={"inputs": []})
        assert r.status_code == 401
        assert c.get("/healthz").status_code == 200
    reader = Principal("i", "s", scopes=frozenset({"storage.read:/models/tth"}))
    assert model_policy(reader, "infer", "tth")
    assert not model_policy(reader, "infer", "other")
    assert not model_policy(reader, "modify", "tth")
