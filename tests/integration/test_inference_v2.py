"""The V2 protocol driven by the unmodified tritonclient[http] and by raw HTTP requests."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from conftest_serve import ALICE, BOB, authenticate, inference_server, own, run_server
from fastapi import FastAPI
from tritonclient.utils import InferenceServerException

from mlaas4hep.auth.principal import Principal
from mlaas4hep.serve.app import create_inference_service
from mlaas4hep.serve.samples import write_sample_model
from mlaas4hep.serve.settings import BatchPolicy, InferenceSettings

LAYERS = (42, 32, 1)


def _authorize(principal: Principal, action: str, model: str) -> bool:
    # bob may use every model but "private", and may not change the repository.
    if principal.subject == "bob":
        return model != "private" and action in ("infer", "read")
    return True


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    repo = tmp_path_factory.mktemp("repo")
    write_sample_model(repo / "mlp" / "1", LAYERS, seed=1)
    write_sample_model(repo / "private" / "1", LAYERS, seed=2)
    own(repo, "mlp", share="*:read")  # bob may use it; "private" is alice's alone
    own(repo, "private")
    with inference_server(repo, authorize=_authorize) as url:
        yield url


@pytest.fixture(scope="module")
def reference(server: str, tmp_path_factory: pytest.TempPathFactory) -> ort.InferenceSession:
    repo = Path(tmp_path_factory.mktemp("ref"))
    write_sample_model(repo, LAYERS, seed=1)
    return ort.InferenceSession(str(repo / "model.onnx"), providers=["CPUExecutionProvider"])


@pytest.fixture
def client(server: str) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url=server.removeprefix("http://"))
    yield c
    c.close()


def _expected(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    return np.asarray(session.run(["score"], {"features": x})[0])


def test_health_needs_no_token(server: str) -> None:
    assert httpx.get(f"{server}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{server}/v2/health/ready").status_code == 200


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "x"}])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2"),
        ("GET", "/v2/models/mlp"),
        ("GET", "/v2/models/mlp/ready"),
        ("POST", "/v2/models/mlp/infer"),
        ("POST", "/v2/repository/index"),
        ("POST", "/json"),
        ("GET", "/models"),
        ("GET", "/metrics"),
    ],
)
def test_missing_or_wrong_token_is_401(
    server: str, headers: dict[str, str], method: str, path: str
) -> None:
    response = httpx.request(method, server + path, headers=headers, content=b"{}")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="mlaas4hep"'  # as the job API
    assert "error" in response.json()


def test_server_and_model_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata(headers={**ALICE})
    assert "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata("mlp", headers={**ALICE})
    assert model["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 42]}]
    assert model["outputs"] == [{"name": "score", "datatype": "FP32", "shape": [-1, 1]}]
    assert model["versions"] == ["1"]
    assert model["parameters"]["feature_names"][:2] == ["f0", "f1"]
    assert client.is_model_ready("mlp", headers={**ALICE})
    assert client.is_model_ready("mlp", "1", headers={**ALICE})
    assert not client.is_model_ready("mlp", "7", headers={**ALICE})
    assert not client.is_model_ready("nope", headers={**ALICE})


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("binary_out", [True, False, None])
def test_infer_matches_onnxruntime(
    client: triton.InferenceServerClient,
    reference: ort.InferenceSession,
    binary_in: bool,
    binary_out: bool | None,
) -> None:
    x = np.random.default_rng(0).normal(size=(7, 42)).astype(np.float32)
    tensor = triton.InferInput("features", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary_in)
    outputs = None if binary_out is None else [triton.InferRequestedOutput("score", binary_out)]
    result = client.infer("mlp", [tensor], outputs=outputs, headers={**ALICE}, request_id="r1")
    np.testing.assert_allclose(result.as_numpy("score"), _expected(reference, x), rtol=1e-5)
    assert result.get_response()["model_version"] == "1"
    assert result.get_response()["id"] == "r1"


def test_binary_request_without_content_type(server: str, reference: ort.InferenceSession) -> None:
    x = np.arange(2 * 42, dtype=np.float32).reshape(2, 42) / 100
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "shape": [2, 42],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "score", "parameters": {"binary_data": True}}],
        }
    ).encode()
    response = httpx.post(
        f"{server}/v2/models/mlp/versions/1/infer",
        content=header + x.tobytes(),
        headers={**ALICE, "Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    assert "content-type" not in httpx.Request("POST", "http://x", content=b"").headers
    length = int(response.headers["inference-header-content-length"])
    doc = json.loads(response.content[:length])
    assert doc["outputs"][0]["parameters"]["binary_data_size"] == 8
    got = np.frombuffer(response.content[length:], dtype="<f4").reshape(2, 1)
    np.testing.assert_allclose(got, _expected(reference, x), rtol=1e-5)


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"not json", 400, "not valid JSON"),
        (b'{"inputs": []}', 400, "non-empty 'inputs'"),
        (
            b'{"inputs": [{"name": "x", "shape": [1, 42], "datatype": "FP32", "data": ['
            + b",".join([b"0"] * 42)
            + b"]}]}",
            400,
            "takes inputs ['features']",
        ),
        (
            b'{"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32",'
            b' "data": [1, 2, 3]}]}',
            400,
            "must have shape [-1, 42]",
        ),
        (
            b'{"inputs": [{"name": "features", "shape": [1, 2], "datatype": "FP64",'
            b' "data": [1, 2]}]}',
            400,
            "must be FP32",
        ),
        (
            b'{"inputs": [{"name": "features", "shape": [1, 2], "datatype": "STR",'
            b' "data": [1, 2]}]}',
            400,
            "unsupported datatype 'STR'",
        ),
    ],
)
def test_bad_requests_get_400_with_error(
    server: str, body: bytes, status: int, fragment: str
) -> None:
    response = httpx.post(f"{server}/v2/models/mlp/infer", content=body, headers={**ALICE})
    assert response.status_code == status
    assert fragment in response.json()["error"]


def test_unknown_model_or_version_is_404(server: str) -> None:
    for path in ("/v2/models/mpl", "/v2/models/mlp/versions/9", "/v2/models/mlp/versions/x"):
        response = httpx.get(server + path, headers={**ALICE})
        assert response.status_code == 404
        assert "error" in response.json()
    assert "'mlp'" in httpx.get(f"{server}/v2/models/mpl", headers={**ALICE}).json()["error"]


def test_authorize_is_consulted(client: triton.InferenceServerClient, server: str) -> None:
    assert client.get_model_metadata("mlp", headers={**BOB})["name"] == "mlp"
    response = httpx.get(f"{server}/v2/models/private", headers={**BOB})
    assert response.status_code == 403
    assert "private" in response.json()["error"]
    index = client.get_model_repository_index(headers={**BOB})
    assert {m["name"] for m in index} == {"mlp"}
    with pytest.raises(InferenceServerException, match="may not modify"):
        client.unload_model("mlp", headers={**BOB})


def test_repository_extension(client: triton.InferenceServerClient) -> None:
    index = client.get_model_repository_index(headers={**ALICE})
    assert {(m["name"], m["version"], m["state"]) for m in index} == {
        ("mlp", "1", "READY"),
        ("private", "1", "READY"),
    }
    client.unload_model("private", headers={**ALICE})
    assert not client.is_model_ready("private", headers={**ALICE})
    states = {m["name"]: m for m in client.get_model_repository_index(headers={**ALICE})}
    assert states["private"]["state"] == "UNAVAILABLE"
    assert states["private"]["reason"] == "unloaded"
    client.load_model("private", headers={**ALICE})
    assert client.is_model_ready("private", headers={**ALICE})
    with pytest.raises(InferenceServerException, match="no version in the repository"):
        client.load_model("nothing-here", headers={**ALICE})


def test_metrics_count_requests(client: triton.InferenceServerClient, server: str) -> None:
    x = np.zeros((3, 42), np.float32)
    tensor = triton.InferInput("features", [3, 42], "FP32")
    tensor.set_data_from_numpy(x)
    client.infer("mlp", [tensor], headers={**ALICE})
    text = httpx.get(f"{server}/metrics", headers={**ALICE}).text
    assert (
        'mlaas4hep_inference_requests_total{model="mlp",outcome="ok",protocol="v2",version="1"}'
        in text
    )
    assert "mlaas4hep_inference_batch_rows_bucket" in text
    assert 'mlaas4hep_inference_model_version_loaded{model="mlp",version="1"} 1.0' in text


def test_router_included_in_another_app_starts_the_service(tmp_path: Path) -> None:
    write_sample_model(tmp_path / "m" / "1", LAYERS)
    settings = InferenceSettings(repository=tmp_path, poll_interval_s=0)
    service = create_inference_service(settings, authenticate=authenticate)
    app = FastAPI()
    app.include_router(service.router)  # its lifespan loads the repository
    with run_server(app) as url:
        assert httpx.get(f"{url}/v2/health/ready").json() == {"ready": True}
        body = {"values": [0.0] * 42, "model": "m"}
        assert httpx.post(f"{url}/json", json=body, headers=ALICE).status_code == 200


def test_concurrent_requests_are_batched_through_the_thread_pool(
    tmp_path: Path, reference: ort.InferenceSession
) -> None:
    write_sample_model(tmp_path / "mlp" / "1", LAYERS, seed=1)
    batching = BatchPolicy(max_batch_size=64, max_queue_delay_ms=50)
    rows = np.random.default_rng(4).normal(size=(16, 42)).astype(np.float32)
    with inference_server(tmp_path, inline_budget_us=0, batching=batching) as url:

        def one(i: int) -> list[float]:
            body = {
                "inputs": [
                    {
                        "name": "features",
                        "shape": [1, 42],
                        "datatype": "FP32",
                        "data": rows[i].tolist(),
                    }
                ]
            }
            response = httpx.post(f"{url}/v2/models/mlp/infer", json=body, headers=ALICE)
            assert response.status_code == 200, response.text
            return list(response.json()["outputs"][0]["data"])

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(one, range(16)))
        metrics = httpx.get(f"{url}/metrics", headers=ALICE).text
    np.testing.assert_allclose(answers, _expected(reference, rows), rtol=1e-5)
    batches = re.search(r'mlaas4hep_inference_batch_rows_count\{model="mlp"\} (\S+)', metrics)
    assert batches is not None
    assert float(batches.group(1)) < 16  # coalesced
