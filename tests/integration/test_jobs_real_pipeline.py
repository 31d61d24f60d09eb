"""The real pipeline through the service: upload ROOT files as datasets, submit a spec
that names them, `mlaas4hep run` trains in the sandbox, the ONNX model comes back."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from jobs_server import ALL_SCOPES, JobServer

from mlaas4hep.config import MLAAS4HEP_ARGV

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).parents[2] / "examples" / "tth-vs-qcd.yaml"


def test_real_pipeline_runs_in_the_service(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the mlp trainer needs torch (make installs it)")
    data = tmp_path / "samples"
    subprocess.run(
        [*MLAAS4HEP_ARGV, "sample-data", "--events", "3000", str(data)], check=True, timeout=300
    )
    srv = JobServer(tmp_path / "srv", workers=1, fake=False).start()
    try:
        model_scope = "storage.create:/models/tth-classifier"
        read_scope = "storage.read:/models/tth-classifier"
        token = srv.token("alice", (*ALL_SCOPES, model_scope, read_scope))
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=f"{srv.url}/api/v1", headers=headers, timeout=60) as client:
            for name in ("signal.root", "background.root"):
                r = client.post(
                    "/datasets", params={"name": name}, content=(data / name).read_bytes()
                )
                assert r.status_code == 201, r.text
            spec = yaml.safe_load(EXAMPLE.read_text())
            spec["data"]["datasets"][0]["files"] = ["dataset:signal.root"]
            spec["data"]["datasets"][1]["files"] = ["dataset:background.root"]
            spec["train"].update(epochs=2, device="cpu")
            # Publishing a model needs the storage scope on it, checked at submission.
            plain = {"Authorization": f"Bearer {srv.token('alice')}"}
            r = client.post("/jobs", json=spec, headers=plain)
            assert r.status_code == 403, r.text
            assert model_scope in r.json()["detail"]
            r = client.post("/jobs", json=spec)
            assert r.status_code == 201, r.text
            job_id = r.json()["id"]
            deadline = time.monotonic() + 400
            while (job := client.get(f"/jobs/{job_id}").json())["state"] not in (
                "succeeded",
                "failed",
                "cancelled",
            ):
                assert time.monotonic() < deadline, job
                time.sleep(1)
            logs = client.get(f"/jobs/{job_id}/logs").text
            assert job["state"] == "succeeded", (job["reason"], logs[-3000:])
            names = {a["name"] for a in client.get(f"/jobs/{job_id}/artifacts").json()["items"]}
            assert "model.onnx" in names, names
            # library caches written into the job's HOME are not artifacts
            assert not [n for n in names if n.startswith(".") or "/." in n], names
            assert job["progress"] is not None
            metrics = client.get(f"/jobs/{job_id}/artifacts/metrics.json")
            assert metrics.status_code == 200
            json.loads(metrics.text)
            # deploy: the model was published into the repository the inference routes serve.
            assert job["deployed"] == {"model": "tth-classifier", "version": 1}
            version = srv.data_dir / "models" / "tth-classifier" / "1"
            assert (version / "model.onnx").is_file()
            meta = json.loads((version / "metadata.json").read_text())
            assert meta["format"] == "mlaas4hep-model/1"
            assert meta["inputs"][0]["shape"] == [-1, len(meta["feature_names"])]
            served = httpx.get(f"{srv.url}/v2/models/tth-classifier", headers=headers, timeout=30)
            deadline = time.monotonic() + 30
            while served.status_code == 404 and time.monotonic() < deadline:
                time.sleep(0.5)
                served = httpx.get(
                    f"{srv.url}/v2/models/tth-classifier", headers=headers, timeout=30
                )
            assert served.status_code == 200, served.text
    finally:
        srv.stop()
