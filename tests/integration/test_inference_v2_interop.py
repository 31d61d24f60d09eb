"""V2 interoperability with the unmodified tritonclient: compression, config, statistics.

A real uvicorn server on loopback. Request bodies gzip/deflate compressed by tritonclient
(``request_compression_algorithm``) and compressed answers (``response_compression_
algorithm``) must give exactly the uncompressed answers; compression bombs, corrupt
streams and unknown codings must be refused with 413 / 400 / 415 in the protocol's
error shape. ``get_model_config`` and ``get_inference_statistics`` must decode, and the
statistics must count what the data plane served. The Python snippet of
docs/inference.md runs as written against a served model.
"""

from __future__ import annotations

import functools
import gzip
import json
import re
import resource
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
import tritonclient.http as triton
from conftest_serve import ALICE, BOB, inference_server, own
from tritonclient.utils import InferenceServerException

from mlaas4hep.auth.principal import Principal
from mlaas4hep.serve.samples import mlp_model, write_sample_model

LAYERS = (42, 32, 1)
CAP = 1 << 20  # max_request_bytes of the server under test: the bombs inflate past it
DOCS = Path(__file__).parents[2] / "docs" / "inference.md"


def _authorize(principal: Principal, action: str, model: str) -> bool:
    # bob may read and use every model but "private"; alice everything.
    if principal.subject == "bob":
        return model != "private" and action in ("infer", "read")
    return True


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    write_sample_model(root / "mlp" / "1", LAYERS, seed=1)
    write_sample_model(root / "mlp" / "2", LAYERS, seed=2)
    (root / "mlp" / "config.json").write_text('{"version_policy": {"all": {}}}')
    write_sample_model(root / "private" / "1", LAYERS, seed=3)
    # what the docs' snippet talks to: a bundle's graph, output "scores", 36 features
    (root / "tth-classifier" / "1").mkdir(parents=True)
    model = mlp_model((36, 16, 1), seed=4, output_name="scores")
    onnx.save(model, str(root / "tth-classifier" / "1" / "model.onnx"))
    own(root, "mlp", share="*:read")
    own(root, "tth-classifier", share="*:read")
    own(root, "private")
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[str]:
    with inference_server(
        repo, authorize=_authorize, max_request_bytes=CAP, poll_interval_s=0
    ) as url:
        yield url


@pytest.fixture
def client(server: str) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url=server.removeprefix("http://"))
    yield c
    c.close()


def _infer(
    client: triton.InferenceServerClient,
    x: np.ndarray,
    *,
    binary: bool,
    version: str = "",
    request: str | None = None,
    response: str | None = None,
) -> np.ndarray:
    tensor = triton.InferInput("features", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    result = client.infer(
        "mlp",
        [tensor],
        model_version=version,
        outputs=[triton.InferRequestedOutput("score", binary_data=binary)],
        headers={**ALICE},
        request_compression_algorithm=request,
        response_compression_algorithm=response,
    )
    return np.asarray(result.as_numpy("score"))


# ---- compression ----------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize(
    ("request_coding", "response_coding"),
    [("gzip", None), ("deflate", None), (None, "gzip"), (None, "deflate"), ("gzip", "gzip")],
)
def test_compressed_requests_and_answers_are_identical(
    client: triton.InferenceServerClient,
    binary: bool,
    request_coding: str | None,
    response_coding: str | None,
) -> None:
    x = np.random.default_rng(1).normal(size=(600, 42)).astype(np.float32)
    plain = _infer(client, x, binary=binary)
    compressed = _infer(client, x, binary=binary, request=request_coding, response=response_coding)
    assert compressed.shape == (600, 1)
    assert np.array_equal(plain, compressed)


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_answers_are_compressed_only_when_asked_and_worth_it(server: str, coding: str) -> None:
    def body(rows: int) -> bytes:
        tensor = {"name": "features", "shape": [rows, 42], "datatype": "FP32"}
        return json.dumps({"inputs": [{**tensor, "data": [0.0] * (rows * 42)}]}).encode()

    url = f"{server}/v2/models/mlp/infer"
    accept = {**ALICE, "Accept-Encoding": coding}
    big = httpx.post(url, content=body(500), headers=accept)
    assert big.status_code == 200
    assert big.headers["content-encoding"] == coding
    assert "accept-encoding" in big.headers["vary"].lower()
    assert len(big.json()["outputs"][0]["data"]) == 500  # httpx decompressed it
    small = httpx.post(url, content=body(1), headers=accept)
    assert small.status_code == 200
    assert "content-encoding" not in small.headers
    unasked = httpx.post(url, content=body(500), headers={**ALICE, "Accept-Encoding": "identity"})
    assert "content-encoding" not in unasked.headers


