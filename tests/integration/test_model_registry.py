"""The model registry over a real server: aliases addressed by V2 HTTP (the unmodified
``tritonclient.http`` and ``NAME@ALIAS``), V2 gRPC (``tritonclient.grpc``) and TFaaS
``/json``; promotion, rollback and the serving policy over the registry routes; owner
checks (bob reads alice's shared model but changes nothing)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from conftest_serve import ALICE, BOB, inference_server, own

from mlaas4hep.loopback import free_port
from mlaas4hep.serve.samples import write_sample_model

LAYERS = (6, 8, 1)
SEEDS = {1: 11, 2: 12}
REG = "/v2/repository/models/reg"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(HTTP URL, gRPC host:port) of one service with model ``reg`` v1, v2 (alice's,
    readable by everyone) and ``secret`` (alice's alone)."""
    repo = tmp_path_factory.mktemp("repo")
    for version, seed in SEEDS.items():
        write_sample_model(repo / "reg" / str(version), LAYERS, seed=seed)
    write_sample_model(repo / "secret" / "1", LAYERS, seed=3)
    own(repo, "reg", share="*:read")
    own(repo, "secret")
    port = free_port()
    # A long poll: whatever serves right after a promotion was switched by the call.
    with inference_server(repo, grpc_port=port, poll_interval_s=60.0) as url:
        yield url, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[int, ort.InferenceSession]:
    sessions = {}
    for version, seed in SEEDS.items():
        d = write_sample_model(tmp_path_factory.mktemp(f"ref{version}"), LAYERS, seed=seed)
        sessions[version] = ort.InferenceSession(str(d / "model.onnx"))
    return sessions


X = np.random.default_rng(0).normal(size=(3, LAYERS[0])).astype(np.float32)


def _expected(reference: dict[int, ort.InferenceSession], version: int) -> np.ndarray:
    return reference[version].run(["score"], {"features": X})[0]


def _answers(url: str, grpc_url: str) -> dict[str, tuple[str, np.ndarray]]:
    """(version that answered, scores) for ``reg@production`` over every API."""
    out = {}
    http = thttp.InferenceServerClient(url=url.removeprefix("http://"))
    try:
        features = thttp.InferInput("features", list(X.shape), "FP32")
        features.set_data_from_numpy(X, binary_data=True)
        result = http.infer("reg", [features], model_version="production", headers={**ALICE})
        version = result.get_response()["model_version"]
        out["tritonclient.http"] = (version, result.as_numpy("score"))
    finally:
        http.close()
    body = {"inputs": [{"name": "features", "shape": list(X.shape), "datatype": "FP32",
                        "data": X.ravel().tolist()}]}  # fmt: skip
    answer = httpx.post(f"{url}/v2/models/reg@production/infer", json=body, headers=ALICE)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    scores = np.asarray(data["outputs"][0]["data"], np.float32).reshape(-1, 1)
    out["http NAME@ALIAS"] = (data["model_version"], scores)
    grpc = tgrpc.InferenceServerClient(url=grpc_url)
    try:
        features = tgrpc.InferInput("features", list(X.shape), "FP32")
        features.set_data_from_numpy(X)
        headers = {"authorization": ALICE["Authorization"]}
        result = grpc.infer("reg", [features], model_version="production", headers=headers)
        out["tritonclient.grpc"] = (result.get_response().model_version, result.as_numpy("score"))
    finally:
        grpc.close()
    tfaas = httpx.post(
        f"{url}/json", json={"model": "reg@production", "values": X.tolist()}, headers=ALICE
    )
    assert tfaas.status_code == 200, tfaas.text
    out["tfaas"] = ("?", np.asarray(tfaas.json(), np.float32))
    return out


def _check_served(
    servers: tuple[str, str], reference: dict[int, ort.InferenceSession], version: int
) -> None:
    for api, (answered, scores) in _answers(*servers).items():
        assert answered in (str(version), "?"), (api, answered)
        np.testing.assert_allclose(scores, _expected(reference, version), atol=1e-6, err_msg=api)


