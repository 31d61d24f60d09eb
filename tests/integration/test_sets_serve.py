"""A Deep Sets model (``model.kind: deepsets``) trained by ``mlaas4hep run``, served over V2
by the real inference server and driven by the unmodified ``tritonclient``: one input
tensor per object collection (``[N, objects, fields + 1]``, the mask last) plus
``scalars`` (``[N, n_scalars]``), as docs/training.md documents; the scores equal
``mlaas4hep.Model`` (``apply``) on the same events."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
import yaml
from conftest_serve import ALICE, authenticate, own, run_server
from tritonclient.utils import InferenceServerException

from mlaas4hep import artifact
from mlaas4hep.apply import Model
from mlaas4hep.apply.serving import load_raw_preprocessor
from mlaas4hep.cli import main
from mlaas4hep.data.samples import write_sample
from mlaas4hep.preprocess.pipeline import Preprocessor
from mlaas4hep.serve.app import create_inference_app
from mlaas4hep.serve.settings import InferenceSettings
from mlaas4hep.spec import load_spec

NAME, EVENTS = "jetsets", 600


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("sets-serve")
    for kind in ("signal", "background"):
        write_sample(tmp / f"{kind}.root", kind, EVENTS, seed=0)
    spec = {
        "name": NAME,
        "data": {
            "tree": "Events",
            "datasets": [
                {"name": "signal", "files": [str(tmp / "signal.root")], "label": 1},
                {"name": "background", "files": [str(tmp / "background.root")], "label": 0},
            ],
        },
        "preprocess": {
            "features": {
                "scalars": ["MET_pt"],
                "objects": {
                    "Jet": {"fields": ["pt", "eta", "phi"], "length": 4, "mask": True},
                    "Muon": {"fields": ["pt", "eta"], "length": 2, "mask": True},
                },
            }
        },
        "model": {"kind": "deepsets", "phi": [8], "rho": [8]},
        "train": {"epochs": 2, "batch_size": 128},
    }
    (tmp / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["run", str(tmp / "spec.yaml"), "--out", str(tmp / "out")]) == 0
    return tmp / "out"


@pytest.fixture(scope="module")
def server(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    repo = tmp_path_factory.mktemp("sets-repo")
    version = repo / NAME / "1"
    version.mkdir(parents=True)
    for name in artifact.PUBLISHED_FILES:
        shutil.copy(bundle / name, version / name)
    own(repo, NAME)
    settings = InferenceSettings(repository=repo, poll_interval_s=0.2)
    app = create_inference_app(
        settings, authenticate=authenticate, raw_loader=load_raw_preprocessor
    )
    with run_server(app) as url:
        yield url.removeprefix("http://")


@pytest.fixture
def client(server: str) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url=server)
    yield c
    c.close()


def _infer(client: triton.InferenceServerClient, tensors: dict[str, np.ndarray]) -> np.ndarray:
    inputs = []
    for name, value in tensors.items():
        tensor = triton.InferInput(name, list(value.shape), "FP32")
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    result = client.infer(NAME, inputs, headers={**ALICE})
    return np.asarray(result.as_numpy(artifact.OUTPUT_TENSOR))


def test_metadata_lists_one_input_per_collection(client: triton.InferenceServerClient) -> None:
    meta = client.get_model_metadata(NAME, headers={**ALICE})
    shapes = {t["name"]: t["shape"] for t in meta["inputs"]}
    assert shapes == {"Jet": [-1, 4, 4], "Muon": [-1, 2, 3], "scalars": [-1, 1]}


def test_per_collection_tensors_score_as_apply(
    bundle: Path, client: triton.InferenceServerClient
) -> None:
    model = Model.load(bundle)
    pre = Preprocessor(load_spec(bundle / artifact.SPEC_FILE))
    pre.fit()
    X = np.concatenate([b.X for b in pre.batches("test")])[:50]
    feeds = artifact.onnx_feeds(X, model.features.features, model.features.inputs)
    assert set(feeds) == {"Jet", "Muon", "scalars"}
    served = _infer(client, feeds)
    np.testing.assert_allclose(served, model.run_onnx(X), atol=1e-6)
    assert served.shape == (50, 1)
    assert np.all((served > 0) & (served < 1))


def test_missing_collection_is_a_clear_400(
    bundle: Path, client: triton.InferenceServerClient
) -> None:
    model = Model.load(bundle)
    X = np.zeros((2, len(model.features.features)), np.float32)
    feeds = artifact.onnx_feeds(X, model.features.features, model.features.inputs)
    del feeds["Muon"]
    with pytest.raises(InferenceServerException, match="Muon"):
        _infer(client, feeds)


def test_raw_event_columns_are_refused_with_the_reason(
    client: triton.InferenceServerClient,
) -> None:
    # The raw-columns route serves single-input models only (docs/training.md, limits).
    with pytest.raises(InferenceServerException, match="cannot take raw event columns"):
        _infer(client, {"MET_pt": np.ones(3, np.float32)})
