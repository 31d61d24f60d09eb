"""The model card's curl command, run by bash as written, against a real inference server.

A model trained by ``mlaas4hep run`` is put into a repository served by uvicorn on
127.0.0.1; the curl line of its README.md is run with ``$TOKEN`` in the environment (only
the address is changed to the test server's) and must return the scores ONNX Runtime
computes for the same input.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from conftest_serve import inference_server, own
from test_apply import spec_dict, train

from mlaas4hep.artifact import PUBLISHED_FILES
from mlaas4hep.data.samples import write_sample_set
from mlaas4hep.train.bundle import SERVICE_URL

NAME = "card-model.v1"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    samples = tmp_path_factory.mktemp("card-samples")
    files = write_sample_set(samples, 1500, seed=4)
    datasets = [
        {"name": "ttH", "files": [str(files["signal"])], "label": 1},
        {"name": "QCD", "files": [str(files["background"])], "label": 0},
    ]
    spec = spec_dict(samples, datasets, {"kind": "sgd"})
    return train(tmp_path_factory.mktemp("card-run"), NAME, spec)


def curl_command(card: str) -> str:
    found = re.search(r"```bash\n(.*?)```", card, re.S)
    assert found is not None, card
    return found.group(1).replace("\\\n", " ").strip()


@pytest.mark.skipif(shutil.which("curl") is None, reason="the card's command needs curl")
def test_the_cards_curl_command_queries_the_served_model(bundle: Path, tmp_path: Path) -> None:
    version = tmp_path / "repo" / NAME / "1"
    version.mkdir(parents=True)
    for name in PUBLISHED_FILES:
        shutil.copy(bundle / name, version / name)
    own(tmp_path / "repo", NAME)
    command = curl_command((bundle / "README.md").read_text())
    assert command.count(SERVICE_URL) == 1
    with inference_server(tmp_path / "repo") as url:
        done = subprocess.run(
            ["bash", "-c", command.replace(SERVICE_URL, url) + " --silent --show-error"],
            env={"TOKEN": "alice-token", "PATH": "/usr/bin:/bin"},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["model_name"] == NAME, reply
    (scores,) = reply["outputs"]
    n = len(json.loads((bundle / "features.json").read_text())["features"])
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    expected = session.run(["scores"], {"features": np.zeros((1, n), np.float32)})[0]
    assert scores["name"] == "scores"
    assert scores["shape"] == [1, 1]
    np.testing.assert_allclose(scores["data"], expected.ravel(), rtol=1e-6)