def test_promote_and_roll_back_are_served_at_once_over_every_api(
    servers: tuple[str, str], reference: dict[int, ort.InferenceSession]
) -> None:
    url = servers[0]
    missing = httpx.get(f"{url}/v2/models/reg/versions/production", headers=ALICE)
    assert missing.status_code == 404
    assert "no alias 'production'" in missing.json()["error"]
    promoted = httpx.put(f"{url}{REG}/aliases/production", json={"version": 1}, headers=ALICE)
    assert promoted.status_code == 200, promoted.text
    assert promoted.json() == {
        "name": "reg", "alias": "production", "previous": None, "version": 1,
        "aliases": {"production": 1},
    }  # fmt: skip
    _check_served(servers, reference, 1)
    second = httpx.put(f"{url}{REG}/aliases/production", json={"version": 2}, headers=ALICE)
    assert second.json()["previous"] == 1
    _check_served(servers, reference, 2)  # no poll in between: the call switched it
    back = httpx.post(f"{url}{REG}/aliases/production/rollback", headers=ALICE)
    assert (back.json()["previous"], back.json()["version"]) == (2, 1)
    _check_served(servers, reference, 1)
    again = httpx.post(f"{url}{REG}/aliases/production/rollback", headers=ALICE)
    assert again.status_code == 422  # a SpecError, as in the job API
    assert "no earlier version to roll back to" in again.json()["error"]
    meta = httpx.get(f"{url}/v2/models/reg@production", headers=ALICE).json()
    assert meta["parameters"]["aliases"] == ["production"]


def test_registry_view_and_serving_policy(servers: tuple[str, str]) -> None:
    url = servers[0]
    httpx.put(f"{url}{REG}/aliases/staging", json={"version": 2}, headers=ALICE)
    set_all = httpx.put(f"{url}{REG}/policy", json={"policy": "aliased"}, headers=ALICE)
    assert set_all.status_code == 200, set_all.text
    assert set_all.json()["loaded"] == sorted({1, 2})  # production -> 1, staging -> 2
    httpx.delete(f"{url}{REG}/aliases/staging", headers=ALICE).raise_for_status()
    view = httpx.get(f"{url}{REG}/registry", headers=BOB).json()  # shared for reading
    assert (view["owner"], view["policy"], view["policy_set"]) == ("alice", "aliased", True)
    rows = {v["version"]: v for v in view["versions"]}
    assert rows[1]["aliases"] == ["production"]
    assert rows[1]["status"] == "serving"
    assert rows[2]["status"] == "not loaded"
    assert rows[2]["reason"] == "not loaded (policy: aliased)"
    assert rows[2]["spec_hash"] == "sample-seed-12"
    index = httpx.post(f"{url}/v2/repository/index", json={}, headers=ALICE).json()
    assert {"name": "reg", "version": "2", "state": "UNAVAILABLE",
            "reason": "not loaded (policy: aliased)"} in index  # fmt: skip
    bad = httpx.put(f"{url}{REG}/policy", json={"policy": "newest"}, headers=ALICE)
    assert bad.status_code == 422
    assert "'latest:N'" in bad.json()["error"]
    httpx.put(f"{url}{REG}/policy", json={"policy": "latest"}, headers=ALICE).raise_for_status()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/aliases/production", {"version": 2}),
        ("POST", "/aliases/production/rollback", None),
        ("DELETE", "/aliases/production", None),
        ("PUT", "/policy", {"policy": "all"}),
    ],
)
def test_bob_cannot_change_alices_model(
    servers: tuple[str, str], method: str, path: str, body: dict[str, object] | None
) -> None:
    url = servers[0]
    answer = httpx.request(method, f"{url}{REG}{path}", json=body, headers=BOB)
    assert answer.status_code == 403, answer.text
    assert "not shared with you for modify" in answer.json()["error"]
    secret = httpx.get(f"{url}/v2/repository/models/secret/registry", headers=BOB)
    assert secret.status_code == 403


def test_bad_alias_names_and_versions(servers: tuple[str, str]) -> None:
    url = servers[0]
    bad = httpx.put(f"{url}{REG}/aliases/Prod", json={"version": 1}, headers=ALICE)
    assert bad.status_code == 422
    assert "invalid alias 'Prod'" in bad.json()["error"]
    gone = httpx.put(f"{url}{REG}/aliases/canary", json={"version": 9}, headers=ALICE)
    assert gone.status_code == 404
    assert "no version 9" in gone.json()["error"]
    both = httpx.get(f"{url}/v2/models/reg@production/versions/2", headers=ALICE)
    assert both.status_code == 422
    assert "give one" in both.json()["error"]