def test_binary_answer_header_length_is_of_the_uncompressed_body(server: str) -> None:
    x = np.ones((400, 42), np.float32)
    header = (
        b'{"inputs":[{"name":"features","shape":[400,42],"datatype":"FP32",'
        b'"parameters":{"binary_data_size":%d}}],"parameters":{"binary_data_output":true}}'
        % x.nbytes
    )
    response = httpx.post(
        f"{server}/v2/models/mlp/infer",
        content=gzip.compress(header + x.tobytes()),
        headers={
            **ALICE,
            "Content-Encoding": "gzip",
            "Accept-Encoding": "gzip",
            "Inference-Header-Content-Length": str(len(header)),
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-encoding"] == "gzip"
    length = int(response.headers["inference-header-content-length"])
    body = response.content  # decompressed by httpx
    assert len(body) == length + 400 * 4
    assert body[:length].startswith(b"{")
    assert body[:length].endswith(b"}")


def test_tfaas_json_answers_compressed_when_asked(server: str) -> None:
    rows = b",".join([b"[%s]" % b",".join([b"0.5"] * 42)] * 300)
    doc = b'{"model": "mlp", "values": [%s]}' % rows
    # httpx asks for gzip by default: say "identity" for the plain one
    plain = httpx.post(
        f"{server}/json", content=doc, headers={**ALICE, "Accept-Encoding": "identity"}
    )
    packed = httpx.post(f"{server}/json", content=doc, headers={**ALICE, "Accept-Encoding": "gzip"})
    assert packed.headers["content-encoding"] == "gzip"
    assert "content-encoding" not in plain.headers
    assert packed.json() == plain.json()


def test_tfaas_json_takes_a_compressed_body(server: str) -> None:
    doc = b'{"model": "mlp", "values": [%s]}' % b",".join([b"0.5"] * 42)
    plain = httpx.post(f"{server}/json", content=doc, headers={**ALICE})
    for coding, packed in (("gzip", gzip.compress(doc)), ("deflate", zlib.compress(doc))):
        answer = httpx.post(
            f"{server}/json", content=packed, headers={**ALICE, "Content-Encoding": coding}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == plain.json()


@functools.cache
def _zeros_bomb(coding: str, size: int) -> bytes:
    zeros = bytes(size)
    return gzip.compress(zeros, 9) if coding == "gzip" else zlib.compress(zeros, 9)


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
@pytest.mark.parametrize("chunked", [False, True])
def test_a_compression_bomb_is_refused_quickly_with_flat_memory(
    server: str, coding: str, chunked: bool
) -> None:
    bomb = _zeros_bomb(coding, 100 << 20)  # 100 MB of zeros in ~100 kB, over the 1 MiB cap
    assert len(bomb) < CAP
    content: bytes | Iterator[bytes] = bomb
    if chunked:  # no Content-Length: the cap must hold while streaming
        content = iter([bomb[i : i + 8192] for i in range(0, len(bomb), 8192)])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    response = httpx.post(
        f"{server}/v2/models/mlp/infer",
        content=content,
        headers={**ALICE, "Content-Encoding": coding},
    )
    elapsed = time.perf_counter() - start
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert response.status_code == 413
    assert "inflates past" in response.json()["error"]
    assert elapsed < 5
    assert grown_mib < 32  # inflating 100 MB would show; at most the 1 MiB cap is held


@pytest.mark.parametrize(
    ("coding", "body", "words"),
    [
        ("gzip", gzip.compress(b'{"inputs": []}' * 50)[:-12], "ends before the end"),
        ("gzip", b"\x1f\x8b\x08\x00garbage-not-a-stream", "not valid gzip"),
        ("deflate", zlib.compress(b'{"inputs": []}')[:-3], "ends before the end"),
        ("deflate", b"\xff\xfe\xfd not deflate", "not valid deflate"),
        ("gzip", b"plain text, not gzip", "not valid gzip"),
    ],
)
def test_truncated_or_corrupt_bodies_are_400(
    server: str, coding: str, body: bytes, words: str
) -> None:
    response = httpx.post(
        f"{server}/v2/models/mlp/infer",
        content=body,
        headers={**ALICE, "Content-Encoding": coding},
    )
    assert response.status_code == 400
    message = response.json()["error"]
    assert words in message
    assert "Content-Encoding" in message


@pytest.mark.parametrize("coding", ["br", "zstd", "gzip, deflate", "compress"])
@pytest.mark.parametrize("path", ["/v2/models/mlp/infer", "/json"])
def test_unknown_content_encoding_is_415(server: str, coding: str, path: str) -> None:
    response = httpx.post(
        server + path, content=b"{}", headers={**ALICE, "Content-Encoding": coding}
    )
    assert response.status_code == 415
    assert "gzip, deflate" in response.json()["error"]


def test_identity_encoding_is_plain(client: triton.InferenceServerClient, server: str) -> None:
    x = np.ones((2, 42), np.float32)
    body = (
        b'{"inputs":[{"name":"features","shape":[2,42],"datatype":"FP32","data":%s}]}'
        % str(x.ravel().tolist()).encode()
    )
    response = httpx.post(
        f"{server}/v2/models/mlp/infer",
        content=body,
        headers={**ALICE, "Content-Encoding": "identity"},
    )
    assert response.status_code == 200
    assert np.allclose(
        response.json()["outputs"][0]["data"], _infer(client, x, binary=False).ravel()
    )


# ---- model configuration ----------------------------------------------------------------


def test_model_config_decodes(client: triton.InferenceServerClient) -> None:
    config = client.get_model_config("mlp", headers={**ALICE})
    assert config["name"] == "mlp"
    assert config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == 1024
    assert config["version_policy"] == {"all": {}}
    assert config["input"] == [{"name": "features", "data_type": "TYPE_FP32", "dims": [42]}]
    assert config["output"] == [{"name": "score", "data_type": "TYPE_FP32", "dims": [1]}]
    assert config["parameters"]["version"] == {"string_value": "2"}
    first = client.get_model_config("mlp", "1", headers={**BOB})
    assert first["parameters"]["version"] == {"string_value": "1"}
    extensions = client.get_server_metadata(headers={**ALICE})["extensions"]
    assert {"model_configuration", "statistics"} <= set(extensions)


def test_model_config_errors_decode(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as denied:
        client.get_model_config("private", headers={**BOB})
    assert denied.value.status() == "403"
    assert "may not read" in denied.value.message()
    with pytest.raises(InferenceServerException) as missing:
        client.get_model_config("nope", headers={**ALICE})
    assert missing.value.status() == "404"
    assert "not loaded" in missing.value.message()
    with pytest.raises(InferenceServerException) as no_version:
        client.get_model_config("mlp", "9", headers={**ALICE})
    assert no_version.value.status() == "404"
    assert "serving: [1, 2]" in no_version.value.message()


# ---- statistics -------------------------------------------------------------------------


def _stat(stats: dict, version: str) -> dict:
    (found,) = [s for s in stats["model_stats"] if s["version"] == version]
    return found


def test_statistics_count_what_was_served(client: triton.InferenceServerClient) -> None:
    before = client.get_inference_statistics("mlp", headers={**ALICE})
    assert {s["version"] for s in before["model_stats"]} == {"1", "2"}
    v1, v2 = _stat(before, "1"), _stat(before, "2")
    x = np.ones((3, 42), np.float32)
    for _ in range(5):
        _infer(client, x, binary=True, version="1")
    bad = triton.InferInput("features", [3, 41], "FP32")
    bad.set_data_from_numpy(np.ones((3, 41), np.float32))
    with pytest.raises(InferenceServerException):  # a bad request: a failure of version 1
        client.infer("mlp", [bad], model_version="1", headers={**ALICE})
    after = client.get_inference_statistics("mlp", "1", headers={**BOB})
    (now,) = after["model_stats"]
    assert now["name"] == "mlp"
    assert now["version"] == "1"
    assert now["inference_count"] == v1["inference_count"] + 15
    assert now["execution_count"] == v1["execution_count"] + 5
    stats, old = now["inference_stats"], v1["inference_stats"]
    assert stats["success"]["count"] == old["success"]["count"] + 5
    assert stats["success"]["ns"] > old["success"]["ns"]
    assert stats["fail"]["count"] == old["fail"]["count"] + 1
    for phase in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert stats[phase]["count"] == old[phase]["count"] + 5, phase
    assert stats["compute_infer"]["ns"] > old["compute_infer"]["ns"]
    assert now["last_inference"] >= int(time.time() * 1000) - 60_000
    batch = {b["batch_size"]: b for b in now["batch_stats"]}
    assert batch[3]["compute_infer"]["count"] >= 5
    untouched = _stat(client.get_inference_statistics("mlp", headers={**ALICE}), "2")
    assert untouched["inference_count"] == v2["inference_count"]


def test_statistics_count_concurrent_requests(server: str) -> None:
    def one_client(_: int) -> None:
        c = triton.InferenceServerClient(url=server.removeprefix("http://"))
        try:
            for _ in range(5):
                _infer(c, np.ones((2, 42), np.float32), binary=True, version="2")
        finally:
            c.close()

    c = triton.InferenceServerClient(url=server.removeprefix("http://"))
    before = _stat(c.get_inference_statistics("mlp", "2", headers={**ALICE}), "2")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one_client, range(8)))
    after = _stat(c.get_inference_statistics("mlp", "2", headers={**ALICE}), "2")
    c.close()
    assert after["inference_count"] - before["inference_count"] == 80
    done = (
        after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"]
    )
    assert done == 40
    runs = after["execution_count"] - before["execution_count"]
    assert 1 <= runs <= 40  # coalesced requests share a run
    queued = (
        after["inference_stats"]["queue"]["count"] - before["inference_stats"]["queue"]["count"]
    )
    assert queued == 40
    sizes = sum(b["compute_infer"]["count"] for b in after["batch_stats"])
    assert sizes == after["execution_count"]


def test_statistics_of_all_models_show_only_readable_ones(
    client: triton.InferenceServerClient,
) -> None:
    alice = {s["name"] for s in client.get_inference_statistics(headers={**ALICE})["model_stats"]}
    bob = {s["name"] for s in client.get_inference_statistics(headers={**BOB})["model_stats"]}
    assert alice == {"mlp", "private", "tth-classifier"}
    assert bob == {"mlp", "tth-classifier"}


def test_statistics_errors_decode(client: triton.InferenceServerClient, server: str) -> None:
    with pytest.raises(InferenceServerException) as denied:
        client.get_inference_statistics("private", headers={**BOB})
    assert denied.value.status() == "403"
    with pytest.raises(InferenceServerException) as missing:
        client.get_inference_statistics("nope", headers={**ALICE})
    assert missing.value.status() == "404"
    assert "nope" in missing.value.message()
    with pytest.raises(InferenceServerException) as version:
        client.get_inference_statistics("mlp", "7", headers={**ALICE})
    assert version.value.status() == "404"
    with pytest.raises(InferenceServerException) as anonymous:
        client.get_inference_statistics("mlp")
    assert anonymous.value.status() == "401"
    assert httpx.get(f"{server}/v2/models/mlp/config").status_code == 401


# ---- OpenAPI and the documentation --------------------------------------------------------


def test_openapi_describes_the_inference_routes(server: str) -> None:
    doc = httpx.get(f"{server}/openapi.json").json()
    infer = doc["paths"]["/v2/models/{name}/infer"]["post"]
    assert infer["summary"]
    body = infer["requestBody"]["content"]
    assert "inputs" in body["application/json"]["schema"]["properties"]
    assert "application/octet-stream" in body
    assert {"200", "400", "401", "403", "404", "413", "415", "503"} <= set(infer["responses"])
    headers = {p["name"] for p in infer["parameters"] if p["in"] == "header"}
    assert {"Inference-Header-Content-Length", "Content-Encoding"} <= headers
    assert "model_stats" in str(doc["paths"]["/v2/models/stats"]["get"]["responses"]["200"])
    assert doc["paths"]["/json"]["post"]["requestBody"]["content"]["application/json"]
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            assert operation.get("summary"), (method, path)


def _docs_snippet() -> str:
    text = DOCS.read_text()
    section = text[text.index("### Python (tritonclient)") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_the_documented_tritonclient_snippet_runs(
    server: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _docs_snippet()
    assert "localhost:8000" in code
    assert '"scores"' in code
    monkeypatch.setenv("MLAAS4HEP_TOKEN", "alice-token")
    code = code.replace("localhost:8000", server.removeprefix("http://"))
    # the repository's own documentation, not user input: running it is the test
    exec(  # noqa: S102
        compile(code, str(DOCS), "exec"),
        {},
    )
    printed = capsys.readouterr().out
    assert "nan" not in printed.lower()
    assert printed.strip()
