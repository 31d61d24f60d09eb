"""``mlaas4hep predict`` against a running inference server, from JSON and ROOT input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import uproot
from conftest_serve import inference_server

from mlaas4hep.cli import main
from mlaas4hep.serve.samples import write_sample_model

LAYERS = (4, 8, 1)
ROWS = np.random.default_rng(3).normal(size=(10, 4))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    repo = tmp_path_factory.mktemp("repo")
    write_sample_model(repo / "tiny" / "1", LAYERS, seed=2)
    with inference_server(repo, poll_interval_s=0) as url:
        yield url


def _expected(tmp_path: Path) -> np.ndarray:
    path = write_sample_model(tmp_path / "reference", LAYERS, seed=2)
    session = ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["score"], {"features": ROWS.astype(np.float32)})[0])


def _predict(server: str, input_path: Path, out: Path, *extra: str) -> dict[str, object]:
    argv = ["predict", "tiny", "--input", str(input_path), "--url", server]
    argv += ["--token", "alice-token", "--output", str(out), "--batch-size", "3", *extra]
    assert main(argv) == 0
    result: dict[str, object] = json.loads(out.read_text())
    return result


@pytest.mark.parametrize(
    "doc",
    [
        {"keys": ["f0", "f1", "f2", "f3"], "values": ROWS.tolist()},
        {"keys": ["f3", "f2", "f1", "f0"], "values": ROWS[:, ::-1].tolist()},
        ROWS.tolist(),
        [{f"f{i}": v for i, v in enumerate(row)} for row in ROWS],
        {f"f{i}": ROWS[:, i].tolist() for i in range(4)},
    ],
    ids=["tfaas", "tfaas-permuted", "rows", "records", "columns"],
)
def test_predict_json(server: str, tmp_path: Path, doc: object) -> None:
    path = tmp_path / "in.json"
    path.write_text(json.dumps(doc))
    result = _predict(server, path, tmp_path / "out.json")
    assert result["model_version"] == "1"
    outputs = result["outputs"]
    assert isinstance(outputs, dict)
    np.testing.assert_allclose(outputs["score"], _expected(tmp_path), rtol=1e-5)


def test_predict_root(server: str, tmp_path: Path) -> None:
    path = tmp_path / "in.root"
    with uproot.recreate(path) as f:
        f["Events"] = {f"f{i}": ROWS[:, i] for i in range(4)} | {"other": np.arange(10)}
    result = _predict(server, path, tmp_path / "out.json", "--tree", "Events")
    outputs = result["outputs"]
    assert isinstance(outputs, dict)
    np.testing.assert_allclose(outputs["score"], _expected(tmp_path), rtol=1e-5)


def test_predict_errors(server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "in.json"
    path.write_text(json.dumps([{"f0": 1}]))
    argv = ["predict", "tiny", "--input", str(path), "--url", server, "--token", "alice-token"]
    assert main(argv) == 2
    assert "no feature 'f1'" in capsys.readouterr().err
    assert main([*argv[:-1], "wrong"]) == 2
    assert "refused the token" in capsys.readouterr().err
    assert main(["predict", "nope", *argv[2:]]) == 2
    assert "not loaded" in capsys.readouterr().err
