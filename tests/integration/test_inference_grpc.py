"""V2 over gRPC driven by the unmodified ``tritonclient.grpc`` (sync, asyncio, streaming)
against a real server: the same models, tokens, ownership and batcher as HTTP, answers
identical to HTTP V2 and to in-process ONNX Runtime."""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.grpc.aio as tgrpc_aio
import tritonclient.http as thttp
from conftest_serve import inference_server, own
from tritonclient.utils import InferenceServerException

from mlaas4hep.auth.principal import Principal
from mlaas4hep.loopback import free_port
from mlaas4hep.serve.samples import write_sample_model
from mlaas4hep.serve.settings import BatchPolicy

LAYERS = (42, 32, 1)
ALICE = (("authorization", "Bearer alice-token"),)
BOB = (("authorization", "Bearer bob-token"),)


def _authorize(principal: Principal, action: str, model: str) -> bool:
    if principal.subject == "bob":
        return model != "private" and action in ("infer", "read")
    return True


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(HTTP URL, gRPC host:port) of one service."""
    repo = tmp_path_factory.mktemp("repo")
    write_sample_model(repo / "mlp" / "1", LAYERS, seed=1)
    write_sample_model(repo / "mlp" / "2", LAYERS, seed=3)
    write_sample_model(repo / "private" / "1", LAYERS, seed=2)
    own(repo, "mlp", share="*:read")
    own(repo, "private")
    port = free_port()
    with inference_server(
        repo, authorize=_authorize, grpc_port=port, default_latest_versions=2
    ) as url:
        yield url, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[int, ort.InferenceSession]:
    sessions = {}
    for version, seed in ((1, 1), (2, 3)):
        d = Path(tmp_path_factory.mktemp(f"ref{version}"))
        write_sample_model(d, LAYERS, seed=seed)
        sessions[version] = ort.InferenceSession(
            str(d / "model.onnx"), providers=["CPUExecutionProvider"]
        )
    return sessions


@pytest.fixture
def client(servers: tuple[str, str]) -> Iterator[tgrpc.InferenceServerClient]:
    c = tgrpc.InferenceServerClient(url=servers[1])
    yield c
    c.close()


def _rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, LAYERS[0])).astype(np.float32)


def _input(x: np.ndarray) -> tgrpc.InferInput:
    features = tgrpc.InferInput("features", list(x.shape), "FP32")
    features.set_data_from_numpy(x)
    return features


def _headers(meta: tuple[tuple[str, str], ...]) -> dict[str, str]:
    return dict(meta)


def test_health_needs_no_token(client: tgrpc.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()


def test_metadata_and_config(client: tgrpc.InferenceServerClient) -> None:
    server = client.get_server_metadata(headers=_headers(ALICE))
    assert server.name == "mlaas4hep"
    meta = client.get_model_metadata("mlp", headers=_headers(ALICE))
    assert meta.name == "mlp"
    assert list(meta.versions) == ["1", "2"]
    assert meta.inputs[0].name == "features"
    assert meta.inputs[0].datatype == "FP32"
    assert list(meta.inputs[0].shape) == [-1, LAYERS[0]]
    assert client.is_model_ready("mlp", "1", headers=_headers(ALICE))
    assert not client.is_model_ready("mlp", "9", headers=_headers(ALICE))
    config = client.get_model_config("mlp", headers=_headers(ALICE)).config
    assert config.name == "mlp"
    assert config.input[0].name == "features"


@pytest.mark.parametrize("rows", [1, 7, 4096])
def test_binary_infer_equals_onnxruntime_and_http(
    client: tgrpc.InferenceServerClient,
    servers: tuple[str, str],
    reference: dict[int, ort.InferenceSession],
    rows: int,
) -> None:
    x = _rows(rows, seed=rows)
    result = client.infer("mlp", [_input(x)], model_version="1", headers=_headers(ALICE))
    got = result.as_numpy("score")
    want = reference[1].run(["score"], {"features": x})[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    response = result.get_response()
    assert response.model_name == "mlp"
    assert response.model_version == "1"
    http = thttp.InferenceServerClient(url=servers[0].removeprefix("http://"))
    try:
        features = thttp.InferInput("features", list(x.shape), "FP32")
        features.set_data_from_numpy(x, binary_data=True)
        over_http = http.infer(
            "mlp", [features], model_version="1", headers={"Authorization": "Bearer alice-token"}
        ).as_numpy("score")
    finally:
        http.close()
    np.testing.assert_array_equal(got, over_http)


def test_typed_contents_and_versions(
    servers: tuple[str, str], reference: dict[int, ort.InferenceSession]
) -> None:
    """Typed ``fp32_contents`` (no raw bytes), the latest version by default."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc

    x = _rows(3, seed=5)
    request = pb.ModelInferRequest(model_name="mlp", id="req-1")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=list(x.shape))
    tensor.contents.fp32_contents.extend(x.reshape(-1).tolist())
    with grpc.insecure_channel(servers[1]) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(request, metadata=ALICE)
    assert response.id == "req-1"
    assert response.model_version == "2"  # the newest version in service
    got = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(response.outputs[0].shape)
    np.testing.assert_allclose(got, reference[2].run(["score"], {"features": x})[0], atol=1e-6)


