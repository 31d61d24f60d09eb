"""A k-folded MLP (``train.folds``) served over V2 by the real inference server, driven by
the unmodified ``tritonclient``: without a ``fold`` input every row gets the mean of the
k models (real data); with each event's fold (``Model.event_folds`` of its identifiers)
the model that did not train on it, as ``mlaas4hep apply`` scores it. The same on the raw
event columns route."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
import uproot
import yaml
from conftest_serve import ALICE, authenticate, own, run_server
from test_folds import folds_spec
from tritonclient.utils import InferenceServerException

from mlaas4hep.apply import Model
from mlaas4hep.apply.serving import load_raw_preprocessor
from mlaas4hep.artifact import PUBLISHED_FILES
from mlaas4hep.cli import main
from mlaas4hep.data.samples import write_sample
from mlaas4hep.serve.app import create_inference_app
from mlaas4hep.serve.settings import InferenceSettings

NAME, EVENTS, K = "foldmlp", 600, 2
FEATURES = ["MET_pt", "nJet"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("fold-serve")
    write_sample(tmp / "signal.root", "signal", EVENTS, seed=0)
    write_sample(tmp / "background.root", "background", EVENTS, seed=0)
    spec = folds_spec(tmp, {"kind": "mlp", "hidden": [8]}, NAME)
    spec["preprocess"]["features"]["scalars"] = FEATURES
    spec["preprocess"]["normalize"] = "standard"
    spec["train"]["folds"] = K
    (tmp / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["run", str(tmp / "spec.yaml"), "--out", str(tmp / "out")]) == 0
    return tmp / "out"


@pytest.fixture(scope="module")
def events(bundle: Path) -> dict[str, np.ndarray]:
    source = bundle.parent / "signal.root"
    with uproot.open(source) as f:
        names = ["run", "luminosityBlock", "event", *FEATURES]
        return {k: np.asarray(v) for k, v in f["Events"].arrays(names, library="np").items()}


@pytest.fixture(scope="module")
def server(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    repo = tmp_path_factory.mktemp("fold-repo")
    version = repo / NAME / "1"
    version.mkdir(parents=True)
    for name in PUBLISHED_FILES:
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


def infer(client: triton.InferenceServerClient, tensors: dict[str, np.ndarray]) -> np.ndarray:
    inputs = []
    for name, array in tensors.items():
        datatype = {np.float32: "FP32", np.int64: "INT64", np.int32: "INT32"}[array.dtype.type]
        tensor = triton.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = client.infer(NAME, inputs, headers={**ALICE})
    return np.asarray(result.as_numpy("scores"))[:, 0]


def test_metadata_names_the_optional_fold_input(client: triton.InferenceServerClient) -> None:
    meta = client.get_model_metadata(NAME, headers={**ALICE})
    assert [t["name"] for t in meta["inputs"]] == ["features"]  # fold is optional
    assert meta["parameters"]["folds"] == K
    assert meta["parameters"]["optional_inputs"][0]["name"] == "fold"


def test_v2_with_and_without_identifiers(
    client: triton.InferenceServerClient, bundle: Path, events: dict[str, np.ndarray]
) -> None:
    X = np.stack([events[f] for f in FEATURES], 1).astype(np.float32)
    oof_model, mean_model = Model.load(bundle), Model.load(bundle, folds="average")
    fold = oof_model.event_folds(events)
    assert set(np.unique(fold)) == set(range(K))
    # no identifiers: the mean of the k models (real data)
    np.testing.assert_allclose(infer(client, {"features": X}), mean_model.predict(events), atol=0)
    minus = np.full(len(X), -1, np.int64)
    np.testing.assert_allclose(infer(client, {"features": X, "fold": minus}),
                               mean_model.predict(events), atol=0)  # fmt: skip
    # each event's fold: the model that did not see it, as `mlaas4hep apply` scores it
    oof = infer(client, {"features": X, "fold": fold})
    np.testing.assert_allclose(oof, oof_model.predict(events), atol=0)
    assert not np.allclose(oof, mean_model.predict(events))
    # raw event columns: the same choice
    raw = {"MET_pt": events["MET_pt"], "nJet": events["nJet"]}
    np.testing.assert_allclose(infer(client, raw), mean_model.predict(events), atol=1e-7)
    np.testing.assert_allclose(infer(client, {**raw, "fold": fold}), oof, atol=1e-7)


def test_a_bad_fold_is_400(client: triton.InferenceServerClient) -> None:
    X = np.zeros((3, len(FEATURES)), np.float32)
    with pytest.raises(InferenceServerException, match=r"use 0\.\.1"):
        infer(client, {"features": X, "fold": np.array([0, 1, K], np.int64)})
    with pytest.raises(InferenceServerException, match="INT64"):
        infer(client, {"features": X, "fold": np.array([0, 1, 1], np.int32)})
    with pytest.raises(InferenceServerException, match="rows"):
        infer(client, {"features": X, "fold": np.array([0, 1], np.int64)})


def test_tfaas_gets_the_mean(server: str, bundle: Path, events: dict[str, np.ndarray]) -> None:
    import httpx

    row = [float(events[f][0]) for f in FEATURES]
    body = {"keys": FEATURES, "values": row, "model": NAME}
    response = httpx.post(f"http://{server}/json", json=body, headers=ALICE)
    assert response.status_code == 200, response.text
    mean = Model.load(bundle, folds="average").run_onnx(np.array([row], np.float32))
    np.testing.assert_allclose(np.ravel(response.json()), mean[:, 0], rtol=1e-6)
