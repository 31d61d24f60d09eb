"""`mlaas4hep serve --only inference --inference-workers 2 --grpc-port P`: real processes.

Shows: a supervisor and two worker processes share the HTTP port (one socket) and the
gRPC port (SO_REUSEPORT), and both answer over both protocols (which worker holds a
connection is read from the kernel's socket table, by pid: nothing is added to the
answers); a version published into the repository is served by every worker within a few
poll intervals; ``/metrics`` sums the workers' counters and shows each live worker's
loaded versions; a killed worker is restarted while requests keep succeeding; SIGTERM to
the supervisor stops every worker and frees the ports.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import psutil
import pytest
import tritonclient.grpc as tgrpc

from mlaas4hep.config import MLAAS4HEP_ARGV
from mlaas4hep.loopback import free_port
from mlaas4hep.serve.ownership import ModelOwners
from mlaas4hep.serve.repository import ModelRepository, VersionPolicy
from mlaas4hep.serve.samples import write_sample_model
from mlaas4hep.serve.settings import BatchPolicy

LAYERS = (42, 32, 1)
X = np.random.default_rng(5).normal(size=(2, 42)).astype(np.float32)
BODY = {
    "inputs": [
        {"name": "features", "shape": [2, 42], "datatype": "FP32", "data": X.ravel().tolist()}
    ]
}
SCOPES = ("mlaas.infer", "mlaas.metrics", "storage.read:/models", "storage.modify:/models")
POLL_S = 0.2
# One TCP connection per client: gRPC otherwise shares a subchannel between channels.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    url: str
    http_port: int
    grpc_port: int
    headers: dict[str, str]
    repo: ModelRepository
    sources: dict[int, Path]
    log: Path

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def workers(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def _expected(source: Path) -> np.ndarray:
    session = ort.InferenceSession(str(source / "model.onnx"), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["score"], {"features": X})[0]).ravel()


def _listening(worker: psutil.Process, port: int) -> bool:
    try:
        conns = worker.net_connections("tcp")
    except psutil.NoSuchProcess:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns)


def _wait(condition: Callable[[], bool], what: str, service: Service, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert service.proc.poll() is None, service.tail()
        assert time.monotonic() < deadline, f"{what} not within {timeout} s\n{service.tail()}"
        time.sleep(0.05)


def _ready(service: Service, count: int = 2) -> list[int]:
    """Wait until *count* workers serve gRPC (they start it after loading the models)."""

    def ready() -> bool:
        workers = service.workers()
        return len(workers) == count and all(_listening(w, service.grpc_port) for w in workers)

    _wait(ready, f"{count} ready workers", service, 60)
    return sorted(w.pid for w in service.workers())


def _owners(service: Service, port: int) -> dict[int, int]:
    """Our open connections to *port*: our local port -> the worker pid holding the other end."""
    held = {}
    for worker in service.workers():
        for c in worker.net_connections("tcp"):
            if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port and c.raddr:
                held[c.raddr.port] = worker.pid
    ours = psutil.Process().net_connections("tcp")
    return {c.laddr.port: held[c.laddr.port] for c in ours if c.raddr and c.raddr.port == port}


def _http_pid(service: Service, response: httpx.Response) -> int:
    """The worker that answered *response* (its connection is still open)."""
    port = response.extensions["network_stream"].get_extra_info("client_addr")[1]
    return _owners(service, service.http_port)[port]


def _grpc_headers(headers: dict[str, str]) -> dict[str, str]:
    return {"authorization": headers["Authorization"]}  # gRPC metadata keys are lower case


def _grpc_infer(
    client: tgrpc.InferenceServerClient, headers: dict[str, str]
) -> tuple[str, list[float]]:
    features = tgrpc.InferInput("features", list(X.shape), "FP32")
    features.set_data_from_numpy(X)
    result = client.infer("mlp", [features], headers=_grpc_headers(headers))
    version = result.get_response().model_version
    return version, result.as_numpy("score").ravel().tolist()


def _grpc_client(service: Service) -> tuple[tgrpc.InferenceServerClient, int]:
    """A new gRPC client with its own connection, and the worker pid that holds it."""
    before = set(_owners(service, service.grpc_port))
    client = tgrpc.InferenceServerClient(service.grpc_target, channel_args=OWN_CONNECTION)
    metadata = client.get_model_metadata("mlp", headers=_grpc_headers(service.headers))
    assert metadata.name == "mlp"
    _grpc_infer(client, service.headers)
    new = {p: pid for p, pid in _owners(service, service.grpc_port).items() if p not in before}
    assert len(new) == 1, new
    return client, next(iter(new.values()))


def _clients_per_worker(service: Service) -> dict[int, tgrpc.InferenceServerClient]:
    """One gRPC client pinned to each worker (new connections until both are hit)."""
    pinned: dict[int, tgrpc.InferenceServerClient] = {}
    spare: list[tgrpc.InferenceServerClient] = []
    for _ in range(40):
        client, pid = _grpc_client(service)
        if pid in pinned:
            spare.append(client)
        else:
            pinned[pid] = client
        if len(pinned) == len(service.workers()):
            break
    for client in spare:
        client.close()
    return pinned


def _http_clients_per_worker(service: Service) -> dict[int, httpx.Client]:
    """One keep-alive HTTP client pinned to each worker (new connections until both)."""
    pinned: dict[int, httpx.Client] = {}
    for _ in range(40):
        client = httpx.Client(headers=service.headers, timeout=30)
        response = client.get(f"{service.url}/v2/health/ready")
        assert response.status_code == 200
        pid = _http_pid(service, response)
        if pid in pinned:
            client.close()
        else:
            pinned[pid] = client
        if len(pinned) == len(service.workers()):
            break
    return pinned


def _metrics(client: httpx.Client, service: Service) -> tuple[int, str]:
    response = client.get(f"{service.url}/metrics")
    assert response.status_code == 200, response.text
    return _http_pid(service, response), response.text


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    from mlaas4hep.auth.local_issuer import LocalIssuer

    tmp = tmp_path_factory.mktemp("workers")
    data_dir, repo_dir = tmp / "data", tmp / "models"
    sources = {v: write_sample_model(tmp / f"src{v}", LAYERS, seed=v) for v in range(1, 4)}
    repo = ModelRepository(repo_dir, VersionPolicy(latest=1), BatchPolicy())
    ModelOwners(repo_dir).claim("mlp", f"{LocalIssuer(data_dir).issuer}#alice", "alice")
    repo.publish("mlp", sources[1])
    headers = {"Authorization": f"Bearer {LocalIssuer(data_dir).mint('alice', SCOPES)}"}
    port, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLAAS4HEP_")}
    env |= {
        "MLAAS4HEP_DATA_DIR": str(data_dir),
        "MLAAS4HEP_PORT": str(port),
        "MLAAS4HEP_INFERENCE__REPOSITORY": str(repo_dir),
        "MLAAS4HEP_INFERENCE__POLL_INTERVAL_S": str(POLL_S),
    }
    argv = [*MLAAS4HEP_ARGV, "serve", "--only", "inference", "--inference-workers", "2"]
    log = tmp / "serve.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*argv, "--grpc-port", str(grpc_port)], env=env, stdout=out, stderr=out
        )
    svc = Service(proc, f"http://127.0.0.1:{port}", port, grpc_port, headers, repo, sources, log)
    try:
        _ready(svc)
        yield svc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_both_workers_answer_http_and_grpc(service: Service) -> None:
    pids = _ready(service)
    expected = _expected(service.sources[1])
    seen_http: collections.Counter[int] = collections.Counter()
    for _ in range(40):  # fresh connections until each worker has taken some
        with httpx.Client(headers=service.headers, timeout=30) as client:
            response = client.post(f"{service.url}/v2/models/mlp/infer", json=BODY)
            assert response.status_code == 200, response.text
            np.testing.assert_allclose(response.json()["outputs"][0]["data"], expected, rtol=1e-5)
            seen_http[_http_pid(service, response)] += 1
        if len(seen_http) == 2 and min(seen_http.values()) >= 2:
            break
    assert sorted(seen_http) == pids, seen_http

    clients = _clients_per_worker(service)
    try:
        assert sorted(clients) == pids
        for client in clients.values():
            version, scores = _grpc_infer(client, service.headers)
            assert version == "1"
            np.testing.assert_allclose(scores, expected, rtol=1e-5)
    finally:
        for client in clients.values():
            client.close()
    assert "inference worker 0 pid" in service.tail()  # logs are prefixed per worker


def test_published_version_reaches_every_worker(service: Service) -> None:
    pids = _ready(service)
    grpc_clients = _clients_per_worker(service)
    http_clients = _http_clients_per_worker(service)
    try:
        assert sorted(http_clients) == pids
        current = int(_grpc_infer(next(iter(grpc_clients.values())), service.headers)[0])
        version = service.repo.publish("mlp", service.sources[2])
        assert version == current + 1
        published = time.monotonic()
        waiting = {("grpc", pid) for pid in pids} | {("http", pid) for pid in pids}
        while waiting:
            for pid, client in grpc_clients.items():
                if _grpc_infer(client, service.headers)[0] == str(version):
                    waiting.discard(("grpc", pid))
            for pid, client in http_clients.items():  # kept alive: each stays on its worker
                response = client.post(f"{service.url}/v2/models/mlp/infer", json=BODY)
                assert response.status_code == 200, response.text
                assert _http_pid(service, response) == pid
                if response.json()["model_version"] == str(version):
                    waiting.discard(("http", pid))
            assert time.monotonic() - published < 25 * POLL_S, f"still old: {waiting}"
            time.sleep(0.02)
        # /metrics: every live worker's loaded versions (pid label), counters summed
        pages = {}
        for pid, client in http_clients.items():
            answered_by, pages[pid] = _metrics(client, service)
            assert answered_by == pid
        loaded = [
            row
            for row in pages[pids[0]].splitlines()
            if row.startswith("mlaas4hep_inference_model_version_loaded{") and row.endswith(" 1.0")
        ]
        for pid in pids:
            labels = ('model="mlp"', f'pid="{pid}"', f'version="{version}"')
            assert any(all(label in row for label in labels) for row in loaded), (pid, loaded)
        totals = [_grpc_total(text) for text in pages.values()]
        assert totals[0] == totals[1] > 0  # either worker renders everyone's counts
    finally:
        for client in http_clients.values():
            client.close()
        for c in grpc_clients.values():
            c.close()


def _grpc_total(text: str) -> float:
    rows = [r for r in text.splitlines() if r.startswith("mlaas4hep_inference_requests_total{")]
    return sum(float(r.rsplit(" ", 1)[1]) for r in rows if 'protocol="grpc"' in r)


def test_killed_worker_is_restarted_and_requests_keep_succeeding(service: Service) -> None:
    pids = _ready(service)
    victim = psutil.Process(pids[0])
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    failures = []
    for _ in range(20):  # the survivor answers meanwhile, on both ports
        response = httpx.post(
            f"{service.url}/v2/models/mlp/infer", json=BODY, headers=service.headers, timeout=30
        )
        if response.status_code != 200:
            failures.append(response.text)
        client = tgrpc.InferenceServerClient(service.grpc_target, channel_args=OWN_CONNECTION)
        try:
            _grpc_infer(client, service.headers)
        except Exception as exc:  # recorded and asserted below
            failures.append(repr(exc))
        finally:
            client.close()
    assert failures == []
    restarted = _ready(service)
    assert pids[0] not in restarted
    assert pids[1] in restarted
    assert f"(pid {pids[0]}) exited with -9; restarting" in service.tail()
    with httpx.Client(headers=service.headers, timeout=30) as client:
        _pid, text = _metrics(client, service)
    assert f'pid="{pids[0]}"' not in text  # the dead worker's gauges are gone
    clients = _clients_per_worker(service)  # the new worker answers too
    try:
        assert sorted(clients) == restarted
    finally:
        for c in clients.values():
            c.close()


def test_sigterm_stops_every_worker(service: Service) -> None:
    pids = _ready(service)
    service.proc.send_signal(signal.SIGTERM)
    assert service.proc.wait(timeout=40) == 0, service.tail()
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    for port in (service.http_port, service.grpc_port):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free again