def test_errors_map_to_grpc_codes(client: tgrpc.InferenceServerClient) -> None:
    x = _input(_rows(2))
    cases = [
        ({}, "StatusCode.UNAUTHENTICATED"),
        ({"authorization": "Bearer nope"}, "StatusCode.UNAUTHENTICATED"),
    ]
    for headers, status in cases:
        with pytest.raises(InferenceServerException) as info:
            client.infer("mlp", [x], headers=headers)
        assert info.value.status() == status
    with pytest.raises(InferenceServerException) as info:
        client.infer("private", [x], headers=_headers(BOB))
    assert info.value.status() == "StatusCode.PERMISSION_DENIED"
    with pytest.raises(InferenceServerException) as info:
        client.infer("absent", [x], headers=_headers(ALICE))
    assert info.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as info:
        client.infer("mlp", [x], model_version="7", headers=_headers(ALICE))
    assert info.value.status() == "StatusCode.NOT_FOUND"
    wrong = tgrpc.InferInput("features", [2, 5], "FP32")
    wrong.set_data_from_numpy(np.zeros((2, 5), np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("mlp", [wrong], headers=_headers(ALICE))
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "features" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("private", headers=_headers(BOB))
    assert info.value.status() == "StatusCode.PERMISSION_DENIED"


def test_statistics_and_repository(client: tgrpc.InferenceServerClient) -> None:
    before = client.get_inference_statistics("mlp", "1", headers=_headers(ALICE))
    count = before.model_stats[0].inference_count if before.model_stats else 0
    for _ in range(3):
        client.infer("mlp", [_input(_rows(4))], model_version="1", headers=_headers(ALICE))
    after = client.get_inference_statistics("mlp", "1", headers=_headers(ALICE))
    (stats,) = after.model_stats
    assert stats.name == "mlp"
    assert stats.version == "1"
    assert stats.inference_count >= count + 12
    assert stats.inference_stats.success.count >= 3
    index = client.get_model_repository_index(headers=_headers(BOB))
    assert {(m.name, m.version) for m in index.models} == {("mlp", "1"), ("mlp", "2")}


def test_streaming(servers: tuple[str, str], reference: dict[int, ort.InferenceSession]) -> None:
    answers: queue.Queue[object] = queue.Queue()
    client = tgrpc.InferenceServerClient(url=servers[1])
    try:
        client.start_stream(callback=lambda result, error: answers.put(error or result),
                            headers=_headers(ALICE))  # fmt: skip
        xs = [_rows(n, seed=n) for n in (1, 5, 9)]
        for x in xs:
            client.async_stream_infer("mlp", [_input(x)], model_version="1")
        client.async_stream_infer("absent", [_input(xs[0])])
        got = [answers.get(timeout=30) for _ in range(4)]
    finally:
        client.stop_stream()
        client.close()
    for x, result in zip(xs, got[:3], strict=True):
        assert isinstance(result, tgrpc.InferResult), result
        want = reference[1].run(["score"], {"features": x})[0]
        np.testing.assert_allclose(result.as_numpy("score"), want, atol=1e-6)
    assert isinstance(got[3], InferenceServerException)
    assert "absent" in got[3].message()


def test_asyncio_client_concurrent(
    servers: tuple[str, str], reference: dict[int, ort.InferenceSession]
) -> None:
    async def run() -> list[np.ndarray]:
        client = tgrpc_aio.InferenceServerClient(url=servers[1])
        try:
            calls = []
            for i in range(32):
                x = _rows(1 + i % 4, seed=i)
                features = tgrpc_aio.InferInput("features", list(x.shape), "FP32")
                features.set_data_from_numpy(x)
                calls.append(
                    client.infer("mlp", [features], model_version="1", headers=_headers(ALICE))
                )
            return [r.as_numpy("score") for r in await asyncio.gather(*calls)]
        finally:
            await client.close()

    for i, got in enumerate(asyncio.run(run())):
        x = _rows(1 + i % 4, seed=i)
        np.testing.assert_allclose(got, reference[1].run(["score"], {"features": x})[0], atol=1e-6)


def test_overload_is_resource_exhausted(tmp_path: Path) -> None:
    """A full queue answers RESOURCE_EXHAUSTED with a retry hint, at once."""
    write_sample_model(tmp_path / "heavy" / "1", (42, 1024, 1024, 1), seed=1)
    port = free_port()
    policy = BatchPolicy(max_batch_size=4096, max_queue_size=1, max_queue_rows=4096)
    with inference_server(tmp_path, grpc_port=port, batching=policy, inline_budget_us=0):

        async def flood() -> list[BaseException | object]:
            client = tgrpc_aio.InferenceServerClient(url=f"127.0.0.1:{port}")
            try:
                x = _rows(4096)
                calls = []
                for _ in range(24):
                    features = tgrpc_aio.InferInput("features", list(x.shape), "FP32")
                    features.set_data_from_numpy(x)
                    calls.append(client.infer("heavy", [features], headers=_headers(ALICE)))
                return await asyncio.gather(*calls, return_exceptions=True)
            finally:
                await client.close()

        results = asyncio.run(flood())
    shed = [r for r in results if isinstance(r, InferenceServerException)]
    served = [r for r in results if not isinstance(r, BaseException)]
    assert served, results
    assert shed, "a queue of one should shed some of 24 concurrent large requests"
    assert {e.status() for e in shed} == {"StatusCode.RESOURCE_EXHAUSTED"}
    assert all("queue" in e.message() or "retry" in e.message().lower() for e in shed)
