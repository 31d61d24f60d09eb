"""The legacy TFaaS API with plain HTTP requests, as curl would send them."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from conftest_serve import ALICE, BOB, inference_server, own

from mlaas4hep.auth.principal import Principal
from mlaas4hep.serve.samples import write_sample_model

LAYERS = (4, 8, 1)
FEATURES = ["f0", "f1", "f2", "f3"]


def _authorize(principal: Principal, action: str, model: str) -> bool:
    return principal.subject == "alice" or action in ("infer", "read")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    write_sample_model(tmp_path / "repo" / "tiny" / "1", LAYERS, seed=3)
    own(tmp_path / "repo", "tiny", share="*:read")  # alice's; everyone may use it
    return tmp_path / "repo"


@pytest.fixture
def server(repo: Path) -> Iterator[str]:
    with inference_server(repo, authorize=_authorize, poll_interval_s=0) as url:
        yield url


def _reference(repo: Path, version: int, x: np.ndarray) -> np.ndarray:
    path = repo / "tiny" / str(version) / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["score"], {"features": x})[0])


def test_json_one_row(server: str, repo: Path) -> None:
    values = [0.5, -1.0, 2.0, 0.25]
    body = {"keys": FEATURES, "values": values, "model": "tiny"}
    response = httpx.post(f"{server}/json", json=body, headers=ALICE)
    assert response.status_code == 200, response.text
    expected = _reference(repo, 1, np.array([values], np.float32))[0]
    np.testing.assert_allclose(response.json(), expected, rtol=1e-5)
    assert len(response.json()) == 1


def test_json_many_rows_and_key_order(server: str, repo: Path) -> None:
    rows = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    body = {"keys": FEATURES, "values": rows.tolist(), "model": "tiny"}
    plain = httpx.post(f"{server}/json", json=body, headers=ALICE).json()
    np.testing.assert_allclose(plain, _reference(repo, 1, rows), rtol=1e-5)
    # The same rows with the columns (and keys) permuted give the same answer.
    order = [2, 0, 3, 1]
    body = {
        "keys": [FEATURES[i] for i in order],
        "values": rows[:, order].tolist(),
        "model": "tiny",
    }
    permuted = httpx.post(f"{server}/json", json=body, headers=ALICE).json()
    np.testing.assert_allclose(permuted, plain, rtol=1e-6)


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"keys": ["a", "b", "c", "d"], "values": [1, 2, 3, 4], "model": "tiny"}, 400, "unknown"),
        ({"values": [1, 2, 3], "model": "tiny"}, 400, "shape [-1, 4]"),
        ({"values": ["x", 2, 3, 4], "model": "tiny"}, 400, "must be numbers"),
        ({"values": [1, 2, 3, 4], "model": "tinny"}, 404, "closest: 'tiny'"),
        ({"values": [1, 2, 3, 4]}, 400, '"model"'),
        ({"model": "tiny"}, 400, '"values"'),
    ],
)
def test_json_errors(server: str, body: dict[str, object], status: int, fragment: str) -> None:
    response = httpx.post(f"{server}/json", json=body, headers=ALICE)
    assert response.status_code == status
    assert fragment in response.json()["error"]


def test_models_lists_and_null_when_empty(server: str) -> None:
    models = httpx.get(f"{server}/models", headers=ALICE).json()
    assert [m["name"] for m in models] == ["tiny"]
    assert models[0]["inputNode"] == "features"
    assert models[0]["outputNode"] == "score"
    assert models[0]["labels"] == ["signal"]
    # curl -X DELETE -F model=tiny: a form body on DELETE, as the old clients send it.
    response = httpx.request(
        "DELETE", f"{server}/delete", files={"model": (None, "tiny")}, headers=ALICE
    )
    assert response.status_code == 200, response.text
    assert httpx.get(f"{server}/models", headers=ALICE).json() is None


def test_upload_multipart_serves_new_version(server: str, tmp_path: Path) -> None:
    src = write_sample_model(tmp_path / "new", LAYERS, seed=9)
    files = {
        "model": ("model.onnx", (src / "model.onnx").read_bytes()),
        "metadata": ("metadata.json", (src / "metadata.json").read_bytes()),
    }
    response = httpx.post(f"{server}/upload", data={"name": "tiny"}, files=files, headers=ALICE)
    assert response.status_code == 201, response.text
    assert response.json() == {"name": "tiny", "version": "2"}
    meta = httpx.get(f"{server}/v2/models/tiny", headers=ALICE).json()
    assert meta["versions"] == ["2"]


def _tarball(members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
    return buffer.getvalue()


def test_upload_gzip_tarball(server: str, tmp_path: Path) -> None:
    src = write_sample_model(tmp_path / "fresh", LAYERS, seed=4)
    body = _tarball(
        {
            "fresh/model.onnx": (src / "model.onnx").read_bytes(),
            "fresh/metadata.json": (src / "metadata.json").read_bytes(),
        }
    )
    headers = {**ALICE, "Content-Type": "application/octet-stream", "Content-Encoding": "gzip"}
    response = httpx.post(f"{server}/upload", content=body, headers=headers)
    assert response.status_code == 201, response.text
    assert response.json() == {"name": "fresh", "version": "1"}
    result = httpx.post(
        f"{server}/json", json={"values": [0, 0, 0, 0], "model": "fresh"}, headers=ALICE
    )
    assert result.status_code == 200


@pytest.mark.parametrize(
    ("members", "symlink", "fragment"),
    [
        ({"../evil/model.onnx": b"x"}, None, "'..'"),
        ({"/abs/model.onnx": b"x"}, None, "absolute"),
        ({"m/model.onnx": b"x"}, "m/link", "not a regular file"),
        ({"m/model.onnx": b"not onnx"}, None, "not a readable ONNX model"),
        ({"m/readme.txt": b"hi"}, None, "no model.onnx"),
    ],
)
def test_upload_rejects_unsafe_or_broken_archives(
    server: str, repo: Path, members: dict[str, bytes], symlink: str | None, fragment: str
) -> None:
    body = _tarball(members, symlink)
    response = httpx.post(f"{server}/upload?name=bad", content=body, headers=ALICE)
    assert response.status_code == 422  # http_status.py: the same status as the job API
    assert fragment in response.json()["error"]
    assert "mlaas4hep-upload-" not in response.json()["error"]  # no server temp paths
    assert not (repo / "bad").exists()
    assert not (repo.parent / "evil").exists()


def test_upload_and_delete_need_permission(server: str, tmp_path: Path) -> None:
    src = write_sample_model(tmp_path / "x", LAYERS)
    files = {"model": ("model.onnx", (src / "model.onnx").read_bytes())}
    response = httpx.post(f"{server}/upload", data={"name": "tiny"}, files=files, headers=BOB)
    assert response.status_code == 403
    response = httpx.request("DELETE", f"{server}/delete?model=tiny", headers=BOB)
    assert response.status_code == 403
    ok = httpx.post(f"{server}/json", json={"values": [1, 2, 3, 4], "model": "tiny"}, headers=BOB)
    assert ok.status_code == 200


def test_upload_size_cap(repo: Path) -> None:
    with inference_server(repo, max_upload_bytes=1000, poll_interval_s=0) as url:
        response = httpx.post(f"{url}/upload?name=big", content=b"x" * 5000, headers=ALICE)
        assert response.status_code == 413
        assert "over the limit" in response.json()["error"]
