"""Issue 16, item 3: applying a deployed model as a service job, against a real service.

A real ``mlaas4hep serve`` (job API, inference routes, the local issuer, jobs in the real
bwrap sandbox) whose apply command is ``tests/unit/jobs/fake_apply.py``: it checks what the
real ``mlaas4hep apply`` would see in the sandbox (the pinned bundle, each input) and
writes one output per input. Users upload their models through the inference service and
their ROOT files as datasets, as they would. ``test_real_apply_end_to_end`` runs the real
``mlaas4hep apply`` on a model trained by ``mlaas4hep run``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parents[1] / "security"))
from security_server import SecServer, assert_no_leak, wait_job

from mlaas4hep.config import MLAAS4HEP_ARGV
from mlaas4hep.serve.samples import write_sample_model

FAKE_APPLY = Path(__file__).parents[1] / "unit" / "jobs" / "fake_apply.py"
MODEL = "alice-apply-model"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecServer]:
    if shutil.which("bwrap") is None:
        pytest.fail("bwrap is not installed; .ci/run installs bubblewrap")
    command = json.dumps([sys.executable, str(FAKE_APPLY)])
    env = {"MLAAS4HEP_EXECUTOR__APPLY_COMMAND": command}
    srv = SecServer(tmp_path_factory.mktemp("apply") / "data", fake=True, extra_env=env)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _upload_model(client: httpx.Client, name: str, source: Path) -> None:
    files = {
        "model": ("model.onnx", (source / "model.onnx").read_bytes()),
        "metadata": ("metadata.json", (source / "metadata.json").read_bytes()),
    }
    r = client.post("/upload", data={"name": name}, files=files)
    assert r.status_code == 201, r.text


def _upload_dataset(client: httpx.Client, name: str, path: Path) -> None:
    r = client.post("/api/v1/datasets", params={"name": name}, content=path.read_bytes())
    assert r.status_code == 201, r.text


@pytest.fixture(scope="module")
def models(server: SecServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("models")
    alice_src = write_sample_model(where / "alice", (4, 8, 1), seed=1)
    bob_src = write_sample_model(where / "bob", (4, 8, 1), seed=2)
    with server.client("alice") as alice, server.client("bob") as bob:
        _upload_model(alice, MODEL, alice_src)
        _upload_model(bob, "bob-private-model", bob_src)
    return {"alice": alice_src, "bob": bob_src}


@pytest.fixture(scope="module")
def datasets(server: SecServer, sample_files: dict[str, Path]) -> dict[str, Path]:
    with server.client("alice") as alice:
        _upload_dataset(alice, "sig.root", sample_files["signal"])
        _upload_dataset(alice, "bkg.root", sample_files["background"])
    with server.client("bob") as bob:
        _upload_dataset(bob, "bobs.root", sample_files["background"])
    return sample_files


def _apply(model: str = MODEL, *files: str, **options: Any) -> dict[str, Any]:
    files = files or ("dataset:sig.root", "dataset:bkg.root")
    return {"name": "score", "apply": {"model": model, "files": list(files), **options}}


def _submit(client: httpx.Client, doc: dict[str, Any]) -> httpx.Response:
    return client.post("/api/v1/jobs", json=doc)


def test_alice_applies_her_model_to_her_datasets(
    server: SecServer, models: dict[str, Path], datasets: dict[str, Path]
) -> None:
    with server.client("alice") as alice:
        r = _submit(alice, _apply(tree="Events", format="root"))
        assert r.status_code == 201, r.text
        job = wait_job(alice, r.json()["id"])
        assert job["state"] == "succeeded", job
        assert job["progress"]["events"] == job["progress"]["total"] == 200
        names = {
            a["name"] for a in alice.get(f"/api/v1/jobs/{job['id']}/artifacts").json()["items"]
        }
        outputs = {f"sig.{MODEL}.friend.root", f"bkg.{MODEL}.friend.root"}
        assert outputs <= names
        got = alice.get(f"/api/v1/jobs/{job['id']}/artifacts/sig.{MODEL}.friend.root")
        assert got.status_code == 200
        assert got.content == datasets["signal"].read_bytes()  # the fake copies its input
        argv = json.loads(alice.get(f"/api/v1/jobs/{job['id']}/artifacts/argv.json").text)
        assert argv[0].endswith(f"/input/models/{MODEL}")  # the pinned bundle, in the sandbox
        assert argv[argv.index("--tree") + 1] == "Events"
        stored = server.data_dir / "jobs" / job["id"] / "input" / "pipeline.yaml"
        assert f"model: {MODEL}:1" in stored.read_text()
        assert_no_leak(server, r.text, got.content)


def test_outputs_registered_as_datasets(
    server: SecServer, models: dict[str, Path], datasets: dict[str, Path]
) -> None:
    with server.client("alice") as alice:
        doc = {**_apply(MODEL, "dataset:sig.root", register_dataset=True), "name": "reg"}
        r = _submit(alice, doc)
        assert r.status_code == 201, r.text
        job = wait_job(alice, r.json()["id"])
        assert job["state"] == "succeeded", job
        mine = {d["name"] for d in alice.get("/api/v1/datasets").json()["items"]}
        assert f"reg.sig.{MODEL}.friend.root" in mine
        # the same name again: refused, nothing half-registered, the reason says what to do
        again = wait_job(alice, _submit(alice, doc).json()["id"])
        assert again["state"] == "failed"
        assert "already have a dataset named" in again["reason"]


def test_alice_cannot_apply_bobs_private_model(
    server: SecServer, models: dict[str, Path], datasets: dict[str, Path]
) -> None:
    with server.client("alice") as alice:
        r = _submit(alice, _apply("bob-private-model"))
        assert r.status_code == 403, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "belongs to another user" in r.json()["detail"]
        before = alice.get("/api/v1/jobs").json()["items"]
        assert all(j["name"] != "bob-private-model" for j in before)


def test_inputs_alice_may_not_read_are_refused(
    server: SecServer, models: dict[str, Path], datasets: dict[str, Path]
) -> None:
    narrow = ("compute.create", "compute.read", "storage.read:/data/alice", "mlaas.infer")
    with server.client("alice", scopes=narrow) as alice:
        r = _submit(alice, _apply(MODEL, "/data/alice/a.root", str(datasets["signal"])))
        assert r.status_code == 403, r.text
        assert "storage.read:" in r.json()["detail"]
    bobs = next((server.data_dir / "datasets").rglob("bobs.root"))
    with server.client("alice") as alice:
        r = _submit(alice, _apply(MODEL, str(bobs)))
        assert r.status_code == 403, r.text
        r = _submit(alice, _apply(MODEL, "dataset:bobs.root"))  # names are per owner
        assert r.status_code == 422, r.text


def test_a_bad_request_is_a_422_problem(server: SecServer, models: dict[str, Path]) -> None:
    with server.client("alice") as alice:
        r = _submit(alice, _apply(format="csv"))
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "apply.format" in r.json()["detail"]
        r = _submit(alice, _apply("no-such-model"))
        assert r.status_code == 422, r.text
        assert "no model 'no-such-model'" in r.json()["detail"]


def test_a_failing_input_fails_the_job_with_its_name(
    server: SecServer, models: dict[str, Path], datasets: dict[str, Path]
) -> None:
    with server.client("alice") as alice:
        job = wait_job(alice, _submit(alice, _apply(tree="Fail")).json()["id"])
        assert job["state"] == "failed"
        assert "is truncated" in job["reason"]
        assert "sig.root" in job["reason"]


def test_cancel_stops_an_apply_job(
    server: SecServer, models: dict[str, Path], datasets: dict[str, Path]
) -> None:
    with server.client("alice") as alice:
        job_id = _submit(alice, _apply(tree="Slow")).json()["id"]
        while (job := alice.get(f"/api/v1/jobs/{job_id}").json())["progress"] is None:
            assert job["state"] in ("queued", "running"), job
            time.sleep(0.1)
        assert alice.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 202
        job = wait_job(alice, job_id, timeout=60)
        assert job["state"] == "cancelled", job


def test_mlaas4hep_submit_queues_an_apply_request(
    server: SecServer, models: dict[str, Path], datasets: dict[str, Path], tmp_path: Path
) -> None:
    request = tmp_path / "apply.yaml"
    request.write_text(yaml.safe_dump(_apply(MODEL, "dataset:bkg.root", format="parquet")))
    token = server.headers("alice")["Authorization"].removeprefix("Bearer ")
    done = subprocess.run(
        [*MLAAS4HEP_ARGV, "submit", str(request), "--wait", "--poll", "0.2"],
        env={**os.environ, "MLAAS4HEP_URL": server.url, "MLAAS4HEP_TOKEN": token},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "succeeded" in done.stdout


EXAMPLE = Path(__file__).parents[2] / "examples" / "tth-vs-qcd.yaml"


@pytest.mark.slow
def test_real_apply_end_to_end(tmp_path: Path, sample_files: dict[str, Path]) -> None:
    """Train and deploy with `mlaas4hep run`, apply with `mlaas4hep apply`, both as jobs."""
    pytest.importorskip("torch", reason="the mlp trainer needs torch (make installs it)")
    import numpy as np
    import uproot

    from mlaas4hep.apply import Model, score_file

    srv = SecServer(tmp_path / "data", workers=1).start()
    try:
        with srv.client("alice") as alice:
            _upload_dataset(alice, "sig.root", sample_files["signal"])
            _upload_dataset(alice, "bkg.root", sample_files["background"])
            spec = yaml.safe_load(EXAMPLE.read_text())
            spec["data"]["datasets"][0]["files"] = ["dataset:sig.root"]
            spec["data"]["datasets"][1]["files"] = ["dataset:bkg.root"]
            spec["train"].update(epochs=1, device="cpu")
            spec["deploy"] = {"name": "alice-tth"}
            r = _submit(alice, spec)
            assert r.status_code == 201, r.text
            trained = wait_job(alice, r.json()["id"], timeout=500)
            assert trained["state"] == "succeeded", trained["reason"]
            r = _submit(alice, _apply("alice-tth", "dataset:sig.root"))
            assert r.status_code == 201, r.text
            job = wait_job(alice, r.json()["id"])
            logs = alice.get(f"/api/v1/jobs/{job['id']}/logs").text
            assert job["state"] == "succeeded", (job["reason"], logs[-3000:])
            name = "sig.alice_tth.friend.root"
            got = alice.get(f"/api/v1/jobs/{job['id']}/artifacts/{name}")
            assert got.status_code == 200, got.text
        (tmp_path / name).write_bytes(got.content)
        with uproot.open(tmp_path / name) as f, uproot.open(sample_files["signal"]) as src:
            friend = f["Events"].arrays(library="np")
            source = src["Events"].arrays(["run", "event"], library="np")
        assert len(friend["event"]) == len(source["event"])  # entry-aligned with its source
        assert friend["event"].dtype == source["event"].dtype
        np.testing.assert_array_equal(friend["event"], source["event"])
        model = Model.load(srv.data_dir / "models" / "alice-tth" / "1")
        local = np.concatenate(
            [c.columns["alice_tth_score"] for c in score_file([model], str(sample_files["signal"]))]
        )
        np.testing.assert_allclose(friend["alice_tth_score"], local, rtol=0, atol=1e-6)
        assert_no_leak(srv, got.content)
    finally:
        srv.stop()
