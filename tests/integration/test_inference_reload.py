"""Hot reload under load: new versions replace old ones with zero failed requests."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
from conftest_serve import ALICE, inference_server, own

from mlaas4hep.serve.repository import ModelRepository, VersionPolicy
from mlaas4hep.serve.samples import write_sample_model
from mlaas4hep.serve.settings import BatchPolicy

LAYERS = (42, 64, 64, 1)
X = np.random.default_rng(5).normal(size=(3, 42)).astype(np.float32)
BODY = {
    "inputs": [
        {"name": "features", "shape": [3, 42], "datatype": "FP32", "data": X.ravel().tolist()}
    ]
}


def _expected(source: Path) -> np.ndarray:
    session = ort.InferenceSession(str(source / "model.onnx"), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["score"], {"features": X})[0]).ravel()


class Load:
    """Threads sending V2 requests until stopped; they record every outcome."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = f"{url}/v2/models/mlp/infer"
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.failures: list[str] = []
        self.results: list[tuple[str, list[float]]] = []
        self.threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(headers=ALICE, timeout=30) as client:
            while not self.stop.is_set():
                try:
                    response = client.post(self.url, json=BODY)
                    doc = response.json()
                    ok = response.status_code == 200
                except httpx.HTTPError as exc:
                    ok, doc = False, {"error": repr(exc)}
                with self.lock:
                    if ok:
                        self.results.append((doc["model_version"], doc["outputs"][0]["data"]))
                    else:
                        self.failures.append(str(doc))

    def versions(self) -> set[str]:
        with self.lock:
            return {v for v, _ in self.results}

    def wait_for(self, version: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while version not in self.versions():
            assert time.monotonic() < deadline, f"version {version} never served"
            time.sleep(0.05)


def test_hot_reload_under_load_loses_no_request(tmp_path: Path) -> None:
    repo_dir = tmp_path / "repo"
    sources = {v: write_sample_model(tmp_path / f"src{v}", LAYERS, seed=v) for v in (1, 2, 3)}
    repo = ModelRepository(repo_dir, VersionPolicy(latest=1), BatchPolicy())
    own(repo_dir, "mlp")  # alice uploads version 3 below
    repo.publish("mlp", sources[1])
    with inference_server(repo_dir, poll_interval_s=0.1) as url:
        load = Load(url)
        for t in load.threads:
            t.start()
        try:
            load.wait_for("1")
            repo.publish("mlp", sources[2])  # picked up by the repository poll
            load.wait_for("2")
            files = {"model": ("model.onnx", (sources[3] / "model.onnx").read_bytes())}
            upload = httpx.post(f"{url}/upload", data={"name": "mlp"}, files=files, headers=ALICE)
            assert upload.json() == {"name": "mlp", "version": "3"}
            load.wait_for("3")
            # A broken version 4 must not take version 3 out of service.
            # (publish refuses it; it lands on the shared repository by other means)
            broken = repo.root / "mlp" / "4"
            broken.mkdir()
            (broken / "model.onnx").write_bytes(b"not an onnx model")
            time.sleep(1.0)
            count = len(load.results)
            time.sleep(0.5)
            assert len(load.results) > count
        finally:
            load.stop.set()
            for t in load.threads:
                t.join()
        index = httpx.post(f"{url}/v2/repository/index", headers=ALICE).json()
    assert load.failures == []
    expected = {str(v): _expected(src) for v, src in sources.items()}
    for version, data in load.results:
        np.testing.assert_allclose(data, expected[version], rtol=1e-5)
    assert load.results[-1][0] == "3"
    states = {(e["version"], e["state"]) for e in index}
    assert ("3", "READY") in states
    assert ("4", "UNAVAILABLE") in states
    reason = next(e["reason"] for e in index if e["version"] == "4")
    assert "load failed" in reason
