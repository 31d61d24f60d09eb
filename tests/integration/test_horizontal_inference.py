"""Two inference replicas (`mlaas4hep serve --only inference`, configured by environment
variables only) over one shared model repository, under continuous load.

Shows: a version published into the repository by someone else (a job, an operator)
appears on both replicas without a restart (repository poll); a version uploaded to one
replica appears on the other; two uploads racing on the two replicas get distinct
versions; zero failed requests throughout, every answer matching the version it names.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort

from mlaas4hep.config import MLAAS4HEP_ARGV
from mlaas4hep.loopback import free_port
from mlaas4hep.serve.ownership import ModelOwners
from mlaas4hep.serve.repository import ModelRepository, VersionPolicy
from mlaas4hep.serve.samples import write_sample_model
from mlaas4hep.serve.settings import BatchPolicy

LAYERS = (42, 32, 1)
X = np.random.default_rng(11).normal(size=(2, 42)).astype(np.float32)
BODY = {
    "inputs": [
        {"name": "features", "shape": [2, 42], "datatype": "FP32", "data": X.ravel().tolist()}
    ]
}
SCOPES = ("mlaas.infer", "storage.read:/models", "storage.modify:/models")


def _expected(source: Path) -> np.ndarray:
    session = ort.InferenceSession(str(source / "model.onnx"), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["score"], {"features": X})[0]).ravel()


@contextmanager
def replica(data_dir: Path, repo: Path, log: Path) -> Iterator[str]:
    """One `serve --only inference` process; yields its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLAAS4HEP_")}
    env |= {
        "MLAAS4HEP_DATA_DIR": str(data_dir),
        "MLAAS4HEP_PORT": str(port),
        "MLAAS4HEP_INFERENCE__REPOSITORY": str(repo),
        "MLAAS4HEP_INFERENCE__POLL_INTERVAL_S": "0.2",
        "MLAAS4HEP_INFERENCE__INTRA_OP_THREADS": "1",
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*MLAAS4HEP_ARGV, "serve", "--only", "inference"], env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "replica not ready after 60 s"
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Load:
    """Threads sending V2 requests to every replica until stopped; every outcome recorded."""

    def __init__(self, urls: list[str], headers: dict[str, str], per_replica: int = 2) -> None:
        self.headers = headers
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.failures: list[str] = []
        self.results: list[tuple[str, str, list[float]]] = []
        self.threads = [
            threading.Thread(target=self._run, args=(url,), daemon=True)
            for url in urls
            for _ in range(per_replica)
        ]

    def _run(self, url: str) -> None:
        with httpx.Client(headers=self.headers, timeout=30) as client:
            while not self.stop.is_set():
                try:
                    response = client.post(f"{url}/v2/models/mlp/infer", json=BODY)
                    doc = response.json()
                    ok = response.status_code == 200
                except httpx.HTTPError as exc:
                    ok, doc = False, {"error": repr(exc)}
                with self.lock:
                    if ok:
                        self.results.append((url, doc["model_version"], doc["outputs"][0]["data"]))
                    else:
                        self.failures.append(f"{url}: {doc}")

    def served(self, url: str) -> set[str]:
        with self.lock:
            return {v for u, v, _ in self.results if u == url}

    def wait_everywhere(self, version: str, urls: list[str], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        for url in urls:
            while version not in self.served(url):
                assert time.monotonic() < deadline, f"{url} never served version {version}"
                time.sleep(0.05)


def _upload(url: str, source: Path, headers: dict[str, str], out: list[str]) -> None:
    files = {"model": ("model.onnx", (source / "model.onnx").read_bytes())}
    response = httpx.post(f"{url}/upload", data={"name": "mlp"}, files=files, headers=headers)
    assert response.status_code == 201, response.text
    out.append(response.json()["version"])


def test_replicas_pick_up_new_versions_under_load(tmp_path: Path) -> None:
    from mlaas4hep.auth.local_issuer import LocalIssuer

    data_dir, repo_dir = tmp_path / "data", tmp_path / "models"
    sources = {v: write_sample_model(tmp_path / f"src{v}", LAYERS, seed=v) for v in range(1, 6)}
    repo = ModelRepository(repo_dir, VersionPolicy(latest=1), BatchPolicy())
    # alice owns it: she uploads versions 3-5 below (docs/inference.md, "Ownership")
    ModelOwners(repo_dir).claim("mlp", f"{LocalIssuer(data_dir).issuer}#alice", "alice")
    repo.publish("mlp", sources[1])
    headers = {"Authorization": f"Bearer {LocalIssuer(data_dir).mint('alice', SCOPES)}"}
    with ExitStack() as stack:
        urls = [
            stack.enter_context(replica(data_dir, repo_dir, tmp_path / f"replica-{i}.log"))
            for i in range(2)
        ]
        load = Load(urls, headers)
        for t in load.threads:
            t.start()
        try:
            load.wait_everywhere("1", urls)
            repo.publish("mlp", sources[2])  # e.g. a job's deploy step: the poll finds it
            load.wait_everywhere("2", urls)
            uploaded: list[str] = []
            _upload(urls[0], sources[3], headers, uploaded)  # replica 0 writes, 1 polls
            load.wait_everywhere("3", urls)
            racers = [
                threading.Thread(target=_upload, args=(url, sources[4 + i], headers, uploaded))
                for i, url in enumerate(urls)
            ]
            for t in racers:
                t.start()
            for t in racers:
                t.join()
            load.wait_everywhere("5", urls)
            time.sleep(0.5)
        finally:
            load.stop.set()
            for t in load.threads:
                t.join(timeout=30)
        indexes = [httpx.post(f"{url}/v2/repository/index", headers=headers).json() for url in urls]

    assert load.failures == []
    assert sorted(uploaded) == ["3", "4", "5"]
    # Which racer got 4 and which 5 is up to the race; the content decides the expectation.
    expected = {"1": _expected(sources[1]), "2": _expected(sources[2])}
    for version in ("3", "4", "5"):
        expected[version] = _expected(repo.version_dir("mlp", int(version)))
    for url in urls:
        assert load.served(url) >= {"1", "2", "3", "5"}
    for _url, version, data in load.results:
        np.testing.assert_allclose(data, expected[version], rtol=1e-5)
    assert indexes[0] == indexes[1]
    assert [e["version"] for e in indexes[0] if e["state"] == "READY"] == ["5"]


PUBLISH = """\
import sys, time
from pathlib import Path
from mlaas4hep.serve.repository import ModelRepository, VersionPolicy
from mlaas4hep.serve.settings import BatchPolicy
repo = ModelRepository(Path(sys.argv[1]), VersionPolicy(latest=1), BatchPolicy())
time.sleep(max(0.0, float(sys.argv[3]) - time.time()))
for _ in range(5):
    print(repo.publish("mlp", Path(sys.argv[2])), flush=True)
"""


def test_racing_publishers_get_distinct_versions(tmp_path: Path) -> None:
    # Replicas (and job executors) publish into one shared repository: the rename decides.
    source = write_sample_model(tmp_path / "src", LAYERS, seed=1)
    at = str(time.time() + 3)
    argv = [sys.executable, "-c", PUBLISH, str(tmp_path / "models"), str(source), at]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs)
    got = sorted(int(v) for out in outs for v in out.split())
    assert got == list(range(1, 5 * len(procs) + 1))
    assert [p.name for p in (tmp_path / "models" / "mlp").iterdir() if p.name.startswith(".")] == []
